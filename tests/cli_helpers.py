"""Shared helpers of the CLI and recipe tests."""

from __future__ import annotations

from click.testing import CliRunner

from recshrink.cli import main


def invoke(*args):
    """Run the ``recshrink`` CLI in-process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, *needles: str) -> str:
    """Exit 2, one printed line (stdout and stderr together) ``error: ...``, no traceback."""
    out = result.output
    assert result.exit_code == 2, out
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("error: "), out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]

"""Shared helpers of the CLI and recipe tests."""

from __future__ import annotations

from pathlib import Path

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


TRAIN_ARGS = ["--model", "gru", "--arg", "dim=8", "--epochs", "1", "--negatives", "8",
              "--no-progress"]  # fmt: skip


def tiny_sequences(users: int = 30, items: int = 20) -> dict[str, list[str]]:
    """Deterministic S3-Rec data: raw user ids 1..users, raw item ids 101..100+items."""
    out = {}
    for u in range(1, users + 1):
        n = 4 + u % 4
        out[str(u)] = [str(101 + (u * 7 + k * 3) % items) for k in range(n)]
    return out


def write_s3rec(path: Path, seqs: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{u} {' '.join(s)}\n" for u, s in seqs.items()))
    return path

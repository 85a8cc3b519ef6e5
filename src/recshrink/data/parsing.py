"""Helpers shared by the readers in :mod:`recshrink.data.loaders`.

Reading a UTF-8 file, numbering its lines, parsing integer ids, assigning dense ids in order of
first appearance, locating header columns, indexing categories and sorting by time: every
problem raises :class:`~recshrink.errors.DataError` with the file and, where one line is at fault,
its 1-based line number.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recshrink.errors import DataError

PathLike = str | os.PathLike


def read_text(path: Path) -> str:
    """Read a whole UTF-8 text file (a leading BOM is dropped).

    Args:
        path: File to read.

    Returns:
        The decoded text.

    Raises:
        DataError: The file is missing, is a directory, cannot be read or is not UTF-8.
    """
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            path, f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x})", line=line
        ) from exc


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every line, 1-based, with the line ending removed.

    Only ``\\n`` (optionally preceded by ``\\r``) ends a line, so the numbers match what an
    editor shows even when a line contains other Unicode line-break characters.
    """
    for number, line in enumerate(text.split("\n"), 1):
        yield number, line.rstrip("\r")


def parse_int_id(token: str, what: str, path: Path, line: int) -> int:
    """Parse a non-negative decimal integer id.

    Args:
        token: The raw text.
        what: What the token is (for the message), e.g. ``"item id"``.
        path: File being read.
        line: 1-based line number.

    Returns:
        The integer value.

    Raises:
        DataError: The token is not a plain decimal integer, or it is negative.
    """
    if token.isascii() and token.isdigit():
        return int(token)
    if token[:1] == "-" and token[1:].isascii() and token[1:].isdigit():
        raise DataError(path, f"{what} {token!r} is negative", line=line)
    raise DataError(path, f"{what} {token!r} is not an integer", line=line)


def default_name(path: Path, name: str | None) -> str:
    return name if name is not None else path.stem


class IdMap:
    """Assigns dense ids to raw keys in order of first appearance."""

    def __init__(self, start: int) -> None:
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self._start = start

    def get(self, key: str) -> int:
        idx = self.index.get(key)
        if idx is None:
            idx = len(self.keys) + self._start
            self.index[key] = idx
            self.keys.append(key)
        return idx


def require_data(path: Path, sequences: list) -> None:
    if not sequences:
        raise DataError(path, "file contains no interactions")


def index_categories(
    per_item: list[set[str]],
) -> tuple[list[frozenset[int]], list[str]]:
    """Map category strings to ints ``0..C-1`` in sorted order.

    Args:
        per_item: Category strings per internal item id (index 0 is padding).

    Returns:
        ``(item_attrs, attr_names)`` with ``attr_names[c]`` the string of category ``c``.
    """
    names = sorted(set().union(*per_item)) if per_item else []
    code = {n: i for i, n in enumerate(names)}
    attrs = [frozenset(code[c] for c in cats) for cats in per_item]
    attrs[0] = frozenset()
    return attrs, names


def sort_by_time(
    items: list[list[int]], times: list[list[float]] | list[list[str]] | None
) -> list[np.ndarray]:
    """Turn per-user item lists into int64 arrays, stably sorted by time when given."""
    out = []
    for u, seq in enumerate(items):
        arr = np.asarray(seq, dtype=np.int64)
        if times is not None and len(arr) > 1:
            key = times[u]
            order = sorted(range(len(key)), key=key.__getitem__)  # stable
            arr = arr[np.asarray(order, dtype=np.int64)]
        out.append(arr)
    return out


def find_column(
    cols: list[str], wanted: str, path: Path, line: int | None, what: str
) -> int:
    try:
        return cols.index(wanted)
    except ValueError:
        found = ", ".join(repr(c) for c in cols) or "none"
        raise DataError(
            path, f"header has no {what} column {wanted!r} (columns found: {found})", line=line
        ) from None


def require_token(value: str, what: str, path: Path, line: int) -> str:
    token = value.strip()
    if not token:
        raise DataError(path, f"empty {what}", line=line)
    return token

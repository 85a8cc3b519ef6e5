"""Reader for RecBole atomic files (``.inter`` plus an optional ``.item``).

The conventions shared by every loader are in :mod:`recshrink.data.loaders`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from recshrink.data.dataset import InteractionData
from recshrink.data.parsing import (
    IdMap, PathLike, default_name, find_column, index_categories, numbered_lines, read_text,
    require_data, require_token, sort_by_time,
)  # fmt: skip
from recshrink.errors import DataError

_CATEGORY_COLUMNS = ("class", "genre", "categories", "category")


def _split_header(line: str, sep: str) -> list[tuple[str, str]]:
    """Split a RecBole header into ``(name, type)`` pairs; a missing type is ``""``."""
    cols = []
    for field in line.split(sep):
        field = field.strip()
        name, _, ftype = field.partition(":")
        cols.append((name.strip(), ftype.strip()))
    return cols


def _recbole_rows(
    path: Path, text: str
) -> tuple[list[tuple[str, str]], int, Iterator[tuple[int, list[str]]]]:
    """Split a RecBole atomic file into header columns and data rows.

    Returns:
        ``(columns, header_line, rows)`` where ``rows`` yields ``(line_number, fields)``.

    Raises:
        DataError: The file has no header (checked eagerly) or, while iterating, a row has the
            wrong number of fields.
    """
    lines = numbered_lines(text)
    for header_line, line in lines:
        if line.strip():
            break
    else:
        raise DataError(path, "file is empty (no header line)")
    columns = _split_header(line, "\t")

    def rows() -> Iterator[tuple[int, list[str]]]:
        for lineno, row in lines:
            if not row.strip():
                continue
            fields = row.split("\t")
            if len(fields) != len(columns):
                raise DataError(
                    path,
                    f"expected {len(columns)} tab-separated fields, got {len(fields)}",
                    line=lineno,
                )
            yield lineno, fields

    return columns, header_line, rows()


def _parse_time(value: str, path: Path, line: int) -> float:
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if math.isnan(t):
        raise DataError(path, f"timestamp {value.strip()!r} is not a number", line=line)
    return t


def _recbole_categories(path: Path, item_index: dict[str, int]) -> list[set[str]] | None:
    """Read category strings per internal item id from a RecBole ``.item`` file.

    Args:
        path: The ``.item`` file.
        item_index: Raw item token -> internal id for the items in the interactions.

    Returns:
        Category sets indexed by internal id (index 0 empty), or None when the file has no
        usable ``token_seq`` category column.
    """
    text = read_text(path)
    columns, header_line, rows = _recbole_rows(path, text)
    names = [c[0] for c in columns]
    item_col = find_column(names, "item_id", path, header_line, "item")
    seq_cols = [i for i, (_, t) in enumerate(columns) if t == "token_seq"]
    cat_col = next((i for i in seq_cols if names[i].lower() in _CATEGORY_COLUMNS), None)
    if cat_col is None:
        cat_col = next((i for i in seq_cols if "title" not in names[i].lower()), None)

    per_item: list[set[str]] = [set() for _ in range(len(item_index) + 1)]
    for lineno, fields in rows:  # rows are validated even without a category column
        if cat_col is None:
            continue
        raw = require_token(fields[item_col], "item id", path, lineno)
        iid = item_index.get(raw)
        if iid is not None:
            per_item[iid].update(fields[cat_col].split())
    return None if cat_col is None else per_item


def load_recbole(
    inter_path: PathLike, item_path: PathLike | None = None, name: str | None = None
) -> InteractionData:
    """Load RecBole atomic files (``.inter`` plus an optional ``.item``).

    The ``.inter`` file is tab-separated with a typed header such as
    ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``. Ids are kept as
    string tokens. With a ``timestamp`` column each user's interactions are sorted by time
    (stable: ties keep file order); without one, file order is kept.

    Categories come from the ``.item`` file: the first ``token_seq`` column named ``class``,
    ``genre``, ``categories`` or ``category``, else the first ``token_seq`` column whose name
    does not contain ``title``. Its space-separated values are mapped to ints ``0..C-1`` in
    sorted order over the items present in the interactions; ``attr_names`` holds the strings.
    Items missing from the ``.item`` file get no categories.

    Args:
        inter_path: The ``.inter`` file.
        item_path: The ``.item`` file; when None, a sibling with the same stem and the
            ``.item`` suffix is used if it exists.
        name: Data set name; defaults to the stem of the ``.inter`` file.

    Returns:
        The loaded data; ``item_attrs`` is None when there is no ``.item`` file or it has no
        category column.

    Raises:
        DataError: Missing/unreadable file, a header without ``user_id``/``item_id``, a row with
            the wrong number of fields, an empty id, a non-numeric timestamp, or no data.
    """
    path = Path(inter_path)
    text = read_text(path)
    columns, header_line, rows = _recbole_rows(path, text)
    names = [c[0] for c in columns]
    user_col = find_column(names, "user_id", path, header_line, "user")
    item_col = find_column(names, "item_id", path, header_line, "item")
    time_col = names.index("timestamp") if "timestamp" in names else None

    users = IdMap(start=0)
    items = IdMap(start=1)
    per_user: list[list[int]] = []
    per_time: list[list[float]] = []
    for lineno, fields in rows:
        u = users.get(require_token(fields[user_col], "user id", path, lineno))
        i = items.get(require_token(fields[item_col], "item id", path, lineno))
        if u == len(per_user):
            per_user.append([])
            per_time.append([])
        per_user[u].append(i)
        if time_col is not None:
            per_time[u].append(_parse_time(fields[time_col], path, lineno))
    require_data(path, per_user)

    if item_path is None:
        sibling = path.with_suffix(".item")
        item_path = sibling if sibling.is_file() else None
    item_attrs = attr_names = None
    if item_path is not None:
        per_item = _recbole_categories(Path(item_path), items.index)
        if per_item is not None:
            item_attrs, attr_names = index_categories(per_item)

    return InteractionData(
        name=default_name(path, name),
        sequences=sort_by_time(per_user, per_time if time_col is not None else None),
        user_ids=users.keys,
        item_ids=items.keys,
        item_attrs=item_attrs,
        source=str(path),
        attr_names=attr_names,
    )


__all__ = ["load_recbole"]

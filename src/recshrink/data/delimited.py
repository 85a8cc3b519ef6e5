"""Reader for delimited (CSV-like) files with a header row.

The conventions shared by every loader are in :mod:`recshrink.data.loaders`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path

from recshrink.data.dataset import InteractionData
from recshrink.data.parsing import (
    IdMap, PathLike, default_name, find_column, index_categories, read_text, require_data,
    require_token, sort_by_time,
)  # fmt: skip
from recshrink.errors import DataError, RecshrinkError

_CSV_CATEGORY_SPLIT = re.compile(r"[|\s]+")


def load_csv(
    path: PathLike,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = None,
    category_col: str | None = None,
    sep: str = ",",
    name: str | None = None,
) -> InteractionData:
    """Load a delimited file with a header row.

    Ids are kept as string tokens (surrounding whitespace removed). With ``time_col`` each
    user's interactions are stably sorted by time: numerically when every value parses as a
    float (NaN excluded), otherwise by string order. With ``category_col`` an item's
    categories are the union of the values seen for it, each cell split on ``|`` or whitespace,
    mapped to ints ``0..C-1`` in sorted order (strings in ``attr_names``).

    Args:
        path: The file.
        user_col: Header name of the user column.
        item_col: Header name of the item column.
        time_col: Optional header name of the time column.
        category_col: Optional header name of the category column.
        sep: Field delimiter (one character).
        name: Data set name; defaults to the file stem.

    Returns:
        The loaded data.

    Raises:
        DataError: Missing/unreadable file, malformed CSV, a header without a requested column,
            a row with the wrong number of fields, an empty id, or no data.
    """
    path = Path(path)
    text = read_text(path)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    except TypeError as exc:  # e.g. a multi-character delimiter
        raise RecshrinkError(f"invalid CSV separator {sep!r}: {exc}") from exc

    def records() -> Iterator[tuple[int, list[str]]]:
        end = 0
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(path, f"malformed CSV: {exc}", line=reader.line_num) from exc
            end = reader.line_num
            if row and any(cell.strip() for cell in row):
                yield start, row

    recs = records()
    first = next(recs, None)
    if first is None:
        raise DataError(path, "file is empty (no header row)")
    header_line, header = first
    header = [h.strip() for h in header]

    def col(wanted: str, what: str) -> int:
        return find_column(header, wanted, path, header_line, what)

    u_idx = col(user_col, "user")
    i_idx = col(item_col, "item")
    t_idx = col(time_col, "time") if time_col is not None else None
    c_idx = col(category_col, "category") if category_col is not None else None

    users = IdMap(start=0)
    items = IdMap(start=1)
    per_user: list[list[int]] = []
    per_time: list[list[str]] = []
    per_item: list[set[str]] = [set()]
    for lineno, row in recs:
        if len(row) != len(header):
            raise DataError(
                path, f"expected {len(header)} fields, got {len(row)}", line=lineno
            )
        u = users.get(require_token(row[u_idx], "user id", path, lineno))
        i = items.get(require_token(row[i_idx], "item id", path, lineno))
        if u == len(per_user):
            per_user.append([])
            per_time.append([])
        per_user[u].append(i)
        if t_idx is not None:
            per_time[u].append(row[t_idx].strip())
        if c_idx is not None:
            if i == len(per_item):
                per_item.append(set())
            per_item[i].update(c for c in _CSV_CATEGORY_SPLIT.split(row[c_idx]) if c)
    require_data(path, per_user)

    times: list[list[float]] | list[list[str]] | None = None
    if t_idx is not None:
        times = per_time
        try:
            numeric = [[float(v) for v in ts] for ts in per_time]
        except ValueError:
            numeric = None
        if numeric is not None and not any(math.isnan(v) for ts in numeric for v in ts):
            times = numeric

    item_attrs = attr_names = None
    if c_idx is not None:
        item_attrs, attr_names = index_categories(per_item)

    return InteractionData(
        name=default_name(path, name),
        sequences=sort_by_time(per_user, times),
        user_ids=users.keys,
        item_ids=items.keys,
        item_attrs=item_attrs,
        source=str(path),
        attr_names=attr_names,
    )


__all__ = ["load_csv"]

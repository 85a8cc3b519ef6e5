"""Readers for the sequential-recommendation file formats recshrink accepts.

Every loader returns an :class:`~recshrink.data.dataset.InteractionData` with the same
conventions:

* internal item ids run from 1 to N in order of first appearance while reading the file
  (0 is padding); ``item_ids[i - 1]`` is the raw id string of internal id ``i``;
* ``user_ids`` holds the raw user ids in order of first appearance;
* ``sequences`` holds one ``np.int64`` array per user, oldest interaction first;
* ``item_attrs``, when present, has length N + 1 with ``item_attrs[0] == frozenset()``;
* ``source`` is ``str(path)`` and ``name`` defaults to the file stem.

Any problem with the input raises :class:`~recshrink.errors.DataError` carrying the file and,
where one line is at fault, its 1-based line number. Blank lines are skipped everywhere.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from recshrink.data.dataset import InteractionData
from recshrink.errors import DataError, RecshrinkError

PathLike = str | os.PathLike

_CATEGORY_COLUMNS = ("class", "genre", "categories", "category")
_CSV_CATEGORY_SPLIT = re.compile(r"[|\s]+")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
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


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` for every line, 1-based, with the line ending removed.

    Only ``\\n`` (optionally preceded by ``\\r``) ends a line, so the numbers match what an
    editor shows even when a line contains other Unicode line-break characters.
    """
    for number, line in enumerate(text.split("\n"), 1):
        yield number, line.rstrip("\r")


def _parse_int_id(token: str, what: str, path: Path, line: int) -> int:
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


def _default_name(path: Path, name: str | None) -> str:
    return name if name is not None else path.stem


class _IdMap:
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


def _require_data(path: Path, sequences: list) -> None:
    if not sequences:
        raise DataError(path, "file contains no interactions")


def _index_categories(
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


def _sort_by_time(
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


def _split_header(line: str, sep: str) -> list[tuple[str, str]]:
    """Split a RecBole header into ``(name, type)`` pairs; a missing type is ``""``."""
    cols = []
    for field in line.split(sep):
        field = field.strip()
        name, _, ftype = field.partition(":")
        cols.append((name.strip(), ftype.strip()))
    return cols


def _find_column(
    cols: list[str], wanted: str, path: Path, line: int | None, what: str
) -> int:
    try:
        return cols.index(wanted)
    except ValueError:
        found = ", ".join(repr(c) for c in cols) or "none"
        raise DataError(
            path, f"header has no {what} column {wanted!r} (columns found: {found})", line=line
        ) from None


# --------------------------------------------------------------------------------------------
# S3-Rec and SASRec pairs
# --------------------------------------------------------------------------------------------


def _load_attribute_json(path: Path) -> dict[str, frozenset[int]]:
    """Read an S3-Rec ``item2attributes`` JSON file.

    Args:
        path: JSON file mapping raw item id strings to lists of attribute ids.

    Returns:
        Attribute sets keyed by canonical item id string (``str(int(key))``).

    Raises:
        DataError: The JSON does not parse, is not an object, has a non-integer key, or a value
            that is not a list of non-negative integers.
    """
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(
            path, f"expected a JSON object of item id -> attribute list, got {type(obj).__name__}"
        )
    out: dict[str, frozenset[int]] = {}
    for key, value in obj.items():
        k = key.strip()
        if not (k.isascii() and k.isdigit()):
            raise DataError(path, f"attribute key {key!r} is not an integer item id")
        if not isinstance(value, list):
            raise DataError(
                path,
                f"attributes of item {key!r} must be a list of integers, "
                f"got {type(value).__name__}",
            )
        for a in value:
            if isinstance(a, bool) or not isinstance(a, int):
                raise DataError(
                    path, f"attribute {a!r} of item {key!r} is not an integer"
                )
            if a < 0:
                raise DataError(path, f"attribute {a!r} of item {key!r} is negative")
        canon = str(int(k))
        out[canon] = out.get(canon, frozenset()) | frozenset(value)
    return out


def load_s3rec(
    path: PathLike, attributes: PathLike | None = None, name: str | None = None
) -> InteractionData:
    """Load the S3-Rec format: one user per line, ``user item item ...`` in time order.

    Ids must be non-negative decimal integers; they are stored as canonical strings
    (``"007"`` becomes ``"7"``). Each user may appear on one line only.

    Args:
        path: The interaction file (e.g. ``Beauty.txt``).
        attributes: Optional JSON file ``{"item id": [attribute ids]}`` (e.g.
            ``Beauty_item2attributes.json``); items it lacks get no attributes.
        name: Data set name; defaults to the file stem.

    Returns:
        The loaded data; ``item_attrs`` is set only when ``attributes`` is given.

    Raises:
        DataError: Missing/unreadable file, a non-integer or negative id, a user with no items,
            a user on two lines, an empty file, or a bad attribute file.
    """
    path = Path(path)
    text = _read_text(path)
    items = _IdMap(start=1)
    tok2id: dict[str, int] = {}  # raw token -> internal id (fast path for repeated tokens)
    user_line: dict[str, int] = {}
    user_ids: list[str] = []
    sequences: list[np.ndarray] = []

    for lineno, line in _lines(text):
        parts = line.split()
        if not parts:
            continue
        user = str(_parse_int_id(parts[0], "user id", path, lineno))
        if len(parts) == 1:
            raise DataError(path, f"user {user!r} has no items", line=lineno)
        if user in user_line:
            raise DataError(
                path, f"user {user!r} appears again (first on line {user_line[user]})",
                line=lineno,
            )
        user_line[user] = lineno
        get = tok2id.get
        seq = [get(t) for t in parts[1:]]
        if None in seq:
            for j, tok in enumerate(parts[1:]):
                if seq[j] is None:
                    iid = items.get(str(_parse_int_id(tok, "item id", path, lineno)))
                    tok2id[tok] = iid
                    seq[j] = iid
        user_ids.append(user)
        sequences.append(np.array(seq, dtype=np.int64))

    _require_data(path, sequences)
    item_attrs = None
    if attributes is not None:
        table = _load_attribute_json(Path(attributes))
        empty: frozenset[int] = frozenset()
        item_attrs = [empty] + [table.get(raw, empty) for raw in items.keys]
    return InteractionData(
        name=_default_name(path, name),
        sequences=sequences,
        user_ids=user_ids,
        item_ids=items.keys,
        item_attrs=item_attrs,
        source=str(path),
    )


def load_pairs(path: PathLike, name: str | None = None) -> InteractionData:
    """Load the original SASRec format: ``user item`` per line, in time order.

    Lines of different users may be interleaved; each user's items keep file order. Ids must
    be non-negative decimal integers and are stored as canonical strings.

    Args:
        path: The interaction file.
        name: Data set name; defaults to the file stem.

    Returns:
        The loaded data (no attributes).

    Raises:
        DataError: Missing/unreadable file, a line without exactly two fields, a non-integer or
            negative id, or an empty file.
    """
    path = Path(path)
    text = _read_text(path)
    items = _IdMap(start=1)
    users = _IdMap(start=0)
    tok2id: dict[str, int] = {}
    tok2user: dict[str, int] = {}
    per_user: list[list[int]] = []

    for lineno, line in _lines(text):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(
                path, f"expected 2 fields (user item), got {len(parts)}", line=lineno
            )
        utok, itok = parts
        u = tok2user.get(utok)
        if u is None:
            u = users.get(str(_parse_int_id(utok, "user id", path, lineno)))
            tok2user[utok] = u
            if u == len(per_user):
                per_user.append([])
        i = tok2id.get(itok)
        if i is None:
            i = items.get(str(_parse_int_id(itok, "item id", path, lineno)))
            tok2id[itok] = i
        per_user[u].append(i)

    _require_data(path, per_user)
    return InteractionData(
        name=_default_name(path, name),
        sequences=[np.array(s, dtype=np.int64) for s in per_user],
        user_ids=users.keys,
        item_ids=items.keys,
        source=str(path),
    )


# --------------------------------------------------------------------------------------------
# RecBole atomic files
# --------------------------------------------------------------------------------------------


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
    lines = _lines(text)
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


def _require_token(value: str, what: str, path: Path, line: int) -> str:
    token = value.strip()
    if not token:
        raise DataError(path, f"empty {what}", line=line)
    return token


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
    text = _read_text(path)
    columns, header_line, rows = _recbole_rows(path, text)
    names = [c[0] for c in columns]
    item_col = _find_column(names, "item_id", path, header_line, "item")
    seq_cols = [i for i, (_, t) in enumerate(columns) if t == "token_seq"]
    cat_col = next((i for i in seq_cols if names[i].lower() in _CATEGORY_COLUMNS), None)
    if cat_col is None:
        cat_col = next((i for i in seq_cols if "title" not in names[i].lower()), None)

    per_item: list[set[str]] = [set() for _ in range(len(item_index) + 1)]
    for lineno, fields in rows:  # rows are validated even without a category column
        if cat_col is None:
            continue
        raw = _require_token(fields[item_col], "item id", path, lineno)
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
    text = _read_text(path)
    columns, header_line, rows = _recbole_rows(path, text)
    names = [c[0] for c in columns]
    user_col = _find_column(names, "user_id", path, header_line, "user")
    item_col = _find_column(names, "item_id", path, header_line, "item")
    time_col = names.index("timestamp") if "timestamp" in names else None

    users = _IdMap(start=0)
    items = _IdMap(start=1)
    per_user: list[list[int]] = []
    per_time: list[list[float]] = []
    for lineno, fields in rows:
        u = users.get(_require_token(fields[user_col], "user id", path, lineno))
        i = items.get(_require_token(fields[item_col], "item id", path, lineno))
        if u == len(per_user):
            per_user.append([])
            per_time.append([])
        per_user[u].append(i)
        if time_col is not None:
            per_time[u].append(_parse_time(fields[time_col], path, lineno))
    _require_data(path, per_user)

    if item_path is None:
        sibling = path.with_suffix(".item")
        item_path = sibling if sibling.is_file() else None
    item_attrs = attr_names = None
    if item_path is not None:
        per_item = _recbole_categories(Path(item_path), items.index)
        if per_item is not None:
            item_attrs, attr_names = _index_categories(per_item)

    return InteractionData(
        name=_default_name(path, name),
        sequences=_sort_by_time(per_user, per_time if time_col is not None else None),
        user_ids=users.keys,
        item_ids=items.keys,
        item_attrs=item_attrs,
        source=str(path),
        attr_names=attr_names,
    )


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


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
    text = _read_text(path)
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
        return _find_column(header, wanted, path, header_line, what)

    u_idx = col(user_col, "user")
    i_idx = col(item_col, "item")
    t_idx = col(time_col, "time") if time_col is not None else None
    c_idx = col(category_col, "category") if category_col is not None else None

    users = _IdMap(start=0)
    items = _IdMap(start=1)
    per_user: list[list[int]] = []
    per_time: list[list[str]] = []
    per_item: list[set[str]] = [set()]
    for lineno, row in recs:
        if len(row) != len(header):
            raise DataError(
                path, f"expected {len(header)} fields, got {len(row)}", line=lineno
            )
        u = users.get(_require_token(row[u_idx], "user id", path, lineno))
        i = items.get(_require_token(row[i_idx], "item id", path, lineno))
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
    _require_data(path, per_user)

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
        item_attrs, attr_names = _index_categories(per_item)

    return InteractionData(
        name=_default_name(path, name),
        sequences=_sort_by_time(per_user, times),
        user_ids=users.keys,
        item_ids=items.keys,
        item_attrs=item_attrs,
        source=str(path),
        attr_names=attr_names,
    )


# --------------------------------------------------------------------------------------------
# Filtering and dispatch
# --------------------------------------------------------------------------------------------


def kcore_filter(data: InteractionData, k: int) -> InteractionData:
    """Keep the k-core: users and items with at least ``k`` interactions each.

    Users and items below the threshold are dropped repeatedly until nothing changes (the
    result does not depend on removal order). A repeated interaction counts every time. Surviving
    items are re-indexed densely ``1..N`` in the order of their original internal ids; users
    keep their order. ``item_attrs``, ``attr_names`` and ``shift`` stay aligned.

    Args:
        data: The data to filter (not modified).
        k: Minimum interactions per user and per item; ``k <= 1`` returns ``data`` itself.

    Returns:
        The filtered data.

    Raises:
        DataError: The filter leaves no interactions (located at ``data.source``).
    """
    if k <= 1:
        return data
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    n_users, n_items = len(data.sequences), data.num_items
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in data.sequences])
        if n_users
        else np.zeros(0, dtype=np.int64)
    )
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    alive = np.ones(len(flat), dtype=bool)
    while True:
        item_count = np.bincount(flat[alive], minlength=n_items + 1)
        user_count = np.bincount(owner[alive], minlength=n_users)
        drop = alive & ((item_count[flat] < k) | (user_count[owner] < k))
        if not drop.any():
            break
        alive &= ~drop

    if not alive.any():
        raise DataError(
            data.source or data.name,
            f"k-core filter with k={k} left no data (every user or item has fewer than {k} "
            "interactions after filtering)",
        )
    kept_users = np.flatnonzero(user_count > 0)
    kept_items = np.flatnonzero(item_count[1:] > 0) + 1  # old internal ids, ascending
    remap = np.zeros(n_items + 1, dtype=np.int64)
    remap[kept_items] = np.arange(1, len(kept_items) + 1, dtype=np.int64)

    new_flat = remap[flat[alive]]
    new_lengths = user_count[kept_users]
    sequences = [s.copy() for s in np.split(new_flat, np.cumsum(new_lengths)[:-1])]

    item_attrs = None
    if data.item_attrs is not None:
        item_attrs = [frozenset()] + [data.item_attrs[i] for i in kept_items]
    shift = None if data.shift is None else np.asarray(data.shift)[kept_users]
    return InteractionData(
        name=data.name,
        sequences=sequences,
        user_ids=[data.user_ids[u] for u in kept_users],
        item_ids=[data.item_ids[i - 1] for i in kept_items],
        item_attrs=item_attrs,
        shift=shift,
        source=data.source,
        attr_names=None if data.attr_names is None else list(data.attr_names),
    )


def _loaders() -> dict[str, Callable[..., InteractionData]]:
    return {"s3rec": load_s3rec, "pairs": load_pairs, "recbole": load_recbole, "csv": load_csv}


def load_data(fmt: str, path: PathLike, **options) -> InteractionData:
    """Load a data set in the named format.

    Args:
        fmt: One of ``"s3rec"``, ``"pairs"``, ``"recbole"``, ``"csv"``.
        path: The main data file (for ``"recbole"``, the ``.inter`` file).
        **options: Keyword arguments of the matching loader (e.g. ``attributes`` for
            ``"s3rec"``, ``item_path`` for ``"recbole"``, ``time_col`` for ``"csv"``).

    Returns:
        The loaded data.

    Raises:
        RecshrinkError: Unknown format or an option the loader does not take.
        DataError: The loader rejected the input.
    """
    loaders = _loaders()
    loader = loaders.get(fmt)
    if loader is None:
        allowed = ", ".join(repr(f) for f in loaders)
        raise RecshrinkError(f"unknown data format {fmt!r} (allowed: {allowed})")
    params = list(inspect.signature(loader).parameters)[1:]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise RecshrinkError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for data format {fmt!r} "
            f"(allowed: {', '.join(map(repr, params))})"
        )
    return loader(path, **options)


__all__ = [
    "kcore_filter",
    "load_csv",
    "load_data",
    "load_pairs",
    "load_recbole",
    "load_s3rec",
]

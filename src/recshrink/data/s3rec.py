"""Readers for the S3-Rec format (one user per line) and the original SASRec ``user item`` pairs.

Both take non-negative decimal integer ids, stored as canonical strings; the conventions shared by
every loader are in :mod:`recshrink.data.loaders`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recshrink.data.dataset import InteractionData
from recshrink.data.parsing import (
    IdMap, PathLike, default_name, numbered_lines, parse_int_id, read_text, require_data,
)  # fmt: skip
from recshrink.errors import DataError


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
    text = read_text(path)
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
    text = read_text(path)
    items = IdMap(start=1)
    tok2id: dict[str, int] = {}  # raw token -> internal id (fast path for repeated tokens)
    user_line: dict[str, int] = {}
    user_ids: list[str] = []
    sequences: list[np.ndarray] = []

    for lineno, line in numbered_lines(text):
        parts = line.split()
        if not parts:
            continue
        user = str(parse_int_id(parts[0], "user id", path, lineno))
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
                    iid = items.get(str(parse_int_id(tok, "item id", path, lineno)))
                    tok2id[tok] = iid
                    seq[j] = iid
        user_ids.append(user)
        sequences.append(np.array(seq, dtype=np.int64))

    require_data(path, sequences)
    item_attrs = None
    if attributes is not None:
        table = _load_attribute_json(Path(attributes))
        empty: frozenset[int] = frozenset()
        item_attrs = [empty] + [table.get(raw, empty) for raw in items.keys]
    return InteractionData(
        name=default_name(path, name),
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
    text = read_text(path)
    items = IdMap(start=1)
    users = IdMap(start=0)
    tok2id: dict[str, int] = {}
    tok2user: dict[str, int] = {}
    per_user: list[list[int]] = []

    for lineno, line in numbered_lines(text):
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
            u = users.get(str(parse_int_id(utok, "user id", path, lineno)))
            tok2user[utok] = u
            if u == len(per_user):
                per_user.append([])
        i = tok2id.get(itok)
        if i is None:
            i = items.get(str(parse_int_id(itok, "item id", path, lineno)))
            tok2id[itok] = i
        per_user[u].append(i)

    require_data(path, per_user)
    return InteractionData(
        name=default_name(path, name),
        sequences=[np.array(s, dtype=np.int64) for s in per_user],
        user_ids=users.keys,
        item_ids=items.keys,
        source=str(path),
    )


__all__ = ["load_pairs", "load_s3rec"]

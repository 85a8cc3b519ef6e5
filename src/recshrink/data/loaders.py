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

This module dispatches by format name (:func:`load_data`) and re-exports the readers, one module
per format (:mod:`recshrink.data.s3rec`, :mod:`recshrink.data.recbole`,
:mod:`recshrink.data.delimited`, helpers in :mod:`recshrink.data.parsing`), and
:func:`kcore_filter` (:mod:`recshrink.data.kcore`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from recshrink.data.dataset import InteractionData
from recshrink.data.delimited import load_csv
from recshrink.data.kcore import kcore_filter
from recshrink.data.parsing import PathLike
from recshrink.data.recbole import load_recbole
from recshrink.data.s3rec import load_pairs, load_s3rec
from recshrink.errors import RecshrinkError


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

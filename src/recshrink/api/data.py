"""The data stage's entry functions: :func:`load_data` (a data set from files) and
:func:`synthetic` (data with evolving interests, no download)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from recshrink.api._common import PathLike
from recshrink.data.dataset import InteractionData
from recshrink.data.loaders import kcore_filter
from recshrink.data.loaders import load_data as load_format
from recshrink.data.synthetic import SyntheticConfig
from recshrink.data.synthetic import synthetic as generate
from recshrink.errors import DataError

FORMATS = ("s3rec", "pairs", "recbole", "csv")


def infer_format(path: PathLike) -> str:
    """The format a file's extension implies: ``.inter`` RecBole, ``.csv`` CSV, else S3-Rec."""
    return {".inter": "recbole", ".csv": "csv"}.get(Path(path).suffix, "s3rec")


def load_data(path: PathLike, format: str | None = None, *, kcore: int = 0,
              **options) -> InteractionData:  # fmt: skip
    """Load interaction data: one user's chronological item sequence per user.

    Args:
        path: The interaction file: S3-Rec lines (``user item item ...``), ``user item`` pairs,
            a RecBole ``.inter`` atomic file, or a CSV.
        format: ``"s3rec"``, ``"pairs"``, ``"recbole"`` or ``"csv"`` (default: from the
            extension, see :func:`infer_format`).
        kcore: Drop users and items with fewer interactions, repeatedly (0/1 = off).
        **options: The format's options: ``attributes`` (S3-Rec ``item2attributes.json``),
            ``item_path`` (RecBole ``.item``), ``user_col``/``item_col``/``time_col``/
            ``category_col``/``sep`` (CSV), ``name``.

    Returns:
        The data set (:class:`recshrink.Dataset`); ``.split(max_len)`` gives its leave-one-out
        split.

    Raises:
        DataError: A missing or malformed file (naming the file and line).

    Example:
        >>> data = recshrink.load_data("data/beauty/Beauty.txt",
        ...                            attributes="data/beauty/Beauty_item2attributes.json")
        >>> data.num_items
        12101
    """
    path = Path(path)
    if not path.exists():
        hint = "" if path.is_absolute() else (
            " (relative data paths start at data.root, $RECSHRINK_DATA or ./data)")
        raise DataError(path, f"no such file{hint}")
    data = load_format(format or infer_format(path), path, **options)
    return kcore_filter(data, kcore) if kcore > 1 else data


def synthetic(config: SyntheticConfig | None = None, **fields) -> InteractionData:
    """Synthetic sequences with evolving interests (a category per item; users drift between
    categories, and the test step's shift is known).

    Args:
        config: A :class:`recshrink.data.SyntheticConfig`; ``**fields`` override its fields
            (``users``, ``items``, ``categories``, ``min_len``, ``max_len``, ``seed``, ...).

    Returns:
        The data set, with the ground-truth interest-shift flag of every user's test step.

    Example:
        >>> data = recshrink.synthetic(users=2000, items=500, categories=20)
    """
    if fields:
        base = dataclasses.asdict(config) if config is not None else {}
        config = SyntheticConfig(**{**base, **fields})
    return generate(config)

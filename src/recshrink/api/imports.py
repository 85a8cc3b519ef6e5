"""The import entry function: a model trained elsewhere becomes a native model directory."""

from __future__ import annotations

from pathlib import Path

import torch

from recshrink.api._common import PathLike, Result, as_split, popular_items
from recshrink.data.dataset import InteractionData
from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel
from recshrink.models.io import save_model
from recshrink.teachers import open_model
from recshrink.teachers.recbole import reorder_items
from recshrink.teachers.protocol import item_order


def import_model(
    model: PathLike,
    data: InteractionData,
    *,
    out: PathLike | None = None,
    item_ids: list[str] | None = None,
) -> Result:
    """Import a model trained elsewhere (a RecBole ``.pth`` of SASRec or GRU4Rec, or any file
    :func:`recshrink.teachers.open_model` reads) as a native model on ``data``'s item ids.

    Args:
        model: The checkpoint (read without running anything in it).
        data: The data it was trained on.
        out: The native model directory to write (None: nothing is written).
        item_ids: The raw id of each of the model's items, in its index order (index 1 first).
            Default: the data's own ids, when ``data`` was read from RecBole atomic files
            (recshrink's loader numbers items in order of first appearance in the ``.inter``
            file, as RecBole does).

    Returns:
        :class:`Result` with the native model and the import summary (framework, model,
        hyperparameters).

    Raises:
        RecshrinkError: Catalogue sizes differ, ids unknown to the data, or no id map to use
            (one line naming both sides).

    Example:
        >>> res = recshrink.import_model("saved/SASRec-ml-100k.pth",
        ...                              recshrink.load_data("ml-100k/ml-100k.inter"), out="teacher")
    """
    m, meta = open_model(model)
    info = meta.extra.get("recbole", {})
    if m.num_items != data.num_items:
        raise RecshrinkError(f"{model}: the model has {m.num_items:,} items but the data "
                             f"{data.source or data.name} has {data.num_items:,}")  # fmt: skip
    if item_ids is None and meta.item_ids:
        item_ids = list(meta.item_ids)
    if item_ids is None:
        if not str(data.source).endswith(".inter"):
            raise RecshrinkError(f"{model}: its item indices cannot be matched to {data.source} "
                                 "(not RecBole atomic files): give item_ids, the raw id of each "
                                 "of the model's items in index order")  # fmt: skip
        item_ids = list(data.item_ids)
    order = item_order(item_ids, data.item_ids)
    if order != list(range(1, data.num_items + 1)):
        reorder_items(m, order)
    step = {"type": "import", "from": str(model), "framework": "recbole" if info else "recshrink",
            **({"model": info["model"]} if info else {})}  # fmt: skip
    summary = {"imported_from": str(model), **({"recbole": info} if info else {})}
    if out is not None:
        split = as_split(data, None, m.max_len)
        save_model(m, out, item_ids=data.item_ids, data_fingerprint=data.fingerprint(),
                   steps=[step], extra={**summary,
                                        "popular": popular_items(split, data.num_items)})  # fmt: skip
    return Result(m, Path(out) if out is not None else None, summary, [step])

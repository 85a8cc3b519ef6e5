"""What every public entry function shares: taking objects or paths, and its result object."""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel
from recshrink.models.io import ModelMeta
from recshrink.teachers import open_teacher
from recshrink.teachers.protocol import ScoresTeacher
from recshrink.train.trainer import item_popularity

PathLike = str | Path


@dataclasses.dataclass
class Result:
    """What a training or compression step returns.

    Attributes:
        model: The model (best weights, on the CPU, in eval mode).
        path: The model directory it was written to (None when no path was given).
        summary: The step's block of report.json (``train``, ``prune``, ... as the run writes it).
        steps: The steps that made the model (as recorded in its ``config.json``).
    """

    model: SeqRecModel
    path: Path | None
    summary: dict
    steps: list[dict] = dataclasses.field(default_factory=list)


def configured(config, default, overrides: dict):
    """``config`` (or ``default`` when None) with ``overrides`` applied (validated again)."""
    base = config if config is not None else default
    return dataclasses.replace(base, **overrides) if overrides else base


def as_model(model: SeqRecModel | ScoresTeacher | PathLike, num_items: int | None = None,
             item_ids: list | None = None,
             ) -> tuple[SeqRecModel | ScoresTeacher, ModelMeta | None]:  # fmt: skip
    """A model object as it is, or a model file loaded (no code in it run): a model directory,
    a ``.pt``, a RecBole checkpoint, an ONNX graph or a ``torch.export`` program
    (:func:`recshrink.teachers.open_teacher`; ``num_items``, ``item_ids``: the data's)."""
    if isinstance(model, (SeqRecModel, ScoresTeacher)):
        return model, None
    return open_teacher(model, num_items, item_ids)


def as_split(data: InteractionData, split: Split | None, max_len: int,
             shift_window: int = 5) -> Split:  # fmt: skip
    """``split`` if given, else the data's leave-one-out split for histories of ``max_len``."""
    return split if split is not None else data.split(max_len, shift_window)


def check_compatible(model, data: InteractionData, where: str) -> None:
    """Refuse a model whose catalogue does not match the data.

    Raises:
        RecshrinkError: Different item counts.
    """
    if model.num_items != data.num_items:
        raise RecshrinkError(
            f"{where}: model has {model.num_items} items but the data has {data.num_items}; "
            "was it trained on other data?"
        )


def popular_items(split: Split, num_items: int, n: int = 100) -> list[int]:
    """The ``n`` most frequent items of the training split (answers for empty histories)."""
    pop = item_popularity(split.train, num_items)
    return [int(i) for i in torch.argsort(pop, descending=True, stable=True)[:n] if pop[i] > 0]


@contextmanager
def out_dir(path: PathLike | None, prefix: str) -> Iterator[Path]:
    """``path`` as a directory, or a temporary one removed afterwards (no path: no files)."""
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=f"recshrink-{prefix}-") as tmp:
        yield Path(tmp)

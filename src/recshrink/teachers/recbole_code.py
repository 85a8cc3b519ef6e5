"""Any RecBole sequential model as a black-box teacher, run by RecBole's own code.

RecBole's ``SASRec`` and ``GRU4Rec`` become native recshrink models
(:mod:`recshrink.teachers.recbole`); every other sequential model (``BERT4Rec``, ``LightSANs``,
``CORE``, ``FEARec``, ...) is rebuilt from its checkpoint by RecBole itself, where the user has
RecBole installed (``pip install 'recshrink[recbole]'``; recshrink's own dependencies do not pin
RecBole's old numpy/pandas), and scored by its ``full_sort_predict``. The checkpoint is still
read without running anything in it: its config is inert data, its weights are tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recshrink.errors import RecshrinkError
from recshrink.teachers.checkpoint import read_checkpoint
from recshrink.teachers.protocol import ScoresTeacher, teacher_from_module
from recshrink.teachers.recbole import CONVERTERS, checkpoint_parts, plain_value


class _Config(dict):
    """RecBole's ``Config`` as its models read it: ``config[key]``, None for a missing key."""

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


class _Dataset:
    """What a RecBole model's constructor asks of its dataset: the number of items ([PAD]
    included) of the item field (``num``, SINE's ``item_num``), the history length (CORE's
    ``field2seqlen``), and no interactions (FEARec reads ``inter_feat`` at construction for a
    training-time index that scoring does not use)."""

    def __init__(self, item_field: str, n_items: int, seq_field: str, max_len: int) -> None:
        self.item_field, self.n_items, self.item_num = item_field, n_items, n_items
        self.field2seqlen = {seq_field: max_len}
        self.inter_feat = {item_field: torch.zeros(0, dtype=torch.long)}

    def num(self, field: str) -> int:
        if field != self.item_field:
            raise RecshrinkError(f"the model asks for the size of field {field!r}, which a "
                                 "black-box teacher does not have (only the item field)")  # fmt: skip
        return self.n_items


def needs_recbole_code(obj: Any) -> bool:
    """Whether a read RecBole checkpoint holds a model without a native conversion."""
    return plain_value(checkpoint_parts(obj)[1].get("model")) not in CONVERTERS


def teacher_from_recbole_code(path: str | Path, num_items: int, obj: Any = None) -> ScoresTeacher:
    """A RecBole checkpoint of any sequential model as a scores-only teacher, rebuilt and run by
    RecBole (``get_model(name)(config, dataset)``, its weights loaded, ``full_sort_predict`` on
    right-padded histories); its item indices are RecBole's (the data's, for RecBole atomic
    files).

    Args:
        path: The ``.pth`` its Trainer saved.
        num_items: The data's catalogue size N (RecBole's ``n_items`` is N + 1 with [PAD]).
        obj: The checkpoint as :func:`~recshrink.teachers.checkpoint.read_checkpoint` returned
            it, when the caller has read it already.

    Raises:
        RecshrinkError: RecBole is not installed (naming the extra), the checkpoint is refused
            or does not build or load in RecBole (one line).
    """
    obj = read_checkpoint(path) if obj is None else obj
    state, cfg = checkpoint_parts(obj)
    name = plain_value(cfg.get("model"))
    try:
        from recbole.data.interaction import Interaction
        from recbole.utils import get_model
    except ImportError:
        raise RecshrinkError(f"{path}: RecBole {name} runs as a teacher through RecBole's own "
                             "code: install RecBole (pip install 'recshrink[recbole]', in an "
                             "environment where its numpy<2 and pandas<2.3 pins fit)") from None  # fmt: skip
    config = _Config({k: plain_value(v) for k, v in cfg.items()}, device=torch.device("cpu"))
    item_field = config["ITEM_ID_FIELD"] or "item_id"
    seq_field = item_field + (config["LIST_SUFFIX"] or "_list")
    len_field = config["ITEM_LIST_LENGTH_FIELD"] or "item_length"
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    if not isinstance(max_len, int):
        raise RecshrinkError(f"{path}: its config has no MAX_ITEM_LIST_LENGTH")
    try:
        model = get_model(name)(config, _Dataset(item_field, num_items + 1, seq_field, max_len))
        model.load_state_dict(state)
    except RecshrinkError as exc:
        raise RecshrinkError(f"{path}: RecBole {name}: {exc}") from None
    except Exception as exc:  # RecBole's own error: a config or weights it cannot use
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RecshrinkError(f"{path}: RecBole {name} does not build from this checkpoint "
                             f"with {num_items:,} items: {first}") from None  # fmt: skip
    model.eval()

    def scores(seq: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:  # [B, N + 1]
        batch = Interaction({seq_field: seq, len_field: lens})
        return model.full_sort_predict(batch).view(seq.shape[0], -1)

    teacher = teacher_from_module(scores, num_items, max_len, padding="right", call="seq_len",
                                  pad_column=True)  # fmt: skip
    teacher.module, teacher.arch = model, f"recbole:{name}"
    return teacher


__all__ = ["needs_recbole_code", "teacher_from_recbole_code"]

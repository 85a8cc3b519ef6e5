"""What recshrink needs from a teacher, stated in one place, and the adapter for any module.

Every teacher gives **scores over the catalogue for the last position** of left-padded
histories: ``scores(seq [B, L] int64) -> [B, N + 1]`` (column 0, padding, ignored). A native
:class:`~recshrink.models.base.SeqRecModel` also gives scores at every position, user vectors
(``forward_all``) and its item table, which some distillation features need:

| feature | needs |
|---|---|
| ground truth, top-M logit KD (``kd_scope: topm``), ranking KD | last-position scores |
| KD on sampled negatives (``kd_negatives`` beyond the top M), ``kd_scope: full`` | item table + user vectors |
| representation alignment (``align_weight``) | user vectors |
| item-table initialisation (``init_items: pca|shared``) | item table |

A teacher with scores only (:class:`ScoresTeacher`) is distilled on every training prefix: its
cache is built once by prefix expansion (each position's history scored as its own sequence)
and KD runs over its top M items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel


class ScoresTeacher(nn.Module):
    """A teacher known by its last-position scores alone (a foreign module, an ONNX graph...).

    Histories reach it left-padded (or cut) to exactly ``max_len`` items, the length foreign
    models are trained and exported at.

    Attributes:
        num_items: Catalogue size N.
        max_len: The history length it reads.
        arch: What it is, for reports.
        runtime: The runtime it runs in as its user serves it (``"torch"`` for a module or a
            ``torch.export`` program, ``"onnxruntime"`` for an ONNX graph): the benchmark times
            it there.
    """

    def __init__(self, score_fn: Callable[[torch.Tensor], torch.Tensor], num_items: int,
                 max_len: int, arch: str = "external", module: nn.Module | None = None,
                 runtime: str = "torch") -> None:  # fmt: skip
        super().__init__()
        self._score_fn = score_fn
        self.num_items, self.max_len, self.arch, self.runtime = num_items, max_len, arch, runtime
        self.module = module  # its parameters identify the teacher (cache and resume keys)

    def digest(self) -> str:
        """What identifies the teacher in cache and resume keys: its parameters, if any, and its
        scores on a fixed probe batch (a callable without parameters is known by its answers)."""
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        g = torch.Generator().manual_seed(0)
        probe = torch.randint(1, self.num_items + 1, (4, self.max_len), generator=g)
        probe[:2, : self.max_len // 2] = 0
        h.update(self.scores(probe).numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.inference_mode()
    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded histories -> ``[B, N + 1]`` scores (column 0 = -inf)."""
        seq = seq[:, -self.max_len :]
        if seq.shape[1] < self.max_len:  # [B, max_len]
            seq = torch.nn.functional.pad(seq, (self.max_len - seq.shape[1], 0))
        out = self._score_fn(seq).float()  # [B, N + 1]
        out[:, 0] = float("-inf")
        return out


def item_order(their_ids: list, data_ids: list, where: str = "item_ids") -> list[int]:
    """Each data item's index in a foreign model: ``order[i - 1]`` is the foreign index of the
    data's item ``i``, given the raw id of each of the model's items in its index order.

    Raises:
        RecshrinkError: Different catalogue sizes, or data ids the model does not know (one
            line naming both sides).
    """
    their_ids = [str(x) for x in their_ids]
    if len(their_ids) != len(data_ids):
        raise RecshrinkError(f"{where}: {len(their_ids):,} ids for the model's items, but the "
                             f"data has {len(data_ids):,} items")  # fmt: skip
    index = {raw: i for i, raw in enumerate(their_ids, start=1)}
    unknown = [x for x in data_ids if str(x) not in index]
    if unknown:
        raise RecshrinkError(f"{where}: {len(unknown):,} of the data's item ids are not in the "
                             f"model's id list (e.g. {unknown[0]!r})")  # fmt: skip
    return [index[str(x)] for x in data_ids]


def remapped(teacher: ScoresTeacher, order: list[int]) -> ScoresTeacher:
    """``teacher`` on the data's item ids: histories are translated to its indices and its
    score columns put back in the data's order (``order`` from :func:`item_order`)."""
    if order == list(range(1, len(order) + 1)):
        return teacher
    fwd = torch.tensor([0, *order])  # [N + 1] data id -> foreign index

    def score(seq: torch.Tensor) -> torch.Tensor:
        return teacher.scores(fwd[seq])[:, fwd]  # [B, N + 1], column i = data item i

    out = ScoresTeacher(score, teacher.num_items, teacher.max_len, teacher.arch, teacher.module,
                        teacher.runtime)  # fmt: skip
    out.register_buffer("item_order", fwd, persistent=True)  # part of its digest
    return out


def has_item_table(teacher: nn.Module) -> bool:
    """Whether the teacher gives user vectors and an item table (a native model)."""
    return isinstance(teacher, SeqRecModel)


def teacher_from_module(
    module: nn.Module | Callable,
    num_items: int,
    max_len: int,
    *,
    padding: Literal["left", "right"] = "left",
    call: Literal["seq", "seq_len"] = "seq",
    id_offset: int = 0,
    pad_column: bool = True,
) -> ScoresTeacher:
    """Any ``torch.nn.Module`` or callable as a teacher.

    Args:
        module: Maps histories to scores over the catalogue at the last position.
        num_items: Catalogue size N (recshrink's item ids are 1..N, 0 = padding).
        max_len: The history length it reads.
        padding: How it expects histories: ``"left"`` (recshrink's contract) or ``"right"``
            (RecBole's; the last item at ``seq_len - 1``).
        call: ``"seq"`` for ``module(seq)``; ``"seq_len"`` for ``module(seq, seq_len)``
            (RecBole's ``forward(item_seq, item_seq_len)`` convention).
        id_offset: Added to every non-padding item id before the call (its ids = ours + offset).
        pad_column: Its output has a padding column first (``[B, N + 1]``); False: ``[B, N]``.

    Raises:
        RecshrinkError: The module cannot be called that way, or returns another shape (checked
            on a probe batch, one line).

    Example:
        >>> teacher = recshrink.teacher_from_module(recbole_model.eval(), n, 50,
        ...     padding="right", call="seq_len",
        ...     ... )  # its full_sort_predict-like forward
    """

    def score(seq: torch.Tensor) -> torch.Tensor:
        lens = (seq > 0).sum(1)  # [B]
        x = torch.where(seq > 0, seq + id_offset, seq)
        if padding == "right":  # move each row's items to the front
            order = torch.argsort((seq == 0).int(), dim=1, stable=True)
            x = torch.gather(x, 1, order)
        out = module(x) if call == "seq" else module(x, lens)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not pad_column:
            out = torch.cat([out.new_full((out.shape[0], 1), float("-inf")), out], dim=1)
        return out

    probe = torch.zeros(2, max_len, dtype=torch.long)
    probe[:, -2:] = torch.tensor([[1, 2], [2, 1]]).clamp(max=num_items)
    try:
        with torch.inference_mode():
            out = score(probe)
    except Exception as exc:  # the user's module, called the way they said
        raise RecshrinkError(f"teacher module: calling it as {call!r} with {padding}-padded "
                             f"histories failed: {type(exc).__name__}: {str(exc)[:160]}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_items + 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RecshrinkError(f"teacher module: returned {shape} for 2 histories; expected scores "
                             f"[2, {num_items + int(pad_column)}] over the catalogue")  # fmt: skip
    owner = module if isinstance(module, nn.Module) else None
    return ScoresTeacher(score, num_items, max_len, type(module).__name__, owner)


__all__ = ["ScoresTeacher", "has_item_table", "item_order", "remapped", "teacher_from_module"]

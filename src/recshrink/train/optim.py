"""The trainer's optimizer: AdamW, with the item table on sparse gradients for large catalogues.

A step of dense AdamW reads and writes every row of the item table and of both its moments, and
backward first fills a dense ``[N + 1, D]`` gradient: at a million items and D = 64 that is
about 1 GB of memory traffic per step for the few thousand rows the batch touched. With
``item_grad="sparse"`` the table takes sparse gradients (only the rows of the batch's inputs,
targets and sampled negatives) and :class:`torch.optim.SparseAdam` updates those rows alone (the
"lazy Adam" of TensorFlow Recommenders); every other parameter stays on AdamW.
"""

from __future__ import annotations

import torch
from torch import nn

from recshrink.errors import RecshrinkError
from recshrink.models.base import SeqRecModel

SPARSE_FROM_ITEMS = 100_000  # ``item_grad="auto"`` turns sparse from this catalogue size


def use_sparse_items(mode: str, num_items: int, *, weight_decay: float, world: int,
                     dense_table: str | None = None) -> bool:  # fmt: skip
    """Whether the item table trains on sparse gradients.

    Args:
        mode: ``"dense"``, ``"sparse"`` or ``"auto"`` (sparse from :data:`SPARSE_FROM_ITEMS`
            items, where nothing below rules it out).
        num_items: Catalogue size N.
        weight_decay: AdamW's weight decay (SparseAdam has none).
        world: Number of DDP processes (sparse gradients are single-process only).
        dense_table: Why the loss reads the whole table (e.g. ``"loss: ce"``), or None.

    Raises:
        RecshrinkError: ``mode="sparse"`` where it cannot apply, naming the reason.
    """
    blockers = [why for why, on in (("weight_decay > 0", weight_decay > 0),
                                    ("torchrun with more than one process", world > 1),
                                    (dense_table, dense_table is not None)) if on]  # fmt: skip
    if mode == "sparse" and blockers:
        raise RecshrinkError(f"item_grad: sparse item gradients do not apply with {blockers[0]}")
    if mode == "auto":
        return not blockers and num_items >= SPARSE_FROM_ITEMS
    return mode == "sparse"


class Optimizer:
    """AdamW over the dense parameters, plus SparseAdam over the item table when it is sparse.

    Offers what the trainer uses of a torch optimizer: ``zero_grad``, ``step``,
    ``param_groups`` (both optimizers' groups, for learning-rate decay), ``state_dict`` and
    ``load_state_dict``, and :meth:`clip_grad_norm` (torch's does not take sparse gradients).
    """

    def __init__(self, params: nn.Module, model: SeqRecModel, *, lr: float, weight_decay: float,
                 sparse_items: bool) -> None:  # fmt: skip
        if sparse_items and not isinstance(model.item_emb, nn.Embedding):
            raise RecshrinkError("item_grad: sparse needs a plain (unquantized) item table")
        table = model.item_emb.weight if sparse_items else None
        self.params = list(params.parameters())
        self.dense = torch.optim.AdamW([p for p in self.params if p is not table], lr=lr,
                                       weight_decay=weight_decay)  # fmt: skip
        self.sparse = torch.optim.SparseAdam([table], lr=lr) if table is not None else None
        self.table = table
        if sparse_items:
            model.item_emb.sparse = True  # the input lookups' gradient; the losses' via sparse_items

    def close(self, model: SeqRecModel) -> None:
        """Put the model's item table back on dense gradients (as saved and exported)."""
        if self.sparse:
            model.item_emb.sparse = False

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + (self.sparse.param_groups if self.sparse else [])

    def zero_grad(self) -> None:
        self.dense.zero_grad(set_to_none=True)
        if self.sparse:
            self.sparse.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.table is not None and self.table.grad is not None and not self.table.grad.is_sparse:
            raise RecshrinkError("item_grad: the loss read the whole item table (dense gradient); "
                                 "use item_grad: dense")  # fmt: skip
        self.dense.step()
        if self.sparse:
            self.sparse.step()

    def clip_grad_norm(self, max_norm: float) -> None:
        """Scale all gradients so that their joint L2 norm is at most ``max_norm``."""
        if self.sparse is None:  # torch's, as before sparse gradients existed
            nn.utils.clip_grad_norm_(self.params, max_norm)
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        sq = sum(float((g.coalesce().values() if g.is_sparse else g).float().pow(2).sum())
                 for g in grads)  # fmt: skip
        coef = max_norm / (sq**0.5 + 1e-6)
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)

    def state_dict(self) -> dict:
        state = self.dense.state_dict()
        return {**state, "sparse": self.sparse.state_dict()} if self.sparse else state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        sparse = state.pop("sparse", None)  # item_grad is in the run key: both sides agree
        self.dense.load_state_dict(state)
        if self.sparse:
            self.sparse.load_state_dict(sparse)

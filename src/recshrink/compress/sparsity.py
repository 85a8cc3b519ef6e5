"""Unstructured magnitude sparsity and 2:4 semi-structured sparsity.

Both keep every shape: the zeros keep their storage, so they save nothing in size or speed with
dense kernels (the pruning report says so). Used by :func:`recshrink.compress.prune.prune`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recshrink.models.base import SeqRecModel

Sparsity = Literal["structured", "unstructured", "2:4"]


def _sparse_targets(model: SeqRecModel) -> list[tuple[str, nn.Parameter]]:
    """Weight matrices of the network body (the item table and position table excluded)."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.startswith(("item_emb", "pos_emb")):
            out.append((name, p))
    return out


def apply_sparsity(model: SeqRecModel, mode: Sparsity, ratio: float) -> dict:
    """Zero weights in place: unstructured magnitude (``ratio`` of each matrix) or 2:4.

    Returns:
        ``{"zeros": n, "weights": n, "sparsity": fraction}`` over the affected matrices.
    """
    zeros = total = 0
    with torch.no_grad():
        for _, p in _sparse_targets(model):
            w = p.data
            if mode == "unstructured":
                k = int(w.numel() * ratio)
                if k:
                    thresh = w.abs().flatten().kthvalue(k).values
                    w[w.abs() <= thresh] = 0.0
            elif mode == "2:4":
                flat = w.reshape(w.shape[0], -1)
                cols = flat.shape[1] - flat.shape[1] % 4
                blocks = flat[:, :cols].reshape(flat.shape[0], -1, 4)  # [R, C/4, 4]
                small = blocks.abs().argsort(dim=-1)[..., :2]
                blocks.scatter_(-1, small, 0.0)
                flat[:, :cols] = blocks.reshape(flat.shape[0], cols)
            zeros += int((w == 0).sum())
            total += w.numel()
    return {"zeros": zeros, "weights": total, "sparsity": round(zeros / max(1, total), 4)}


__all__ = ["Sparsity", "apply_sparsity"]

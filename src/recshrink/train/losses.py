"""Next-item losses over the tied item table.

All losses take the hidden states of the positions that have a target, ``h [P, D]``, the target
ids ``[P]`` and the item table ``[N + 1, D]`` (row 0 = padding, never a candidate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def item_rows(table: torch.Tensor, ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Rows ``table[ids]`` (``ids`` of any shape); ``sparse`` gives ``table`` a sparse gradient
    holding those rows alone (for :class:`torch.optim.SparseAdam`)."""
    return F.embedding(ids, table, sparse=True) if sparse else table[ids]


def full_softmax_ce(h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax over all items (the padding id excluded)."""
    logits = h @ table[1:].t()  # [P, N]
    return F.cross_entropy(logits, targets - 1)


def sample_negatives(
    num_items: int,
    num: int,
    generator: torch.Generator,
    probs: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw ``num`` item ids in 1..N, uniformly or from ``probs [N + 1]`` (with replacement)."""
    if probs is None:
        ids = torch.randint(1, num_items + 1, (num,), generator=generator)
    else:
        ids = torch.multinomial(probs, num, replacement=True, generator=generator)
    return ids.to(device)


def sampled_softmax_ce(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """Softmax cross-entropy against the target and negatives shared by all positions.

    Args:
        h: ``[P, D]`` hidden states.
        targets: ``[P]`` target ids.
        table: ``[N + 1, D]`` item table.
        negatives: ``[M]`` shared negative ids; a negative equal to a position's target is
            masked out for that position.
        log_q: Optional ``[N + 1]`` log sampling probabilities: when given, logits are corrected
            by ``- log_q`` (logQ correction for popularity-sampled negatives).
        sparse: Give ``table`` a sparse gradient (see :func:`item_rows`).
    """
    pos = (h * item_rows(table, targets, sparse)).sum(-1, keepdim=True)  # [P, 1]
    neg = h @ item_rows(table, negatives, sparse).t()  # [P, M]
    if log_q is not None:
        pos = pos - log_q[targets].unsqueeze(-1)
        neg = neg - log_q[negatives].unsqueeze(0)
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(-1), float("-inf"))
    logits = torch.cat([pos, neg], dim=-1)  # [P, 1 + M]
    return F.cross_entropy(logits, torch.zeros_like(targets))


def bce_loss(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, negatives: torch.Tensor,
    sparse: bool = False,
) -> torch.Tensor:
    """Binary cross-entropy with one sampled negative per position (original SASRec).

    Args:
        negatives: ``[P]`` one negative id per position.
        sparse: Give ``table`` a sparse gradient (see :func:`item_rows`).
    """
    pos = (h * item_rows(table, targets, sparse)).sum(-1)  # [P]
    neg = (h * item_rows(table, negatives, sparse)).sum(-1)  # [P]
    return F.softplus(-pos).mean() + F.softplus(neg).mean()

"""Comparing a model with a reference on the same users.

:func:`paired_bootstrap` gives percentile intervals of the ratio and difference of two models'
means of a per-user metric, :func:`rank_retention` applies it to target ranks (e.g. a student's
retention of its teacher's NDCG@10), and :func:`topk_overlap` measures how far two top-K lists
agree (e.g. an exported or quantized model against the original).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recshrink.metrics import per_user_metric

__all__ = ["fidelity", "paired_bootstrap", "rank_retention", "topk_overlap"]


def paired_bootstrap(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Compare two models' per-user values of one metric measured on the same users.

    Users are resampled with replacement, jointly for both models (a paired bootstrap), and
    the percentile intervals of the ratio ``mean(a) / mean(b)`` (e.g. a student's retention of
    its teacher's NDCG@10) and of the difference ``mean(a) - mean(b)`` are returned.

    Args:
        a: ``[U]`` per-user values of the model being judged.
        b: ``[U]`` per-user values of the reference, same users in the same order.
        resamples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the resampling.

    Returns:
        ``ratio``, ``ratio_low``, ``ratio_high``, ``diff``, ``diff_low``, ``diff_high``, and
        ``users``, ``resamples``, ``level``.

    Raises:
        ValueError: On arrays of different shapes, no users, a reference mean of zero, or a
            level outside (0, 1).
    """
    x, y = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.size} vs {y.size}")
    if x.size == 0 or y.mean() == 0:
        raise ValueError("paired bootstrap needs users and a reference with a non-zero mean")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError("level must be in (0, 1) and resamples >= 1")
    rng = np.random.default_rng(seed)
    n, ratios, diffs = x.size, [], []
    chunk = max(1, 2_000_000 // n)  # resamples per chunk: bounded index memory
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))  # [R, U]
        ma, mb = x[idx].mean(1), y[idx].mean(1)  # [R]
        ratios.append(ma / np.where(mb == 0, np.nan, mb))
        diffs.append(ma - mb)
    r, d = np.concatenate(ratios), np.concatenate(diffs)
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {"ratio": float(x.mean() / y.mean()),
            "ratio_low": float(np.nanpercentile(r, lo)), "ratio_high": float(np.nanpercentile(r, hi)),
            "diff": float(x.mean() - y.mean()),
            "diff_low": float(np.percentile(d, lo)), "diff_high": float(np.percentile(d, hi)),
            "users": int(n), "resamples": int(resamples), "level": float(level)}  # fmt: skip


def rank_retention(
    ranks: np.ndarray,
    ref_ranks: np.ndarray,
    name: str = "ndcg",
    k: int = 10,
    resamples: int = 2000,
) -> dict[str, float]:
    """A model's retention of a reference's ``name@k`` from both models' per-user target ranks
    on the same users: :func:`paired_bootstrap` of the per-user values, plus the two means
    (``model``, ``reference``). Raises ``ValueError`` when the reference's mean is zero."""
    a, b = per_user_metric(ranks, name, k), per_user_metric(ref_ranks, name, k)
    return {"model": float(a.mean()), "reference": float(b.mean()),
            **paired_bootstrap(a, b, resamples=resamples)}  # fmt: skip


def fidelity(top, teacher_top) -> float:
    """``fidelity@10``: the mean overlap of a model's top 10 with the teacher's top 10 on the
    same users (``[U, K >= 10]`` each, both ranked by the one ranking helper, history masked),
    rounded as reports give it."""
    return round(topk_overlap(torch.as_tensor(top)[:, :10], torch.as_tensor(teacher_top)[:, :10]), 4)


def topk_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of shared items between two top-K id lists ``[B, K]`` (order ignored)."""
    if a.shape != b.shape:
        raise ValueError(f"top-k lists differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    k = a.shape[1]
    shared = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).sum(-1).float()  # [B]
    return float((shared / k).mean())

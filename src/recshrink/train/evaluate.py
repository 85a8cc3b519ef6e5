"""Full-ranking evaluation of any scorer on an :class:`EvalSet`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from recshrink.data.split import EvalSet
from recshrink.metrics import MetricAccumulator, mask_scores, target_ranks
from recshrink.models.base import SeqRecModel

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


class PerUser(NamedTuple):
    """Per-user results of :func:`evaluate`, in the eval set's user order.

    Attributes:
        ranks: ``[U]`` 0-based rank of each user's target (for paired comparisons of two models,
            :func:`recshrink.metrics.paired_bootstrap`).
        top: ``[U, max(ks)]`` each user's top item ids, best first (e.g. for top-10 fidelity,
            :func:`recshrink.metrics.topk_overlap`).
    """

    ranks: np.ndarray
    top: torch.Tensor


def model_scorer(model: SeqRecModel, device: str | torch.device = "cpu") -> ScoreFn:
    """A score function ``histories [B, L] -> scores [B, N + 1]`` running ``model`` in eval mode."""

    def score(hist: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            return model.scores(hist.to(device)).float().cpu()

    return score


def trim_padding(hist: np.ndarray, min_len: int = 1) -> np.ndarray:
    """Drop leading all-padding columns, keeping at least ``min_len`` (models are
    padding-invariant); pads on the left when the batch is narrower than ``min_len``."""
    nonzero = np.flatnonzero((hist != 0).any(axis=0))
    start = nonzero[0] if len(nonzero) else hist.shape[1]
    hist = hist[:, min(start, max(0, hist.shape[1] - min_len)) :]
    if hist.shape[1] < min_len:
        hist = np.pad(hist, ((0, 0), (min_len - hist.shape[1], 0)))
    return hist


def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    item_attrs: list[frozenset[int]] | None = None,
    ks: tuple[int, ...] = (5, 10, 20),
    mask_history: bool = True,
    batch_size: int = 1024,
    per_user: bool = False,
) -> dict | tuple[dict, PerUser]:
    """Rank every item for every user of ``eval_set`` and average the metrics.

    Args:
        score_fn: Maps left-padded histories ``[B, L]`` to scores ``[B, N + 1]``.
        eval_set: Histories, targets and interest-shift flags.
        item_attrs: Attributes per item id, for interest F1@K (optional).
        ks: Cut-offs.
        mask_history: Exclude items already in the history from the ranking.
        batch_size: Users per scoring call.
        per_user: Also return every user's target rank and top items (:class:`PerUser`).

    Returns:
        The metrics of :class:`recshrink.metrics.MetricAccumulator` for all users, with nested
        ``"shift"`` and ``"stable"`` dicts where interest shift is known; with
        ``per_user``, the pair ``(metrics, PerUser)``.
    """
    acc = MetricAccumulator(ks=tuple(ks), item_attrs=item_attrs)
    all_ranks = np.zeros(len(eval_set.targets), dtype=np.int64)  # [U], user order
    has_groups = bool(eval_set.known.any())
    kmax = max(ks)
    all_top = torch.zeros(len(eval_set.targets), kmax, dtype=torch.long)  # [U, K], user order
    order = np.argsort([int((h != 0).sum()) for h in eval_set.histories], kind="stable")
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        hist = trim_padding(eval_set.histories[rows])
        hist_t = torch.from_numpy(hist)
        targets = torch.from_numpy(eval_set.targets[rows])
        scores = mask_scores(score_fn(hist_t), hist_t, mask_history)  # [B, N+1]
        ranks = target_ranks(scores, targets)
        all_ranks[rows] = ranks.numpy()
        topk = torch.topk(scores, min(kmax, scores.shape[1] - 1), dim=-1).indices  # [B, K]
        if topk.shape[1] < kmax:  # tiny catalogue: pad with the padding id (no item)
            topk = torch.nn.functional.pad(topk, (0, kmax - topk.shape[1]))
        all_top[torch.from_numpy(rows)] = topk
        groups = None
        if has_groups:
            shift = eval_set.shift[rows] & eval_set.known[rows]
            stable = ~eval_set.shift[rows] & eval_set.known[rows]
            groups = {"shift": shift, "stable": stable}
        acc.update(ranks, topk_ids=topk, targets=targets, groups=groups)
    return (acc.result(), PerUser(all_ranks, all_top)) if per_user else acc.result()


def top_ids(score_fn: ScoreFn, histories: np.ndarray, k: int = 10, mask_history: bool = True,
            batch_size: int = 1024) -> torch.Tensor:  # fmt: skip
    """Top-``k`` item ids ``[U, k]`` of a score function for every history."""
    out = []
    for i in range(0, len(histories), batch_size):
        h = torch.from_numpy(trim_padding(histories[i : i + batch_size]))
        out.append(mask_scores(score_fn(h), h, mask_history).topk(k, dim=-1).indices)
    return torch.cat(out)


def scorer_agreement(score_a: ScoreFn, score_b: ScoreFn, histories: np.ndarray, k: int = 10,
                     mask_history: bool = True, batch_size: int = 1024) -> float:  # fmt: skip
    """Mean top-``k`` overlap of two score functions on the same histories (e.g. a quantized
    model against its parent)."""
    from recshrink.metrics import topk_overlap

    if len(histories) == 0:
        return 0.0
    a = top_ids(score_a, histories, k, mask_history, batch_size)
    b = top_ids(score_b, histories, k, mask_history, batch_size)
    return round(topk_overlap(a, b), 6)

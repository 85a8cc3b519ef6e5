"""Full-ranking evaluation of any scorer on an :class:`EvalSet`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from recshrink.data.split import EvalSet, pad_left, trim_padding
from recshrink.compare import topk_overlap
from recshrink.interest import informative_attrs
from recshrink.metrics import MetricAccumulator, mask_scores, rank_scores
from recshrink.models.base import SeqRecModel

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
MASK_SCOPES = ("full", "window")


class PerUser(NamedTuple):
    """Per-user results of :func:`evaluate`, in the eval set's user order.

    Attributes:
        ranks: ``[U]`` 0-based rank of each user's target (for paired comparisons of two models,
            :func:`recshrink.compare.paired_bootstrap`).
        top: ``[U, max(ks)]`` each user's top item ids, best first (e.g. for top-10 fidelity,
            :func:`recshrink.compare.topk_overlap`).
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


MIN_GROUP_CASES = 30  # fewer shift (or stable) cases than this: no shift/stable quality


def exclusion(eval_set: EvalSet, rows: np.ndarray, hist: np.ndarray, mask_history: bool = True,
              mask_scope: str = "full") -> torch.Tensor | None:  # fmt: skip
    """The item ids to mask for ``rows`` of ``eval_set``: ``[B, S]`` int64 padded with 0.

    ``mask_scope="full"``: every item the user interacted with before the target (as S3-Rec's
    and RecBole's evaluators do); ``"window"``: only the model's input window ``hist``. None
    when ``mask_history`` is False.
    """
    if not mask_history:
        return None
    if mask_scope not in MASK_SCOPES:
        raise ValueError(f"mask_scope must be one of {', '.join(MASK_SCOPES)}, got {mask_scope!r}")
    if mask_scope == "window" or eval_set.seen is None:
        return torch.from_numpy(np.ascontiguousarray(hist))
    seen = [eval_set.seen[r] for r in rows]
    return torch.from_numpy(pad_left(seen, max(1, max(len(s) for s in seen))))


def shift_groups(eval_set: EvalSet, min_cases: int = MIN_GROUP_CASES) -> dict[str, np.ndarray]:
    """``{"shift": mask, "stable": mask}`` over the eval set's users, or ``{}`` when either
    group has fewer than ``min_cases`` users (too few for the split to mean anything)."""
    shift = eval_set.shift & eval_set.known
    stable = ~eval_set.shift & eval_set.known
    if shift.sum() < min_cases or stable.sum() < min_cases:
        return {}
    return {"shift": shift, "stable": stable}


MAX_SCORE_ELEMS = 1 << 26  # largest [rows x N] score block held at once (256 MiB in fp32)


def chunk_rows(num_items: int, max_elems: int | None = None) -> int:
    """Rows per score block so that a ``[rows, N + 1]`` block stays under ``max_elems``
    (default :data:`MAX_SCORE_ELEMS`)."""
    return max(1, (max_elems or MAX_SCORE_ELEMS) // (num_items + 1))


def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    item_attrs: list[frozenset[int]] | None = None,
    ks: tuple[int, ...] = (5, 10, 20),
    mask_history: bool = True,
    batch_size: int = 1024,
    per_user: bool = False,
    *,
    mask_scope: str = "full",
    ties: str = "pessimistic",
) -> dict | tuple[dict, PerUser]:
    """Rank every item for every user of ``eval_set`` and average the metrics.

    Every score goes through :func:`recshrink.metrics.rank_scores`: history masked, ties
    against the model, NaN/``+inf`` rows misses (counted in ``nonfinite_users``).

    Args:
        score_fn: Maps left-padded histories ``[B, L]`` to scores ``[B, N + 1]``.
        eval_set: Histories, targets and interest-shift flags.
        item_attrs: Attributes per item id, for interest F1@K (optional); attributes on more
            than half the items are left out (:func:`recshrink.interest.informative_attrs`).
        ks: Cut-offs.
        mask_history: Exclude items already in the history from the ranking.
        batch_size: Users per scoring call (fewer where ``[users, N + 1]`` scores would pass
            :data:`MAX_SCORE_ELEMS`, for large catalogues).
        per_user: Also return every user's target rank and top items (:class:`PerUser`).
        mask_scope: ``"full"`` masks the whole history before the target; ``"window"`` only
            the last ``max_len`` items the model sees.
        ties: ``"pessimistic"`` (a tied target ranks behind every item it ties with) or
            ``"expected"`` (the expected rank under random tie-breaking).

    Returns:
        The metrics of :class:`recshrink.metrics.MetricAccumulator` for all users, with nested
        ``"shift"`` and ``"stable"`` dicts where both groups have at least
        ``MIN_GROUP_CASES`` users; with ``per_user``, the pair ``(metrics, PerUser)``.
    """
    attrs = informative_attrs(item_attrs)[0] if item_attrs else item_attrs
    acc = MetricAccumulator(ks=tuple(ks), item_attrs=attrs)
    all_ranks = np.zeros(len(eval_set.targets),
                         dtype=np.int64 if ties == "pessimistic" else np.float64)  # [U]
    groups_all = shift_groups(eval_set)
    kmax = max(ks)
    all_top = torch.zeros(len(eval_set.targets), kmax, dtype=torch.long)  # [U, K], user order
    order = np.argsort([int((h != 0).sum()) for h in eval_set.histories], kind="stable")
    if len(order):  # one user tells the catalogue size: every [users, N + 1] block stays bounded
        probe = score_fn(torch.from_numpy(trim_padding(eval_set.histories[order[:1]])))
        batch_size = min(batch_size, chunk_rows(probe.shape[1] - 1))
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        hist = trim_padding(eval_set.histories[rows])
        hist_t = torch.from_numpy(hist)
        targets = torch.from_numpy(eval_set.targets[rows])
        excl = exclusion(eval_set, rows, hist, mask_history, mask_scope)
        ranked = rank_scores(score_fn(hist_t), targets, excl, ties=ties)  # [B, N+1], [B], [B]
        all_ranks[rows] = ranked.ranks.cpu().numpy()
        scores = ranked.scores
        topk = torch.topk(scores, min(kmax, scores.shape[1] - 1), dim=-1).indices  # [B, K]
        if topk.shape[1] < kmax:  # tiny catalogue: pad with the padding id (no item)
            topk = torch.nn.functional.pad(topk, (0, kmax - topk.shape[1]))
        all_top[torch.from_numpy(rows)] = topk
        groups = {name: m[rows] for name, m in groups_all.items()} or None
        acc.update(ranked.ranks, topk_ids=topk, targets=targets, groups=groups,
                   nonfinite=ranked.nonfinite.cpu().numpy())  # fmt: skip
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
    if len(histories) == 0:
        return 0.0
    a = top_ids(score_a, histories, k, mask_history, batch_size)
    b = top_ids(score_b, histories, k, mask_history, batch_size)
    return round(topk_overlap(a, b), 6)

"""Full-ranking evaluation metrics for sequential recommenders.

Evaluation is leave-one-out: every user has exactly one target item, and the model scores
*all* items. Item ids are ``1..N``; id ``0`` is padding. Scores are a float tensor of shape
``[B, N+1]`` whose column 0 belongs to the padding id and is never ranked.

The pipeline is::

    scores = mask_scores(scores, history)          # [B, N+1], -inf where excluded
    ranks = target_ranks(scores, targets)          # [B], 0-based
    metrics = ranking_metrics(ranks, ks=(5, 10, 20))

or, across batches, :class:`MetricAccumulator`. Interest-level metrics and interest-shift labels
are in :mod:`recshrink.interest`; comparisons of a model with a reference on the same users
(paired bootstrap, retention, top-K overlap) are in :mod:`recshrink.compare`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from recshrink.interest import interest_summary, per_user_interest, to_2d_int_array, to_int_array

__all__ = [
    "MetricAccumulator", "mask_scores", "nonfinite_rows", "per_user_metric", "rank_scores",
    "ranking_metrics", "target_ranks", "TIES", "Ranked",
]  # fmt: skip

_RANK_KEYS = ("hr", "ndcg", "precision", "recall", "f1", "mrr")


def mask_scores(scores: Tensor, history: Tensor | None, mask_history: bool = True) -> Tensor:
    """Excludes the padding id and (optionally) already-seen items from ranking.

    Column 0 (padding) is always set to ``-inf``. With ``mask_history``, every item id
    present in a row of ``history`` is set to ``-inf`` in that row. The target is *not*
    protected: if the target also occurs in the history it is masked as well and thus
    counts as a miss at every K. This matches the S3-Rec evaluation code.

    Args:
        scores: Float scores over all items, shape ``[B, N+1]``.
        history: Item ids seen by each user, shape ``[B, L]``, int64, left-padded
            with 0. May be ``None`` when ``mask_history`` is False.
        mask_history: Whether to mask the history items.

    Returns:
        A new tensor of the same shape and dtype as ``scores``; the input is unchanged.

    Raises:
        ValueError: On bad shapes/dtypes or history ids outside ``[0, N]``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, N+1], got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got {scores.dtype}")
    out = scores.clone()  # [B, N+1]
    out[:, 0] = float("-inf")
    if not mask_history:
        return out
    if history is None:
        raise ValueError("history is required when mask_history=True")
    if history.dim() != 2 or history.shape[0] != scores.shape[0]:
        raise ValueError(
            f"history must be [B, L] with B={scores.shape[0]}, got {tuple(history.shape)}"
        )
    if history.numel() == 0:
        return out
    index = history.to(device=out.device, dtype=torch.long)  # [B, L]
    if int(index.min()) < 0 or int(index.max()) >= out.shape[1]:
        raise ValueError(f"history ids must lie in [0, {out.shape[1] - 1}]")
    # Padding zeros scatter onto column 0, which is already -inf.
    out.scatter_(1, index, float("-inf"))
    return out


TIES = ("pessimistic", "expected")


def nonfinite_rows(scores: Tensor) -> Tensor:
    """``[B]`` bool: rows whose scores over the real items (ids ``1..N``) hold a NaN or ``+inf``.

    ``-inf`` is not flagged: it is how masked items (and items a top-K-only output did not
    return) are written, and a target at ``-inf`` is a miss anyway.
    """
    real = scores[:, 1:]  # [B, N]
    return ~(real.amax(dim=1) < float("inf")) if real.shape[1] else real.new_zeros(len(real)).bool()


def target_ranks(scores: Tensor, targets: Tensor, ties: str = "pessimistic") -> Tensor:
    """0-based rank of each target among all real items; ties and non-finite scores never help.

    With ``g`` items (ids ``1..N``; column 0 is never counted) scoring strictly above the
    target and ``e`` *other* items scoring equal to it:

    - ``ties="pessimistic"`` (default): rank ``g + e``, the target behind every item it ties
      with. A constant-score model ranks every target at ``N - 1``.
    - ``ties="expected"``: rank ``g + e / 2`` (float), the expected rank under random
      tie-breaking; metrics are then taken at that rank.

    A row that is non-finite (:func:`nonfinite_rows`: NaN or ``+inf`` anywhere) and a target at
    ``-inf`` (e.g. masked because it was in the history) get rank ``N``, a miss at any cutoff.

    Args:
        scores: Float scores, shape ``[B, N+1]`` (usually from :func:`mask_scores`).
        targets: Target item ids in ``[1, N]``, shape ``[B]``.
        ties: ``"pessimistic"`` or ``"expected"``.

    Returns:
        ``[B]`` on the device of ``scores``: int64 for ``pessimistic``, float64 for ``expected``.

    Raises:
        ValueError: On bad shapes, target ids outside ``[1, N]`` or an unknown tie policy.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, N+1], got shape {tuple(scores.shape)}")
    num_items = scores.shape[1] - 1
    dtype = torch.long if ties == "pessimistic" else torch.float64
    tgt = targets.to(device=scores.device, dtype=torch.long).reshape(-1)  # [B]
    if tgt.shape[0] != scores.shape[0]:
        raise ValueError(f"targets must have {scores.shape[0]} entries, got {tgt.shape[0]}")
    if tgt.numel() == 0:
        return torch.zeros(0, dtype=dtype, device=scores.device)
    if int(tgt.min()) < 1 or int(tgt.max()) > num_items:
        raise ValueError(f"target ids must lie in [1, {num_items}]")
    target_score = scores.gather(1, tgt.unsqueeze(1))  # [B, 1]
    real = scores[:, 1:]  # [B, N]
    at_least = (real >= target_score).sum(dim=1, dtype=torch.int32).long()  # [B] (int32: 4x faster)
    if ties == "pessimistic":  # g + e: one ">=" pass, less the target itself
        ranks = at_least - 1
    else:
        greater = (real > target_score).sum(dim=1, dtype=torch.int32).long()  # [B]
        equal = at_least - greater - 1  # [B], other items tied with the target
        ranks = greater.double() + equal.double() / 2.0
    missed = torch.isneginf(target_score.squeeze(1)) | nonfinite_rows(scores)  # [B]
    return torch.where(missed, torch.full_like(ranks, num_items), ranks).to(dtype)


class Ranked(NamedTuple):
    """What :func:`rank_scores` gives for one batch.

    Attributes:
        scores: ``[B, N+1]`` the masked scores (``-inf`` at padding and excluded items), for
            top-K lists.
        ranks: ``[B]`` target ranks (:func:`target_ranks`).
        nonfinite: ``[B]`` bool, rows with a NaN or ``+inf`` score (counted as misses).
    """

    scores: Tensor
    ranks: Tensor
    nonfinite: Tensor


def rank_scores(
    scores: Tensor,
    targets: Tensor,
    exclude: Tensor | None,
    *,
    ties: str = "pessimistic",
) -> Ranked:
    """The one ranking and masking helper every scoring path goes through.

    Masks the padding column and the ``exclude`` ids of each row (the user's history: the whole
    history or the model's window, as the caller chose), flags non-finite rows and ranks the
    targets with the tie policy.

    Args:
        scores: Raw scores over all items, ``[B, N+1]``.
        targets: Target ids in ``[1, N]``, ``[B]``.
        exclude: Item ids to mask per row, ``[B, S]`` int64 padded with 0, or None (only the
            padding column is masked).
        ties: ``"pessimistic"`` (default) or ``"expected"``; see :func:`target_ranks`.

    Returns:
        :class:`Ranked` (masked scores, ranks, non-finite flags).
    """
    masked = mask_scores(scores, exclude, mask_history=exclude is not None)  # [B, N+1]
    bad = nonfinite_rows(scores)  # [B], on the raw scores: a masked NaN still flags the row
    ranks = target_ranks(masked, targets, ties)
    return Ranked(masked, torch.where(bad, torch.full_like(ranks, scores.shape[1] - 1), ranks), bad)


def _to_rank_array(values: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """Target ranks as a 1-D float64 array: integers (pessimistic ties) or halves (expected)."""
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    arr = arr.reshape(-1).astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("ranks must be finite")
    return arr


def _per_user_ranking(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user ranking values at cutoff ``k`` (arrays of shape ``[B]``)."""
    hit = (ranks < k).astype(np.float64)  # [B]
    inv_rank = 1.0 / (ranks + 1.0)  # [B]
    return {
        "hr": hit,
        "ndcg": hit / np.log2(ranks + 2.0),
        "precision": hit / k,
        "recall": hit,
        # P = hit/K, R = hit  ->  2PR/(P+R) = 2*hit/(K+1); 0 when no hit.
        "f1": 2.0 * hit / (k + 1),
        "mrr": hit * inv_rank,
    }


def ranking_metrics(
    ranks: Tensor | np.ndarray | Sequence[int],
    ks: Sequence[int] = (5, 10, 20),
    num_items: int | None = None,
) -> dict[str, float]:
    """Averages leave-one-out ranking metrics over users.

    For each cutoff K: ``hr@K`` (1 if rank < K), ``ndcg@K`` (``1/log2(rank+2)`` on a
    hit), ``precision@K`` (hit/K), ``recall@K`` (= hit, one target), ``f1@K``
    (``2*hit/(K+1)``) and ``mrr@K`` (``1/(rank+1)`` on a hit). Also ``mrr`` (no cutoff)
    and ``count`` (number of users, an int). Empty input gives zeros and count 0.

    Args:
        ranks: 0-based target ranks, shape ``[B]`` (see :func:`target_ranks`): integers, or
            halves under expected tie-breaking.
        ks: Cutoffs, each >= 1.
        num_items: If given, ranks are checked to lie in ``[0, num_items]``.

    Returns:
        Dict of metric name to float (``count`` is an int).

    Raises:
        ValueError: On negative/out-of-range ranks or a cutoff < 1.
    """
    r = _to_rank_array(ranks)  # [B]
    _check_ks(ks)
    if r.size and r.min() < 0:
        raise ValueError("ranks must be >= 0")
    if num_items is not None and r.size and r.max() > num_items:
        raise ValueError(f"ranks must be <= num_items={num_items}")
    out: dict[str, float] = {}
    for k in ks:
        per_user = _per_user_ranking(r, int(k))
        for key in _RANK_KEYS:
            out[f"{key}@{k}"] = float(per_user[key].mean()) if r.size else 0.0
    out["mrr"] = float((1.0 / (r + 1.0)).mean()) if r.size else 0.0
    out["count"] = int(r.size)
    return out


def per_user_metric(ranks: Tensor | np.ndarray | Sequence[int], name: str, k: int) -> np.ndarray:
    """Per-user values ``[B]`` of one ranking metric (``hr``, ``ndcg``, ``precision``,
    ``recall``, ``f1`` or ``mrr``) at cutoff ``k``, from 0-based target ranks."""
    if name not in _RANK_KEYS:
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(_RANK_KEYS)}")
    _check_ks((k,))
    return _per_user_ranking(_to_rank_array(ranks), int(k))[name]


def _check_ks(ks: Sequence[int]) -> None:
    if len(ks) == 0:
        raise ValueError("ks must not be empty")
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cutoffs must be integers >= 1, got {k!r}")


class MetricAccumulator:
    """Accumulates per-user evaluation values across batches.

    Args:
        ks: Cutoffs for all metrics.
        item_attrs: Optional attribute table; with it, and ``topk_ids``/``targets``
            given to :meth:`update`, interest metrics are computed at every K.

    Example:
        >>> acc = MetricAccumulator(ks=(1, 2))
        >>> acc.update(torch.tensor([0, 3]))
        >>> acc.result()["hr@1"]
        0.5
    """

    def __init__(
        self,
        ks: Sequence[int] = (5, 10, 20),
        item_attrs: Sequence[frozenset[int]] | None = None,
    ) -> None:
        _check_ks(ks)
        self.ks = tuple(int(k) for k in ks)
        self.item_attrs = item_attrs
        self._ranks: list[np.ndarray] = []
        # Per K: lists of per-user (precision, recall, f1, valid) arrays.
        self._interest: dict[int, list[tuple[np.ndarray, ...]]] = {k: [] for k in self.ks}
        self._with_interest: bool | None = None
        self._groups: dict[str, list[np.ndarray]] = {}
        self._nonfinite: list[np.ndarray] = []
        self._n = 0

    def update(
        self,
        ranks: Tensor | np.ndarray | Sequence[int],
        topk_ids: Tensor | np.ndarray | None = None,
        targets: Tensor | np.ndarray | Sequence[int] | None = None,
        groups: Mapping[str, np.ndarray | Sequence[bool]] | None = None,
        nonfinite: np.ndarray | Tensor | Sequence[bool] | None = None,
    ) -> None:
        """Adds one batch of users.

        Args:
            ranks: 0-based target ranks, shape ``[B]``.
            topk_ids: Top ``max(ks)`` item ids, shape ``[B, >=max(ks)]``; needed with
                ``item_attrs`` for interest metrics (give it in every batch or none).
            targets: Target ids, shape ``[B]``; required with ``topk_ids``.
            groups: Optional name -> bool mask of shape ``[B]`` selecting users of a
                subgroup (e.g. ``{"shift": m, "stable": ~m}``). A group missing from a
                batch contains none of that batch's users.
            nonfinite: Optional ``[B]`` bool, rows whose scores were non-finite (already
                misses in ``ranks``); counted as ``nonfinite_users``.

        Raises:
            ValueError: On inconsistent shapes, or interest inputs given in some
                batches but not others.
        """
        r = _to_rank_array(ranks)  # [B]
        if r.size and r.min() < 0:
            raise ValueError("ranks must be >= 0")
        b = r.shape[0]
        bad = np.zeros(b, dtype=bool) if nonfinite is None else np.asarray(nonfinite, bool).reshape(-1)
        if bad.shape[0] != b:
            raise ValueError(f"nonfinite has {bad.shape[0]} entries, expected {b}")
        with_interest = self.item_attrs is not None and topk_ids is not None
        if self._with_interest is not None and self._with_interest != with_interest:
            raise ValueError("topk_ids must be given in every update or in none")
        masks: dict[str, np.ndarray] = {}
        for name, mask in (groups or {}).items():
            if name in ("mrr", "count", "interest_count", "nonfinite_users") or "@" in name:
                raise ValueError(f"group name {name!r} clashes with a metric key")
            m = np.asarray(mask, dtype=bool).reshape(-1)
            if m.shape[0] != b:
                raise ValueError(f"group {name!r} mask has {m.shape[0]} entries, expected {b}")
            masks[name] = m
        if with_interest:
            if targets is None:
                raise ValueError("targets are required with topk_ids")
            top = to_2d_int_array(topk_ids, "topk_ids")  # [B, >=max(ks)]
            tgt = to_int_array(targets, "targets")  # [B]
            if top.shape[0] != b or tgt.shape[0] != b:
                raise ValueError("ranks, topk_ids and targets must have the same batch size")
            if top.shape[1] < max(self.ks):
                raise ValueError(f"topk_ids needs >= {max(self.ks)} columns, got {top.shape[1]}")
            assert self.item_attrs is not None
            interest = {k: per_user_interest(top[:, :k], tgt, self.item_attrs) for k in self.ks}
        # Commit only after validation succeeded.
        self._with_interest = with_interest
        for name in masks:
            if name not in self._groups:
                self._groups[name] = [np.zeros(self._n, dtype=bool)]
        for name, lst in self._groups.items():
            lst.append(masks.get(name, np.zeros(b, dtype=bool)))
        if with_interest:
            for k in self.ks:
                self._interest[k].append(interest[k])
        self._ranks.append(r)
        self._nonfinite.append(bad)
        self._n += b

    def _summarize(self, select: np.ndarray | None) -> dict[str, Any]:
        ranks = np.concatenate(self._ranks) if self._ranks else np.zeros(0)
        bad = np.concatenate(self._nonfinite) if self._nonfinite else np.zeros(0, dtype=bool)
        if select is not None:
            ranks, bad = ranks[select], bad[select]
        out: dict[str, Any] = ranking_metrics(ranks, self.ks)
        out["nonfinite_users"] = int(bad.sum())
        if self._with_interest:
            count = 0
            for k in self.ks:
                prec, rec, f1, valid = (np.concatenate(parts) for parts in zip(*self._interest[k]))
                if select is not None:
                    prec, rec, f1, valid = prec[select], rec[select], f1[select], valid[select]
                out.update(interest_summary(k, prec, rec, f1, valid))
                count = int(valid.sum())
            out["interest_count"] = count
        return out

    def result(self) -> dict[str, Any]:
        """Metrics over all users so far, plus a nested dict per group.

        Returns:
            :func:`ranking_metrics` keys over all users, ``nonfinite_users`` (rows with NaN or
            ``+inf`` scores, counted as misses); when interest inputs were
            given, ``interest_precision@K``/``interest_recall@K``/``interest_f1@K`` for
            every K and ``interest_count``; and for each group name a dict with the
            same keys computed on that group's users only. Values are not rounded.
        """
        out = self._summarize(None)
        for name, parts in self._groups.items():
            out[name] = self._summarize(np.concatenate(parts))
        return out

"""recshrink's leave-one-out ranking metrics checked against an independent IR evaluator.

The peer is trec_eval, the TREC reference evaluator, through ``pytrec_eval-terrier`` (its C code
compiled as a Python extension), driven by ``ir-measures`` (a dev dependency; the test is skipped
only when it cannot be imported). Each user is one query with a single relevant document, its
target; the run holds the user's real, *unmasked* items (column 0 and the ``exclude`` ids are left
out of the run, never given as documents). The measures compared, per user and averaged:

- ``hr@K``: ``Success@K`` (trec_eval ``success_K``).
- ``ndcg@K``: ``nDCG@K`` (``ndcg_cut_K``; with one relevant item the ideal DCG is 1, so it is
  ``1/log2(rank+2)`` on a hit, as in recshrink).
- ``precision@K``, ``recall@K``: ``P@K``, ``R@K`` (``P_K`` is hit/K even for runs shorter than K).
- ``f1@K``: the harmonic mean of the peer's ``P@K`` and ``R@K`` (no trec_eval measure).
- ``mrr``: ``RR`` (``recip_rank``), equal wherever the target is ranked. On a miss (masked target,
  non-finite row) recshrink's rank N gives an uncut reciprocal rank of ``1/(N+1)``, trec_eval 0:
  a known difference, pinned by the tests.
- ``mrr@K``: ``RR@K`` from ir-measures' ``msmarco`` provider (MS MARCO's MRR@K script), since
  trec_eval has no cutoff for ``recip_rank``; checked to equal ``recip_rank`` where 1/RR <= K.

The tie convention that makes the comparison fair: trec_eval breaks equal scores by document id
(descending), recshrink's default ``ties="pessimistic"`` puts the target behind every item it ties
with. On tie-heavy score matrices the peer is therefore given a run in which the target's score is
lowered by half the row's smallest gap between distinct scores: it then ranks after all the items
it tied with and before everything that scored strictly lower, while the other items keep their
scores. (Half a gap rather than one ulp: pytrec_eval keeps scores at about single precision, so a
one-ulp change in double precision is lost.) Under this run the peer's ranks are the pessimistic
ones. On the raw tied scores the peer's arbitrary tie-break must land between recshrink's
optimistic rank (items strictly greater) and its pessimistic rank, and ``ties="expected"`` is
checked by hand to be the mean of the two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

ir_measures = pytest.importorskip("ir_measures")
pytest.importorskip("pytrec_eval")

from ir_measures import RR, R, P, Success, nDCG  # noqa: E402

from recshrink.metrics import per_user_metric, rank_scores, ranking_metrics  # noqa: E402

PEER = ir_measures.pytrec_eval  # trec_eval, not whichever provider ir-measures would pick
RR_CUT = ir_measures.msmarco  # MS MARCO's MRR@K script: trec_eval has no cutoff for recip_rank
KS = (1, 5, 10, 20)
B, N, S = 200, 50, 8  # users, items, history slots
ATOL = 1e-6

# recshrink metric name -> ir-measures measure at cutoff k.
PEER_OF = {
    "hr": lambda k: Success @ k,
    "ndcg": lambda k: nDCG @ k,
    "mrr": lambda k: RR @ k,
    "precision": lambda k: P @ k,
    "recall": lambda k: R @ k,
}
TREC_MEASURES = [PEER_OF[n](k) for n in ("hr", "ndcg", "precision", "recall") for k in KS] + [RR]
CUT_MEASURES = [RR @ k for k in KS]


def make_case(
    seed: int, tie_levels: str | None = None, target_in_history: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores [B, N+1] float32, targets [B], exclude [B, S])`` for one seed.

    ``tie_levels``: None (continuous normal scores, no ties), ``"round1"`` (uniform scores rounded
    to one decimal: 11 levels) or ``"int4"`` (integers 0..3). A third of the users have no history;
    the others mask up to ``S`` items, 0-padded, duplicates allowed. With ``target_in_history``
    some targets are masked too (a miss); otherwise the target is removed from every history.
    """
    g = torch.Generator().manual_seed(seed)
    if tie_levels is None:
        scores = torch.randn(B, N + 1, generator=g)
    elif tie_levels == "round1":
        scores = torch.round(torch.rand(B, N + 1, generator=g), decimals=1)
    elif tie_levels == "int4":
        scores = torch.randint(0, 4, (B, N + 1), generator=g).float()
    else:
        raise ValueError(tie_levels)
    targets = torch.randint(1, N + 1, (B,), generator=g)
    exclude = torch.randint(1, N + 1, (B, S), generator=g)
    exclude = torch.where(torch.rand(B, S, generator=g) < 0.6, exclude, torch.zeros_like(exclude))
    exclude[: B // 3] = 0
    if target_in_history:
        exclude[B // 3 : B // 3 + 5, 0] = targets[B // 3 : B // 3 + 5]  # a few masked targets
    else:
        exclude = torch.where(exclude == targets[:, None], torch.zeros_like(exclude), exclude)
    return scores, targets, exclude


def peer_eval(
    run_scores: np.ndarray, targets: torch.Tensor
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The peer on a run of ``run_scores`` ``[B, N+1]``: ``(aggregated, per-user [B])`` by name.

    Column 0 and every ``-inf`` entry are left out of the run (not given as documents).
    """
    rows = run_scores.shape[0]
    qrels = {f"u{b}": {f"i{int(targets[b])}": 1} for b in range(rows)}
    run = {}
    for b in range(rows):
        ids = np.flatnonzero(np.isfinite(run_scores[b, 1:])) + 1
        assert ids.size, "every user needs a non-empty run"
        run[f"u{b}"] = {f"i{j}": float(run_scores[b, j]) for j in ids}
    agg: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    for provider, measures in ((PEER, TREC_MEASURES), (RR_CUT, CUT_MEASURES)):
        res = provider.calc(measures, qrels, run)
        agg.update({str(m): float(v) for m, v in res.aggregated.items()})
        values = {str(m): np.full(rows, np.nan) for m in measures}
        for metric in res.per_query:
            values[str(metric.measure)][int(metric.query_id[1:])] = metric.value
        per.update(values)
    assert all(not np.isnan(v).any() for v in per.values()), "peer skipped some users"
    # The two agree where no ties are left (they break ties by document id in opposite orders):
    # MRR@K is trec_eval's recip_rank where the first hit is within K.
    rr = per[str(RR)]
    for k in KS if all(distinct_scores(row) for row in run_scores[:, 1:]) else ():
        cut = np.where(rr * k >= 1 - 1e-12, rr, 0.0)
        np.testing.assert_allclose(per[str(RR @ k)], cut, rtol=0, atol=ATOL)
    return agg, per


def distinct_scores(row: np.ndarray) -> bool:
    """Whether a row's unmasked scores are all different, at the single precision of trec_eval."""
    kept = row[np.isfinite(row)].astype(np.float32)
    return np.unique(kept).size == kept.size


def peer_ranks(per: dict[str, np.ndarray], num_items: int) -> np.ndarray:
    """0-based target ranks from the peer's uncut reciprocal rank; ``num_items`` (a miss) at 0."""
    rr = per[str(RR)]
    return np.where(rr > 0, np.rint(1.0 / np.where(rr > 0, rr, 1.0)) - 1.0, num_items)


def assert_matches_peer(
    ranks: torch.Tensor, agg: dict[str, float], per: dict[str, np.ndarray]
) -> None:
    """recshrink's per-user values and averages from ``ranks`` equal the peer's at every K."""
    ours = ranking_metrics(ranks, KS)
    assert ours["count"] == ranks.shape[0]
    for name, make in PEER_OF.items():
        for k in KS:
            key = str(make(k))
            np.testing.assert_allclose(per_user_metric(ranks, name, k), per[key], rtol=0, atol=ATOL)
            assert ours[f"{name}@{k}"] == pytest.approx(agg[key], abs=ATOL), f"{name}@{k}"
            assert ours[f"{name}@{k}"] == pytest.approx(per[key].mean(), abs=ATOL)
    for k in KS:  # f1 is no trec_eval measure: the harmonic mean of the peer's P@K and R@K
        p, r = per[str(P @ k)], per[str(R @ k)]
        f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
        np.testing.assert_allclose(per_user_metric(ranks, "f1", k), f1, rtol=0, atol=ATOL)
        assert ours[f"f1@{k}"] == pytest.approx(f1.mean(), abs=ATOL)
    # Uncut MRR: equal wherever the target was ranked. A miss (masked target, non-finite row) has
    # recshrink's rank N, so its uncut reciprocal rank is 1/(N+1), where trec_eval, which never
    # saw the target in the run, gives 0. A known difference, pinned here.
    r = ranks.double().numpy()
    miss = r >= N
    rr = per[str(RR)]
    np.testing.assert_allclose(1.0 / (r[~miss] + 1.0), rr[~miss], rtol=0, atol=ATOL)
    assert (rr[miss] == 0).all()
    assert ours["mrr"] == pytest.approx(agg[str(RR)] + miss.sum() / (N + 1) / r.size, abs=ATOL)


def masked_array(ranked_scores: torch.Tensor) -> np.ndarray:
    return ranked_scores.double().numpy()


def pessimistic_run(masked: np.ndarray, targets: torch.Tensor) -> np.ndarray:
    """The peer's run for tied scores: each target lowered by half its row's smallest score gap.

    The target then sits after every item it tied with and before every strictly lower item; the
    other items keep their scores. Masked targets (``-inf``) stay out of the run.
    """
    run = masked.copy()
    for b in range(run.shape[0]):
        t = int(targets[b])
        if not np.isfinite(run[b, t]):
            continue
        finite = np.unique(run[b, 1:][np.isfinite(run[b, 1:])])
        gap = np.diff(finite).min() if finite.size > 1 else 1.0
        run[b, t] -= gap / 2
        others = np.delete(run[b, 1:], t - 1)
        # No new tie, even at the single precision pytrec_eval keeps.
        assert np.float32(run[b, t]) not in others.astype(np.float32)
    return run


def optimistic_ranks(masked: np.ndarray, targets: torch.Tensor) -> np.ndarray:
    """By hand: the number of real items scoring strictly above the target."""
    tgt = targets.numpy()
    t_score = masked[np.arange(masked.shape[0]), tgt]  # [B]
    return (masked[:, 1:] > t_score[:, None]).sum(axis=1).astype(np.float64)


def test_peer_providers_support_the_measures() -> None:
    # ir-measures' trec_eval provider, called directly, silently returns wrong numbers for a
    # measure it does not support (RR@K among them): each measure goes to one that supports it.
    assert all(PEER.supports(m) for m in TREC_MEASURES)
    assert all(RR_CUT.supports(m) for m in CUT_MEASURES)
    assert not PEER.supports(RR @ 10)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_scores_match_trec_eval(seed: int) -> None:
    scores, targets, exclude = make_case(seed)
    ranked = rank_scores(scores, targets, exclude)
    masked = masked_array(ranked.scores)
    assert all(distinct_scores(row) for row in masked[:, 1:])  # continuous scores: no ties
    agg, per = peer_eval(masked, targets)
    assert_matches_peer(ranked.ranks, agg, per)
    np.testing.assert_array_equal(ranked.ranks.numpy(), peer_ranks(per, N))
    # Without ties both policies give the same ranks.
    expected = rank_scores(scores, targets, exclude, ties="expected").ranks
    np.testing.assert_array_equal(expected.numpy(), ranked.ranks.numpy().astype(np.float64))
    # The masked targets are misses for both.
    masked_targets = torch.isneginf(ranked.scores.gather(1, targets[:, None]).squeeze(1))
    assert int(masked_targets.sum()) >= 5
    assert (ranked.ranks[masked_targets] == N).all()
    assert (per[str(RR)][masked_targets.numpy()] == 0).all()
    assert not ranked.nonfinite.any()


@pytest.mark.parametrize("levels", ["round1", "int4"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tied_scores_match_trec_eval_pessimistic(seed: int, levels: str) -> None:
    scores, targets, exclude = make_case(seed, tie_levels=levels, target_in_history=False)
    ranked = rank_scores(scores, targets, exclude)  # pessimistic is the default
    masked = masked_array(ranked.scores)
    opt = optimistic_ranks(masked, targets)
    pes = ranked.ranks.numpy().astype(np.float64)
    assert (pes > opt).mean() > 0.5, "the matrix should be tie-heavy"

    # Peer on the run with each target moved behind its ties: exactly the pessimistic ranks.
    agg, per = peer_eval(pessimistic_run(masked, targets), targets)
    assert_matches_peer(ranked.ranks, agg, per)
    np.testing.assert_array_equal(pes, peer_ranks(per, N))

    # Peer on the raw tied scores: its tie-break by document id lies in [optimistic, pessimistic].
    _, raw = peer_eval(masked, targets)
    raw_ranks = peer_ranks(raw, N)
    assert (opt <= raw_ranks).all() and (raw_ranks <= pes).all()
    assert (raw_ranks < pes).any()  # the tie convention matters on these matrices

    # By hand: expected = (optimistic + pessimistic) / 2, and its metrics are taken at that rank.
    expected = rank_scores(scores, targets, exclude, ties="expected").ranks
    assert expected.dtype == torch.float64
    np.testing.assert_allclose(expected.numpy(), (opt + pes) / 2, rtol=0, atol=ATOL)
    ours = ranking_metrics(expected, KS)
    half = (opt + pes) / 2
    for k in KS:
        hit = half < k
        assert ours[f"hr@{k}"] == pytest.approx(hit.mean(), abs=ATOL)
        assert ours[f"ndcg@{k}"] == pytest.approx((hit / np.log2(half + 2)).mean(), abs=ATOL)
        assert ours[f"mrr@{k}"] == pytest.approx((hit / (half + 1)).mean(), abs=ATOL)


def test_constant_scores_are_at_most_chance() -> None:
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(1, N + 1, (B,), generator=g)
    scores = torch.full((B, N + 1), 0.25)
    ranked = rank_scores(scores, targets, None)
    assert (ranked.ranks == N - 1).all()
    assert not ranked.nonfinite.any()
    hr10 = ranking_metrics(ranked.ranks, (10,))["hr@10"]
    assert hr10 <= 10 / N and hr10 == 0.0
    expected = rank_scores(scores, targets, None, ties="expected").ranks
    assert (expected == (N - 1) / 2).all()
    assert ranking_metrics(expected, (10,))["hr@10"] <= 10 / N
    # The peer agrees once the target goes behind its ties; on the raw run it would not.
    masked = masked_array(ranked.scores)
    agg, per = peer_eval(pessimistic_run(masked, targets), targets)
    assert_matches_peer(ranked.ranks, agg, per)
    _, raw = peer_eval(masked, targets)
    assert raw[str(Success @ 10)].mean() > 10 / N  # id tie-break: high ids always "hit"


def test_nan_rows_are_flagged_and_missed() -> None:
    scores, targets, exclude = make_case(11, target_in_history=False)
    scores = scores.clone()
    scores[0, 5] = float("nan")
    scores[1, :] = float("nan")
    scores[2, int(targets[2])] = float("nan")  # NaN on the target itself
    scores[3, 17] = float("inf")  # +inf is flagged too
    scores[4, 1:] = float("nan")
    # A NaN at a masked item still flags the row (the raw scores are checked).
    hist_row = int(torch.nonzero(exclude[100:].any(dim=1))[0]) + 100
    scores[hist_row, int(exclude[hist_row][exclude[hist_row] > 0][0])] = float("nan")
    nan_rows = [0, 1, 2, 3, 4, hist_row]
    scores[5, 0] = float("nan")  # the padding column is never ranked: not flagged
    scores[6, 7] = float("-inf")  # -inf is how masked items are written: not flagged
    flagged = torch.zeros(B, dtype=torch.bool)
    flagged[nan_rows] = True

    for ties in ("pessimistic", "expected"):
        ranked = rank_scores(scores, targets, exclude, ties=ties)
        assert torch.equal(ranked.nonfinite, flagged)
        assert (ranked.ranks[flagged] == N).all()
        assert ranking_metrics(ranked.ranks[flagged], (10,))["hr@10"] == 0.0

    # The finite rows still match the peer.
    ranked = rank_scores(scores, targets, exclude)
    keep = torch.arange(B)[~flagged]
    masked = masked_array(ranked.scores[keep])
    agg, per = peer_eval(masked, targets[keep])
    assert_matches_peer(ranked.ranks[keep], agg, per)

    # An all-NaN matrix: every row flagged, HR@10 = 0 <= chance.
    ranked = rank_scores(torch.full((B, N + 1), float("nan")), targets, None)
    assert ranked.nonfinite.all()
    assert ranking_metrics(ranked.ranks, (10,))["hr@10"] <= 10 / N


@pytest.mark.parametrize("seed", [0, 1])
def test_masked_items_never_ahead_of_target(seed: int) -> None:
    scores, targets, exclude = make_case(seed, target_in_history=False)
    # Every excluded item would beat the target if it were ranked.
    has = exclude > 0
    top = scores[:, 1:].max(dim=1).values + 1.0  # [B]
    boost = torch.zeros_like(scores).scatter_(1, exclude, 1.0)
    boost[:, 0] = 0.0
    lift = torch.rand(scores.shape, generator=torch.Generator().manual_seed(100 + seed))
    scores = torch.where(boost > 0, top[:, None] + lift, scores)

    ranked = rank_scores(scores, targets, exclude)
    masked = masked_array(ranked.scores)
    assert np.isneginf(masked[:, 0]).all()
    for b in range(B):
        ids = exclude[b][has[b]].numpy()
        assert np.isneginf(masked[b, ids]).all()
        # No excluded id in the top list ahead of the target.
        ahead = torch.topk(ranked.scores[b], int(ranked.ranks[b])).indices.numpy()
        assert not np.isin(ahead, ids).any()

    # Peer on the run without the excluded items: the same ranks and metrics.
    agg, per = peer_eval(masked, targets)
    assert_matches_peer(ranked.ranks, agg, per)
    # Peer on the unmasked run: every distinct excluded item lands ahead of the target.
    unmasked = scores.double().numpy()
    unmasked[:, 0] = -np.inf
    _, raw = peer_eval(unmasked, targets)
    n_excl = np.array([np.unique(exclude[b][has[b]].numpy()).size for b in range(B)])
    assert n_excl.max() > 0
    np.testing.assert_array_equal(peer_ranks(raw, N), ranked.ranks.numpy() + n_excl)

    # A target that is in the history is masked with it: a miss for recshrink and the peer.
    exclude2 = exclude.clone()
    exclude2[:, -1] = targets
    ranked2 = rank_scores(scores, targets, exclude2)
    assert (ranked2.ranks == N).all()
    agg2, per2 = peer_eval(masked_array(ranked2.scores), targets)
    assert_matches_peer(ranked2.ranks, agg2, per2)
    assert agg2[str(RR)] == 0.0

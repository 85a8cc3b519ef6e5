"""Tests for recshrink.metrics; every expected value is computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recshrink.metrics import (
    MetricAccumulator,
    mask_scores,
    nonfinite_rows,
    per_user_metric,
    rank_scores,
    ranking_metrics,
    target_ranks,
)

NEG = float("-inf")

# Hand-made attribute table, index = item id (0 = padding).
ATTRS = [
    frozenset(),  # 0 padding
    frozenset({10}),  # 1
    frozenset({10, 11}),  # 2
    frozenset({12}),  # 3
    frozenset(),  # 4 (no attributes)
    frozenset({11, 13}),  # 5
]


def test_mask_scores_masks_padding_and_history() -> None:
    scores = torch.tensor(
        [[9.0, 0.1, 0.2, 0.3, 0.4, 0.5], [9.0, 0.6, 0.7, 0.8, 0.9, 1.0]]
    )  # [2, 6], N = 5
    history = torch.tensor([[0, 2, 3], [0, 0, 5]])
    out = mask_scores(scores, history)
    expected = torch.tensor(
        [[NEG, 0.1, NEG, NEG, 0.4, 0.5], [NEG, 0.6, 0.7, 0.8, 0.9, NEG]]
    )
    assert torch.equal(out, expected)
    # Input is untouched.
    assert scores[0, 0].item() == 9.0
    assert scores[0, 2].item() == pytest.approx(0.2)

    only_pad = mask_scores(scores, history, mask_history=False)
    assert torch.equal(
        only_pad[0], torch.tensor([NEG, 0.1, 0.2, 0.3, 0.4, 0.5])
    )
    assert torch.equal(only_pad[1], torch.tensor([NEG, 0.6, 0.7, 0.8, 0.9, 1.0]))

    with pytest.raises(ValueError):
        mask_scores(scores, torch.tensor([[6], [0]]))  # id 6 > N = 5


def test_target_in_history_is_a_miss() -> None:
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6, 0.5]])  # [1, 6], N = 5
    history = torch.tensor([[0, 1, 2]])
    masked = mask_scores(scores, history)
    ranks = target_ranks(masked, torch.tensor([1]))
    assert ranks.tolist() == [5]  # rank N
    m = ranking_metrics(ranks, ks=(5,))
    assert m["hr@5"] == 0.0
    assert m["ndcg@5"] == 0.0
    assert m["mrr"] == pytest.approx(1 / 6)
    # Item 3 is the best unmasked item -> rank 0.
    assert target_ranks(masked, torch.tensor([3])).tolist() == [0]


def test_target_ranks_ties_and_padding_column() -> None:
    # Column 0 has the highest score but is never counted, even unmasked.
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.5, 0.2]] * 4)  # [4, 6]
    targets = torch.tensor([2, 4, 3, 1])
    ranks = target_ranks(scores, targets)
    assert ranks.dtype == torch.long
    # 2 and 4 tie at 0.5 -> each ranks behind the other (pessimistic): rank 1; 0.3 is beaten by
    # two 0.5s; 0.1 by four items.
    assert ranks.tolist() == [1, 1, 2, 4]
    expected = target_ranks(scores, targets, ties="expected")
    assert expected.dtype == torch.float64
    assert expected.tolist() == [0.5, 0.5, 2.0, 4.0]  # one tie: half a place behind
    with pytest.raises(ValueError):
        target_ranks(scores, torch.tensor([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="ties"):
        target_ranks(scores, targets, ties="optimistic")


def test_constant_and_nan_scores_cannot_flatter() -> None:
    """Constant scores rank every target last among the N items; a NaN anywhere is a miss."""
    n = 6
    const = torch.zeros(3, n + 1)  # [3, 7]: every item ties
    targets = torch.tensor([1, 4, 6])
    assert target_ranks(const, targets).tolist() == [5, 5, 5]  # N - 1: behind 5 tied items
    assert target_ranks(const, targets, ties="expected").tolist() == [2.5, 2.5, 2.5]
    assert ranking_metrics(target_ranks(const, targets), ks=(5,))["hr@5"] == 0.0
    nan = torch.tensor([[0.0, 0.9, float("nan"), 0.1, 0.2, 0.3, 0.4],   # NaN elsewhere
                        [0.0, float("nan"), 0.5, 0.1, 0.2, 0.3, 0.4],   # NaN target
                        [0.0, 0.1, float("inf"), 0.1, 0.2, 0.3, 0.4],   # +inf elsewhere
                        [0.0, 0.9, float("-inf"), 0.1, 0.2, 0.3, 0.4]])  # -inf: masked, fine
    tg = torch.tensor([1, 1, 1, 1])
    assert target_ranks(nan, tg).tolist() == [6, 6, 6, 0]  # N: a miss at any cutoff
    assert nonfinite_rows(nan).tolist() == [True, True, True, False]
    ranked = rank_scores(nan, tg, torch.tensor([[0, 2]] * 4))
    assert ranked.nonfinite.tolist() == [True, True, True, False]
    assert ranked.ranks.tolist() == [6, 6, 6, 0]
    assert torch.isneginf(ranked.scores[:, [0, 2]]).all()  # padding and excluded ids masked
    acc = MetricAccumulator(ks=(1,))
    acc.update(ranked.ranks, nonfinite=ranked.nonfinite)
    res = acc.result()
    assert res["nonfinite_users"] == 3 and res["hr@1"] == 0.25


def test_fast_ranks_equal_the_two_count_definition() -> None:
    # target_ranks counts ">=" once (pessimistic) and nonfinite_rows takes one row max; both
    # against the definitions written out: g items above, e others tied, NaN/+inf rows missed
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (200, 41), generator=gen).float()  # many ties
    odd = torch.rand(200, 41, generator=gen)
    scores[odd < 0.01] = float("nan")
    scores[(odd >= 0.01) & (odd < 0.02)] = float("inf")
    scores[(odd >= 0.02) & (odd < 0.06)] = NEG
    tg = torch.randint(1, 41, (200,), generator=gen)
    real, t = scores[:, 1:], scores.gather(1, tg[:, None])
    g, e = (real > t).sum(1), (real == t).sum(1) - 1
    bad = (torch.isnan(real) | torch.isposinf(real)).any(1)
    missed = bad | torch.isneginf(t[:, 0])
    assert bad.sum() > 10 and missed.sum() > bad.sum()  # the fixture has every case
    assert torch.equal(nonfinite_rows(scores), bad)
    assert torch.equal(target_ranks(scores, tg), torch.where(missed, 40, g + e))
    expected = torch.where(missed, 40.0, g.double() + e.double() / 2)
    assert torch.equal(target_ranks(scores, tg, ties="expected"), expected.double())


def test_ranking_metrics_by_hand() -> None:
    m = ranking_metrics(torch.tensor([0, 1, 7]), ks=(1, 5))
    assert m["count"] == 3
    assert isinstance(m["count"], int)
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
    assert m["precision@1"] == pytest.approx(1 / 3)
    assert m["precision@5"] == pytest.approx((1 / 5 + 1 / 5 + 0) / 3)
    assert m["f1@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["f1@5"] == pytest.approx((2 / 6 + 2 / 6 + 0) / 3)
    assert m["mrr@1"] == pytest.approx(1 / 3)
    assert m["mrr@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 / 8) / 3)
    expected_keys = {
        f"{name}@{k}"
        for name in ("hr", "ndcg", "precision", "recall", "f1", "mrr")
        for k in (1, 5)
    } | {"mrr", "count"}
    assert set(m) == expected_keys


def test_ranking_metrics_f1_matches_pr_formula() -> None:
    # One hit at K=10: P = 1/10, R = 1 -> 2PR/(P+R) = 2/11.
    m = ranking_metrics(np.array([3]), ks=(10,))
    p, r = 1 / 10, 1.0
    assert m["f1@10"] == pytest.approx(2 * p * r / (p + r))
    assert m["f1@10"] == pytest.approx(2 / 11)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(5))
    assert m["mrr@10"] == pytest.approx(1 / 4)


def test_ranking_metrics_empty_and_num_items() -> None:
    m = ranking_metrics([], ks=(5,))
    assert m["count"] == 0
    assert all(v == 0 for v in m.values())
    assert len(m) == 6 + 2
    assert ranking_metrics([4], ks=(5,), num_items=4)["hr@5"] == 1.0
    with pytest.raises(ValueError):
        ranking_metrics([5], ks=(5,), num_items=4)


def test_end_to_end_pipeline() -> None:
    scores = torch.tensor(
        [
            [5.0, 0.9, 0.1, 0.8, 0.7],  # history {1}; target 3 -> rank 0
            [5.0, 0.2, 0.9, 0.4, 0.4],  # history {}; target 4 ties 3 -> rank 2 (behind it)
            [5.0, 0.3, 0.2, 0.1, 0.9],  # history {4}; target 4 -> masked, rank 4
        ]
    )  # [3, 5], N = 4
    history = torch.tensor([[0, 1], [0, 0], [0, 4]])
    targets = torch.tensor([3, 4, 4])
    ranks = target_ranks(mask_scores(scores, history), targets)
    assert ranks.tolist() == [0, 2, 4]
    m = ranking_metrics(ranks, ks=(1, 2))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@2"] == pytest.approx(1 / 3)  # the tied target is not in the top 2
    assert m["ndcg@2"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)
    # expected ties: the tied target is half a place behind 3, at rank 1.5
    m = ranking_metrics(target_ranks(mask_scores(scores, history), targets, "expected"), ks=(2,))
    assert m["hr@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3.5) + 0) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 2.5 + 1 / 5) / 3)


def test_accumulator_groups_and_interest() -> None:
    acc = MetricAccumulator(ks=(1, 2), item_attrs=ATTRS)
    acc.update(
        torch.tensor([0, 1]),
        topk_ids=torch.tensor([[1, 3], [4, 4]]),
        targets=torch.tensor([2, 5]),
        groups={"shift": np.array([True, False])},
    )
    acc.update(
        np.array([3]),
        topk_ids=np.array([[2, 5]]),
        targets=np.array([5]),
        groups={"shift": np.array([False]), "stable": np.array([True])},
    )
    res = acc.result()
    # All users: ranks [0, 1, 3].
    assert res["count"] == 3
    assert res["hr@1"] == pytest.approx(1 / 3)
    assert res["hr@2"] == pytest.approx(2 / 3)
    assert res["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
    assert res["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    # Interest @1 (first column only):
    # user0 A={10} T={10,11}: P=1 R=1/2 F=2/3; user1 A={} T={11,13}: 0;
    # user2 A={10,11} T={11,13}: P=1/2 R=1/2 F=1/2.
    assert res["interest_precision@1"] == pytest.approx((1 + 0 + 1 / 2) / 3)
    assert res["interest_recall@1"] == pytest.approx((1 / 2 + 0 + 1 / 2) / 3)
    assert res["interest_f1@1"] == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)
    # Interest @2: same as test_interest_f1_by_hand users 0..2.
    assert res["interest_precision@2"] == pytest.approx((1 / 2 + 0 + 2 / 3) / 3)
    assert res["interest_recall@2"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert res["interest_f1@2"] == pytest.approx((1 / 2 + 0 + 4 / 5) / 3)
    assert res["interest_count"] == 3

    # Group "shift": user0 only (rank 0).
    shift = res["shift"]
    assert shift["count"] == 1
    assert shift["hr@1"] == 1.0
    assert shift["mrr"] == 1.0
    assert shift["interest_f1@1"] == pytest.approx(2 / 3)
    assert shift["interest_precision@2"] == pytest.approx(1 / 2)
    assert shift["interest_count"] == 1
    # Group "stable" first appears in batch 2: only user2 (rank 3).
    stable = res["stable"]
    assert stable["count"] == 1
    assert stable["hr@2"] == 0.0
    assert stable["mrr"] == pytest.approx(1 / 4)
    assert stable["interest_precision@2"] == pytest.approx(2 / 3)
    assert stable["interest_f1@2"] == pytest.approx(4 / 5)


def test_accumulator_without_interest_and_errors() -> None:
    acc = MetricAccumulator(ks=(5,))
    empty = acc.result()
    assert empty["count"] == 0
    assert empty["hr@5"] == 0.0
    acc.update([0, 9])
    acc.update(torch.tensor([2]), groups={"g": [False]})
    res = acc.result()
    assert res["count"] == 3
    assert res["hr@5"] == pytest.approx(2 / 3)
    assert res["ndcg@5"] == pytest.approx((1 + 0 + 1 / math.log2(4)) / 3)
    assert "interest_count" not in res
    # Group with no users -> zeros.
    assert res["g"]["count"] == 0
    assert res["g"]["hr@5"] == 0.0
    with pytest.raises(ValueError):
        acc.update([1], groups={"g": [True, False]})  # wrong length
    assert acc.result()["count"] == 3  # failed update left no trace

    acc2 = MetricAccumulator(ks=(1,), item_attrs=ATTRS)
    acc2.update([0], topk_ids=[[2]], targets=[2])
    assert acc2.result()["interest_f1@1"] == 1.0
    with pytest.raises(ValueError):
        acc2.update([0])  # topk_ids missing after having been given
    with pytest.raises(ValueError):
        MetricAccumulator(ks=(1, 3), item_attrs=ATTRS).update(
            [0], topk_ids=[[1, 2]], targets=[2]
        )  # needs max(ks) = 3 columns


def test_per_user_metric_by_hand() -> None:
    ranks = [0, 2, 15]
    assert per_user_metric(ranks, "ndcg", 10).tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert per_user_metric(ranks, "hr", 10).tolist() == [1.0, 1.0, 0.0]
    assert per_user_metric(ranks, "f1", 10).tolist() == pytest.approx([2 / 11, 2 / 11, 0.0])
    with pytest.raises(ValueError, match="unknown metric"):
        per_user_metric(ranks, "auc", 10)

"""Tests for recshrink.interest; every expected value is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recshrink.interest import (
    interest_f1,
    interest_shift_mask,
    is_interest_shift,
    informative_attrs,
)

# Hand-made attribute table (as in tests/test_metrics.py), index = item id (0 = padding).
ATTRS = [
    frozenset(),  # 0 padding
    frozenset({10}),  # 1
    frozenset({10, 11}),  # 2
    frozenset({12}),  # 3
    frozenset(),  # 4 (no attributes)
    frozenset({11, 13}),  # 5
]


def test_informative_attrs_drops_root_categories() -> None:
    """An attribute on more than half the items is dropped; the rest stay, sets per item."""
    table = [frozenset(), frozenset({1, 7}), frozenset({1, 8}), frozenset({1}), frozenset({1, 7}),
             frozenset()]  # attribute 1 on 4 of 5 items, 7 on 2 of 5
    kept, dropped = informative_attrs(table)
    assert dropped == [1]
    assert kept == [frozenset(), frozenset({7}), frozenset({8}), frozenset(), frozenset({7}),
                    frozenset()]
    same, none = informative_attrs(ATTRS)
    assert none == [] and same == ATTRS


def test_interest_f1_by_hand() -> None:
    topk = torch.tensor([[1, 3], [4, 4], [2, 5], [1, 2]])
    targets = torch.tensor([2, 5, 5, 4])
    out = interest_f1(topk, targets, ATTRS)
    # user0: A={10,12}, T={10,11}: P=1/2, R=1/2, F=1/2
    # user1: A={},      T={11,13}: P=0,   R=0,   F=0
    # user2: A={10,11,13}, T={11,13}: P=2/3, R=1, F=4/5
    # user3: target 4 has no attributes -> excluded
    assert out["interest_count"] == 3
    assert out["interest_precision@2"] == pytest.approx((1 / 2 + 0 + 2 / 3) / 3)
    assert out["interest_recall@2"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert out["interest_f1@2"] == pytest.approx((1 / 2 + 0 + 4 / 5) / 3)
    assert set(out) == {
        "interest_precision@2",
        "interest_recall@2",
        "interest_f1@2",
        "interest_count",
    }


def test_interest_f1_no_valid_users() -> None:
    out = interest_f1(np.array([[1, 2]]), np.array([4]), ATTRS)
    assert out == {
        "interest_precision@2": 0.0,
        "interest_recall@2": 0.0,
        "interest_f1@2": 0.0,
        "interest_count": 0,
    }


def test_is_interest_shift_cases() -> None:
    # Recent {10} | {12} vs target {11, 13}: disjoint -> shift.
    assert is_interest_shift([0, 0, 1, 3], 5, ATTRS) is True
    # Recent {10, 12} vs target {10, 11}: overlap -> stable.
    assert is_interest_shift([0, 1, 3], 2, ATTRS) is False
    # Target without attributes -> unknown.
    assert is_interest_shift([0, 1, 3], 4, ATTRS) is None
    # Window items without attributes -> unknown.
    assert is_interest_shift([0, 0, 4], 2, ATTRS) is None
    assert is_interest_shift([0, 0, 0], 2, ATTRS) is None
    # Window: last 2 items are [3, 3] -> {12}, disjoint with {11, 13}.
    assert is_interest_shift([2, 3, 3], 5, ATTRS, window=2) is True
    # Window 3 includes item 2 ({10, 11}) -> overlap on 11.
    assert is_interest_shift([2, 3, 3], 5, ATTRS, window=3) is False
    # Zeros inside the history are skipped: last 2 real items are [2, 3].
    assert is_interest_shift(torch.tensor([2, 0, 3]), 5, ATTRS, window=2) is False
    with pytest.raises(ValueError):
        is_interest_shift([1], 2, ATTRS, window=0)


def test_interest_shift_mask() -> None:
    histories = torch.tensor([[0, 1, 3], [0, 1, 3], [0, 0, 4]])
    targets = torch.tensor([5, 2, 2])
    shift, known = interest_shift_mask(histories, targets, ATTRS)
    assert shift.dtype == np.bool_ and known.dtype == np.bool_
    assert shift.tolist() == [True, False, False]
    assert known.tolist() == [True, True, False]
    stable = known & ~shift
    assert stable.tolist() == [False, True, False]

"""Tests for recshrink.compare; every expected value is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from recshrink.compare import paired_bootstrap


def test_paired_bootstrap_by_hand() -> None:
    b = np.array([1.0, 0.0, 0.5, 0.25])
    # a model exactly twice the reference on every user: ratio 2 in every resample
    out = paired_bootstrap(2 * b, b, resamples=500)
    assert out["ratio"] == out["ratio_low"] == out["ratio_high"] == pytest.approx(2.0)
    assert out["diff"] == pytest.approx(0.4375)
    assert out["users"] == 4 and out["resamples"] == 500 and out["level"] == 0.95
    # identical models: zero difference, no width
    same = paired_bootstrap(b, b, resamples=200)
    assert same["diff_low"] == same["diff_high"] == 0.0 and same["ratio"] == 1.0
    # one user of two differs by 1: resampled differences lie in {0, 0.5, 1}, mean 0.5
    out = paired_bootstrap([1.0, 1.0], [0.0, 1.0], resamples=4000, level=0.2)
    assert out["diff"] == 0.5 and out["diff_low"] == 0.5 and out["diff_high"] == 0.5
    out = paired_bootstrap([1.0, 1.0], [0.0, 1.0], resamples=4000, level=0.9)
    assert out["diff_low"] == 0.0 and out["diff_high"] == 1.0  # P(0) = P(1) = 1/4 > 5%
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-zero mean"):
        paired_bootstrap([1.0, 2.0], [0.0, 0.0])

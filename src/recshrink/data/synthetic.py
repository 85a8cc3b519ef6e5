"""Deterministic synthetic data with evolving interests.

Each user has a few long-term interest categories and a current short-term interest. At every
step the user may switch short-term interest (mostly to another long-term category, sometimes to
a random one); within an interest, the next item usually follows the previous one along a
category-specific chain, otherwise it is drawn by popularity. The last (test) step is a switch for
a known fraction of users, and the generator records which: that is the ground truth for the
interest-shift / interest-stable report.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from recshrink.data.dataset import InteractionData


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SyntheticConfig:
    """Size and dynamics of the synthetic data.

    Attributes:
        users: Number of users.
        items: Number of items (split evenly over categories).
        categories: Number of interest categories.
        min_len: Shortest user sequence (>= 3 so every user is evaluated).
        max_len: Longest user sequence.
        long_term: Long-term interest categories per user.
        switch_prob: Probability of switching short-term interest at a step.
        chain_prob: Probability that the next item follows the previous one's chain.
        test_shift_frac: Fraction of users whose test step is an interest switch.
        seed: Random seed; the same config always gives the same data.
        popularity: ``"category"`` (Zipf-like weights inside each category, every category
            equally popular) or ``"zipf"`` (a realistic catalogue: one Zipf law over the whole
            catalogue with exponent ``zipf_exponent``, so a few head items take much of the
            traffic and most items sit in a long tail; draws cost O(log N), for 1M items).
        zipf_exponent: Exponent s of the catalogue-wide law (weight of rank r is r^-s).
        items_per_category: With ``"zipf"``: categories scale with the catalogue, N / this
            (overrides ``categories``).
    """

    users: int = 2000
    items: int = 500
    categories: int = 20
    min_len: int = 5
    max_len: int = 30
    long_term: int = 3
    switch_prob: float = 0.15
    chain_prob: float = 0.6
    test_shift_frac: float = 0.3
    seed: int = 0
    popularity: Literal["category", "zipf"] = "category"
    zipf_exponent: float = 1.0
    items_per_category: int | None = None

    def __post_init__(self) -> None:
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if self.items_per_category is not None:
            if self.popularity != "zipf":
                raise ValueError("items_per_category goes with popularity 'zipf'")
            if not 1 <= self.items_per_category <= self.items // 2:
                raise ValueError(f"items_per_category must be in 1..items/2, got "
                                 f"{self.items_per_category}")  # fmt: skip
        if self.users < 1 or self.items < 2 or self.categories < 2:
            raise ValueError("synthetic data needs users >= 1, items >= 2, categories >= 2")
        if self.items < self.categories:
            raise ValueError(f"items ({self.items}) must be >= categories ({self.categories})")
        if not 3 <= self.min_len <= self.max_len:
            raise ValueError(f"need 3 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        cats = (max(2, self.items // self.items_per_category) if self.items_per_category
                else self.categories)  # fmt: skip
        if not 1 <= self.long_term <= cats:
            raise ValueError(f"long_term must be in 1..categories ({cats}), got {self.long_term}")
        for name in ("switch_prob", "chain_prob", "test_shift_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")


def synthetic(config: SyntheticConfig | None = None) -> InteractionData:
    """Generate the synthetic data set described in the module docstring.

    Args:
        config: Sizes and dynamics; defaults to :class:`SyntheticConfig()`.

    Returns:
        An :class:`InteractionData` with one category per item as attributes and the
        ground-truth ``shift`` flag of every user's test step.
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    n, c = cfg.items, cfg.categories
    if cfg.items_per_category:
        c = max(2, n // cfg.items_per_category)
    item_cat = np.arange(n) % c  # item i (0-based) belongs to category i % C
    members = [np.flatnonzero(item_cat == k) for k in range(c)]
    if cfg.popularity == "zipf":  # one law over the catalogue: rank r has weight r^-s
        weight = (1.0 + rng.permutation(n)) ** -cfg.zipf_exponent  # [N]
        cum = [np.cumsum(weight[m]) for m in members]
        pop = None
    else:  # popularity within a category: Zipf-like weights over a random order
        pop = []
        for m in members:
            w = 1.0 / (1.0 + rng.permutation(len(m)))
            pop.append(w / w.sum())
    # a successor for every item inside its category (a random cycle per category)
    succ = np.empty(n, dtype=np.int64)
    for m in members:
        cyc = rng.permutation(m)
        succ[cyc] = np.roll(cyc, -1)

    def draw(cat: int, prev: int | None) -> int:
        if prev is not None and item_cat[prev] == cat and rng.random() < cfg.chain_prob:
            return int(succ[prev])
        if pop is None:  # O(log N): inverse CDF over the category's cumulative weights
            k = int(np.searchsorted(cum[cat], rng.random() * cum[cat][-1], side="right"))
            return int(members[cat][min(k, len(members[cat]) - 1)])
        return int(rng.choice(members[cat], p=pop[cat]))

    def switch(cur: int, long_term: np.ndarray) -> int:
        others = long_term[long_term != cur]
        if len(others) and rng.random() < 0.8:
            return int(rng.choice(others))
        choices = np.delete(np.arange(c), cur)
        return int(rng.choice(choices))

    sequences, shift = [], np.zeros(cfg.users, dtype=bool)
    for u in range(cfg.users):
        length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        long_term = rng.choice(c, size=cfg.long_term, replace=False)
        cur = int(rng.choice(long_term))
        seq: list[int] = []
        for t in range(length):
            last = t == length - 1
            if last:
                do_switch = rng.random() < cfg.test_shift_frac
            else:
                do_switch = t > 0 and rng.random() < cfg.switch_prob
            if do_switch:
                cur = switch(cur, long_term)
            seq.append(draw(cur, seq[-1] if seq else None))
        shift[u] = bool(do_switch)
        sequences.append(np.array(seq, dtype=np.int64) + 1)  # internal ids start at 1

    attrs = [frozenset()] + [frozenset({int(item_cat[i])}) for i in range(n)]
    return InteractionData(
        name="synthetic",
        sequences=sequences,
        user_ids=[str(u) for u in range(cfg.users)],
        item_ids=[str(i + 1) for i in range(n)],
        item_attrs=attrs,
        shift=shift,
        source="synthetic",
        attr_names=[f"category{k}" for k in range(c)],
    )

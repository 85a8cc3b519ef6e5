import numpy as np
import pytest
import torch

from recshrink.data.dataset import InteractionData
from recshrink.data.split import bucket_batches, leave_one_out, pad_left, training_pairs
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.errors import DataError


def _data(seqs, attrs=None):
    n = max(max(s) for s in seqs)
    return InteractionData(
        name="t", sequences=[np.array(s, dtype=np.int64) for s in seqs],
        user_ids=[str(i) for i in range(len(seqs))], item_ids=[str(i + 1) for i in range(n)],
        item_attrs=attrs, source="t.txt",
    )


def test_pad_left():
    out = pad_left([np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)], 2)
    assert out.tolist() == [[2, 3], [0, 4], [0, 0]]


def test_leave_one_out():
    d = _data([[1, 2, 3, 4, 5], [6, 7], [2, 3, 4]])
    sp = leave_one_out(d, max_len=3)
    assert [s.tolist() for s in sp.train] == [[1, 2, 3], [6, 7], [2]]
    assert sp.valid.targets.tolist() == [4, 3] and sp.test.targets.tolist() == [5, 4]
    assert sp.valid.histories.tolist() == [[1, 2, 3], [0, 0, 2]]
    assert sp.test.histories.tolist() == [[2, 3, 4], [0, 2, 3]]
    assert sp.test.users.tolist() == [0, 2]
    assert not sp.test.known.any()  # no attributes, no ground truth
    assert [s.tolist() for s in training_pairs(sp.train, 2)] == [[1, 2, 3], [6, 7]]


def test_training_windows_cover_every_transition_once():
    wins = training_pairs([np.arange(1, 9), np.array([5])], 3)
    assert [w.tolist() for w in wins] == [[5, 6, 7, 8], [2, 3, 4, 5], [1, 2]]
    pairs = sorted((int(a), int(b)) for w in wins for a, b in zip(w[:-1], w[1:]))
    assert pairs == [(i, i + 1) for i in range(1, 8)]


def test_shift_from_attributes():
    attrs = [frozenset(), frozenset({0}), frozenset({0}), frozenset({1}), frozenset()]
    d = _data([[1, 2, 1, 3], [1, 2, 1, 2], [1, 2, 1, 4]], attrs)
    sp = leave_one_out(d, max_len=5, shift_window=2)
    assert sp.test.shift.tolist() == [True, False, False]
    assert sp.test.known.tolist() == [True, True, False]


def test_no_eval_users():
    with pytest.raises(DataError, match="t.txt: no user has 3 or more items"):
        leave_one_out(_data([[1, 2], [3]]), 5)


def test_bucket_batches_cover_everything_once():
    seqs = [np.arange(1, n + 2) for n in [1, 5, 2, 5, 3, 1, 4]]
    batches = bucket_batches(seqs, 3, np.random.default_rng(0))
    seen = sorted(i for b in batches for i in b["index"].tolist())
    assert seen == list(range(7))
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape
        width = b["inputs"].shape[1]
        assert width == max(len(seqs[i]) - 1 for i in b["index"].tolist())
        for row, i in enumerate(b["index"].tolist()):
            s = seqs[i]
            assert b["inputs"][row, width - len(s) + 1 :].tolist() == s[:-1].tolist()
            assert b["targets"][row, width - len(s) + 1 :].tolist() == s[1:].tolist()
    # two ranks: disjoint halves with the same number of batches
    r0 = bucket_batches(seqs, 2, np.random.default_rng(1), 0, 2)
    r1 = bucket_batches(seqs, 2, np.random.default_rng(1), 1, 2)
    assert len(r0) == len(r1) == 2
    i0 = {i for b in r0 for i in b["index"].tolist()}
    i1 = {i for b in r1 for i in b["index"].tolist()}
    assert not i0 & i1


def test_synthetic_is_deterministic_and_records_shift():
    cfg = SyntheticConfig(users=300, items=100, categories=10, seed=3)
    a, b = synthetic(cfg), synthetic(cfg)
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert a.fingerprint() == b.fingerprint()
    assert a.num_users == 300 and a.num_items == 100
    lengths = [len(s) for s in a.sequences]
    assert min(lengths) >= cfg.min_len and max(lengths) <= cfg.max_len
    assert all(s.min() >= 1 and s.max() <= 100 for s in a.sequences)
    # about test_shift_frac of users shift at the test step, and a shift changes category
    assert 0.2 < a.shift.mean() < 0.4
    cat = lambda i: next(iter(a.item_attrs[i]))  # noqa: E731
    for s, sh in zip(a.sequences, a.shift):
        if sh:
            assert cat(s[-1]) != cat(s[-2])
    sp = leave_one_out(a, 20)
    assert sp.test.known.all() and np.array_equal(sp.test.shift, a.shift)
    assert synthetic(SyntheticConfig(users=300, items=100, categories=10, seed=4)).fingerprint() \
        != a.fingerprint()


def test_synthetic_zipf_catalogue_has_a_long_tail_and_scaled_categories():
    cfg = SyntheticConfig(users=2000, items=20_000, popularity="zipf", items_per_category=500,
                          chain_prob=0.0, seed=1)  # fmt: skip
    d = synthetic(cfg)
    assert len(d.attr_names) == 40 and d.num_items == 20_000  # 20,000 / 500 categories
    counts = np.bincount(np.concatenate(d.sequences), minlength=20_001)[1:]
    top = np.sort(counts)[::-1]
    # one Zipf law over the catalogue: the top 1% of items take a large share, most items few
    assert top[:200].sum() / counts.sum() > 0.35
    assert (counts <= 1).mean() > 0.6
    assert all(np.array_equal(x, y) for x, y in zip(d.sequences, synthetic(cfg).sequences))
    flat = synthetic(SyntheticConfig(users=2000, items=20_000, categories=40, chain_prob=0.0,
                                     seed=1))  # fmt: skip
    flat_counts = np.sort(np.bincount(np.concatenate(flat.sequences), minlength=20_001)[1:])[::-1]
    assert flat_counts[:200].sum() < top[:200].sum()
    with pytest.raises(ValueError, match="items_per_category goes with popularity 'zipf'"):
        SyntheticConfig(items_per_category=10)
    with pytest.raises(ValueError, match="long_term must be in 1..categories"):
        SyntheticConfig(items=100, popularity="zipf", items_per_category=50, long_term=3)


def test_synthetic_config_validation():
    with pytest.raises(ValueError, match="min_len"):
        SyntheticConfig(min_len=2)
    with pytest.raises(ValueError):
        SyntheticConfig(items=5, categories=10)


def test_root_category_on_every_item_is_left_out_of_the_shift_split():
    """An attribute that every item carries (a root category) would make every case "share an
    attribute" with its history: it is dropped, and the split is decided on the others."""
    rng = np.random.default_rng(0)
    n_items, n_cats = 40, 4
    cat = {i: i % n_cats for i in range(1, n_items + 1)}
    root = 99
    attrs = [frozenset()] + [frozenset({cat[i], root}) for i in range(1, n_items + 1)]
    seqs = [rng.integers(1, n_items + 1, size=12).tolist() for _ in range(400)]
    sp = leave_one_out(_data(seqs, attrs), max_len=10, shift_window=2)
    assert sp.dropped_attrs == [root]
    # by hand on the category alone: a shift when the target's category is in neither of the
    # last two history items
    hand = [cat[s[-1]] not in {cat[s[-2]], cat[s[-3]]} for s in seqs]
    assert sp.test.known.all()
    assert sp.test.shift.tolist() == hand and 0 < sum(hand) < len(hand)
    # with the root kept (the old rule), no case at all would be a shift
    from recshrink.interest import interest_shift_mask

    shift_root, _ = interest_shift_mask(sp.test.histories, sp.test.targets, attrs, window=2)
    assert not shift_root.any()
    # the full history (not only the last max_len) is what evaluation masks
    assert [len(s) for s in sp.test.seen] == [11] * len(seqs)
    assert sp.test.seen[0].tolist() == seqs[0][:-1]


def test_too_few_shift_cases_are_reported_not_printed_as_zeros():
    from recshrink.entries import protocol_entry
    from recshrink.recipe import EvalSpec
    from recshrink.train.evaluate import evaluate, shift_groups

    attrs = [frozenset()] + [frozenset({1}) if i <= 20 else frozenset({2}) for i in range(1, 41)]
    seqs = [[1, 2, 3, 4, 5]] * 50 + [[1, 2, 3, 4, 30]] * 3  # 3 shift cases, 50 stable
    d = _data(seqs, attrs)
    sp = leave_one_out(d, max_len=4, shift_window=2)
    assert int((sp.test.shift & sp.test.known).sum()) == 3
    assert shift_groups(sp.test) == {}
    proto = protocol_entry(EvalSpec().kwargs(), d, sp, 4, 2)
    assert proto["shift_cases"] == 3 and proto["stable_cases"] == 50
    assert "too few cases" in proto["shift_split"]
    assert proto["attrs_dropped"]["ids"] == [] and proto["ties"] == "pessimistic"
    assert proto["mask_scope"] == "full" and proto["users"] == {"valid": 53, "test": 53}
    m = evaluate(lambda h: torch.zeros(len(h), 41), sp.test, attrs)
    assert "shift" not in m and "stable" not in m
    assert m["hr@10"] == 0.0 and m["nonfinite_users"] == 0  # constant scores: no hit

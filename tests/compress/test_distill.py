import importlib
import math

import numpy as np
import pytest
import torch

from recshrink.compress.distill import (
    DistillConfig, alignment, distill_fit, init_items_from_teacher, kd_kl, negative_clash,
    rank_weights, ranking_kd, tail_bias,
)  # fmt: skip
from recshrink.compress.teacher_cache import build_teacher_cache, cache_batch_hook
from recshrink.data.split import bucket_batches, leave_one_out, training_pairs
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.compare import topk_overlap
from recshrink.models import build_model
from recshrink.train import TrainConfig, fit


def test_kd_kl_by_hand():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert math.isclose(kd_kl(s, t, 1.0).item(), expected, rel_tol=1e-6)
    # temperature 2: teacher probs from [log3/2, 0], scaled by T^2 = 4
    pt = torch.softmax(torch.tensor([math.log(3.0) / 2, 0.0]), 0)
    expected2 = 4 * float((pt * (pt.log() - math.log(0.5))).sum())
    assert math.isclose(kd_kl(s, t, 2.0).item(), expected2, rel_tol=1e-5)  # float32
    # an excluded (-inf) teacher candidate adds nothing
    s3 = torch.tensor([[0.0, 0.0, 5.0]])
    t3 = torch.tensor([[math.log(3.0), 0.0, float("-inf")]])
    ps = torch.softmax(s3[0], 0)
    expected3 = 0.75 * math.log(0.75 / ps[0]) + 0.25 * math.log(0.25 / ps[1])
    assert math.isclose(kd_kl(s3, t3, 1.0).item(), expected3, rel_tol=1e-5)


def test_kd_kl_gradient_is_softmax_minus_teacher_probs():
    # d/ds T^2 KL(pt || softmax(s/T)) = T (softmax(s/T) - pt), averaged over the P rows
    s = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, -1.0], [2.0, float("-inf"), 0.0]])
    kd_kl(s, t, 2.0).backward()
    expected = 2.0 * (torch.softmax(s.detach() / 2, -1) - torch.softmax(t / 2, -1)) / 2
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_tail_bias_by_hand():
    # N = 6, row top-M = {1, 2}; negatives 2 (one of the row's top items: dropped), 3, 3, 5
    bias = tail_bias(torch.tensor([[1, 2], [4, 6]]), torch.tensor([2, 3, 3, 5]), 6)
    w = math.log(4 / 3)  # each of the 3 kept negatives stands for (6 - 2) / 3 items
    assert bias[0, 0].item() == -1e9
    assert torch.allclose(bias[0, 1:], torch.full((3,), w))
    assert torch.allclose(bias[1], torch.full((4,), math.log(4 / 4)))  # nothing dropped


def test_weighted_tail_kd_equals_full_catalogue_kd_on_a_flat_tail():
    # items outside the top-M share one logit: the weighted subset KL is the full KL exactly
    n, m, t = 50, 3, 2.0
    top = torch.tensor([[7, 1, 30]])
    tl, sl = torch.full((1, n), -1.0), torch.full((1, n), 0.5)  # [1, N] items 1..N
    tl[0, top[0] - 1], sl[0, top[0] - 1] = torch.tensor([2.0, 1.5, 0.0]), torch.tensor([0.3, 1.0, -0.2])
    full = kd_kl(sl, tl, t)
    negs = torch.tensor([5, 1, 12, 12, 44, 30])  # two of them are top items
    bias = t * tail_bias(top, negs, n)
    sub_s = torch.cat([sl[:, top[0] - 1], sl[:, negs - 1] + bias], -1)
    sub_t = torch.cat([tl[:, top[0] - 1], tl[:, negs - 1] + bias], -1)
    assert math.isclose(kd_kl(sub_s, sub_t, t).item(), full.item(), rel_tol=1e-5)
    plain = kd_kl(torch.cat([sl[:, top[0] - 1], sl[:, negs - 1]], -1),
                  torch.cat([tl[:, top[0] - 1], tl[:, negs - 1]], -1), t)
    assert abs(plain.item() - full.item()) > 0.05  # counting each negative once is biased


def test_negative_clash_marks_positives_among_sampled_negatives():
    """Ranking KD drops a shared negative that is one of the row's top-K positives (every copy of
    it: negatives are drawn with replacement)."""
    clash = negative_clash(torch.tensor([[1, 2], [4, 6]]), torch.tensor([2, 3, 3, 5, 2]), 6)
    assert clash.tolist() == [[True, False, False, False, True], [False] * 5]
    # masked to -inf, a clashing negative adds nothing to the softmax
    masked = torch.tensor([[0.5, 0.0]]).masked_fill(torch.tensor([[True, False]]), float("-inf"))
    assert ranking_kd(torch.tensor([[1.0]]), masked, torch.tensor([1.0])).item() == pytest.approx(
        math.log(1 + math.exp(-1.0)))


def test_ranking_kd_by_hand():
    w = rank_weights(2, 1.0)
    assert torch.allclose(w, torch.tensor([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]))
    loss = ranking_kd(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0]]), torch.tensor([0.75, 0.25]))
    expected = 0.75 * math.log(1 + math.exp(-1)) + 0.25 * math.log(2)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_alignment_by_hand():
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    assert math.isclose(alignment(s, t, "cosine").item(), 0.5, rel_tol=1e-6)
    assert math.isclose(alignment(s, t, "mse").item(), 0.75, rel_tol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="at least one"):
        DistillConfig(gt_weight=0, kd_weight=0)
    with pytest.raises(ValueError, match="rank_k"):
        DistillConfig(rank_weight=1, rank_k=20, top_m=10)
    assert DistillConfig(rank_weight=1, init_items="pca").losses() == [
        "ground_truth", "logit_kd", "ranking_kd", "init_items_pca"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = synthetic(SyntheticConfig(users=600, items=80, categories=8, max_len=15, seed=2))
    split = leave_one_out(data, 15)
    torch.manual_seed(0)
    teacher = build_model("sasrec", data.num_items, dim=32, layers=1, heads=2, max_len=15,
                          dropout=0.1)
    fit(teacher, split, TrainConfig(epochs=10, batch_size=64, lr=5e-3, loss="ce", patience=10),
        tmp_path_factory.mktemp("teacher"), progress=False)
    return data, split, teacher.eval()


def test_cache_rows_match_teacher(trained):
    data, split, teacher = trained
    windows = training_pairs(split.train, 15)
    cache = build_teacher_cache(teacher, windows, top_m=5, batch_size=7)
    batch = bucket_batches(windows, 16, np.random.default_rng(0))[0]
    batch = cache_batch_hook(cache, data.num_items, 4)(batch, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        h = teacher.forward_all(batch["inputs"])[batch["targets"] > 0]
        ids = torch.topk(teacher.score_vectors(h), 5).indices
    assert torch.allclose(batch["t_vec"], h, atol=2e-2)
    assert (batch["t_ids"] == ids).float().mean() > 0.95
    assert batch["kd_negatives"].shape == (4,)


def test_cache_top_m_is_built_in_bounded_score_blocks(trained, monkeypatch):
    import recshrink.compress.teacher_cache as tc
    metrics = importlib.import_module("recshrink.train.evaluate")

    data, split, teacher = trained
    windows = training_pairs(split.train, 15)[:40]
    whole = build_teacher_cache(teacher, windows, top_m=5)
    n = data.num_items + 1
    assert metrics.chunk_rows(data.num_items, 3 * n) == 3 and metrics.chunk_rows(10**6, 10) == 1
    widths = []
    real = teacher.score_vectors

    def spy(h):
        widths.append(h.shape[0])
        return real(h)

    monkeypatch.setattr(metrics, "MAX_SCORE_ELEMS", 3 * n)  # at most 3 rows of N + 1 scores at once
    monkeypatch.setattr(teacher, "score_vectors", spy)
    with torch.inference_mode():
        v, i = tc.top_m_chunked(teacher.score_vectors, torch.randn(10, 32), 5, data.num_items,
                                max_elems=3 * n)  # fmt: skip
    assert widths == [3, 3, 3, 1] and v.shape == i.shape == (10, 5)
    blocked = build_teacher_cache(teacher, windows, top_m=5)
    assert max(widths[4:]) <= 3  # the default block size followed the patched limit
    assert torch.equal(blocked["top_ids"], whole["top_ids"])
    assert torch.equal(blocked["top_logits"], whole["top_logits"])


def test_cache_top_m_through_an_hnsw_index():
    pytest.importorskip("faiss")
    # an untrained teacher over 5,000 items: the index has real work to do
    data = synthetic(SyntheticConfig(users=120, items=5000, categories=10, max_len=12, seed=3))
    windows = training_pairs(leave_one_out(data, 12).train, 12)
    torch.manual_seed(0)
    teacher = build_model("sasrec", data.num_items, dim=16, layers=1, heads=2, max_len=12).eval()
    exact = build_teacher_cache(teacher, windows, top_m=20)
    hnsw = build_teacher_cache(teacher, windows, top_m=20, search="hnsw")
    assert torch.equal(hnsw["vectors"], exact["vectors"]) and hnsw["top_ids"].min() >= 1
    overlap = topk_overlap(hnsw["top_ids"].long(), exact["top_ids"].long())
    assert overlap > 0.95, overlap
    # the recall recorded from 512 sampled positions agrees with the whole cache's
    assert abs(float(hnsw["search_recall"][0]) - overlap) < 0.03
    # the cached logits are the teacher's own scores of the returned items
    with torch.inference_mode():
        seq = torch.from_numpy(np.asarray(windows[0][:-1]))[None]  # [1, L]
        s = teacher.score_vectors(teacher.forward_all(seq)[0])  # [L, N + 1]
    rows = hnsw["top_ids"][: len(windows[0]) - 1].long()  # window 0 is first in the cache
    assert torch.allclose(hnsw["top_logits"][: len(rows)].float(), s.gather(1, rows), atol=1e-2)
    assert torch.all(hnsw["top_logits"][:, :-1] >= hnsw["top_logits"][:, 1:])  # best first


def test_hnsw_cache_refuses_a_teacher_that_is_not_an_inner_product(trained, monkeypatch):
    pytest.importorskip("faiss")
    from recshrink.compress.distill import _scores_only
    from recshrink.errors import RecshrinkError

    data, split, teacher = trained
    real = teacher.score_vectors
    monkeypatch.setattr(teacher, "score_vectors", lambda h: real(h) + 1.0)  # an item bias
    with pytest.raises(RecshrinkError, match="hnsw needs a teacher that scores by inner product"):
        build_teacher_cache(teacher, training_pairs(split.train, 15)[:5], top_m=5, search="hnsw")
    with pytest.raises(RecshrinkError, match="cache_search: hnsw needs the teacher's user vectors"):
        _scores_only(DistillConfig(cache_search="hnsw"))


def test_distill_with_an_hnsw_cache_records_its_recall(trained, tmp_path):
    pytest.importorskip("faiss")
    data, split, teacher = trained
    cfg = TrainConfig(epochs=1, batch_size=64, loss="sampled", num_negatives=16)
    runs = {}
    for search in ("exact", "hnsw"):
        torch.manual_seed(0)
        s = build_model("gru", data.num_items, dim=8, max_len=15)
        _, runs[search] = distill_fit(teacher, s, split, cfg, DistillConfig(top_m=10, cache_search=search),
                                      tmp_path / search, cache_dir=tmp_path / "cache", progress=False)
    assert "cache_search_recall" not in runs["exact"]
    assert runs["hnsw"]["cache_search"] == "hnsw" and runs["hnsw"]["cache_search_recall"] >= 0.99
    assert not runs["hnsw"]["cache_reused"]  # its own cache file, not the exact one
    assert len(list((tmp_path / "cache").glob("teacher-*.safetensors"))) == 2


def test_pca_init_keeps_neighbours(trained):
    data, _, teacher = trained
    student = build_model("gru", data.num_items, dim=8, max_len=15)
    init_items_from_teacher(student, teacher, "pca")
    e = student.item_table().detach()
    assert torch.all(e[0] == 0) and e.shape == (data.num_items + 1, 8)
    assert math.isclose(e[1:].norm(dim=-1).mean().item(), 1.0, rel_tol=0.2)


def test_distilled_student_agrees_more_with_teacher(trained, tmp_path):
    data, split, teacher = trained
    hist = torch.from_numpy(split.test.histories)
    with torch.inference_mode():
        t_top = teacher.recommend(hist, 10)[1]
    cfg = TrainConfig(epochs=8, batch_size=64, lr=5e-3, loss="ce", patience=8)

    def student():
        torch.manual_seed(0)
        return build_model("gru", data.num_items, dim=12, max_len=15)

    alone = student()
    fit(alone, split, cfg, tmp_path / "alone", progress=False)
    kd = student()
    res, summary = distill_fit(teacher, kd, split, cfg, DistillConfig(kd_scope="full", temperature=2.0,
                                                                   init_items="none"),
                           tmp_path / "kd", cache_dir=tmp_path / "cache", progress=False)
    assert summary["losses"] == ["ground_truth", "logit_kd"] and summary["cache_reused"] is False
    with torch.inference_mode():
        a = topk_overlap(alone.eval().recommend(hist, 10)[1], t_top)
        b = topk_overlap(kd.eval().recommend(hist, 10)[1], t_top)
    assert b > a + 0.08, (a, b)  # measured: 0.56 alone, 0.72 distilled


def test_all_losses_together_and_cache_reuse(trained, tmp_path):
    data, split, teacher = trained
    cfg = TrainConfig(epochs=1, batch_size=64, loss="sampled", num_negatives=16)
    dc = DistillConfig(top_m=20, kd_negatives=30, rank_weight=0.2, align_weight=0.1,
                       align_positions="last", init_items="pca")
    for i, reused in enumerate([False, True]):
        torch.manual_seed(0)
        s = build_model("cnn", data.num_items, dim=8, dilations=(1, 2), max_len=15)
        res, summary = distill_fit(teacher, s, split, cfg, dc, tmp_path / f"w{i}",
                               cache_dir=tmp_path / "cache", progress=False)
        assert summary["cache_reused"] is reused
        assert summary["losses"] == ["ground_truth", "logit_kd", "ranking_kd", "alignment",
                                     "init_items_pca"]
        assert math.isfinite(res.history[0]["loss"]) and res.history[0]["loss"] > 0


def test_topk_overlap():
    a = torch.tensor([[1, 2, 3], [4, 5, 6]])
    b = torch.tensor([[3, 2, 9], [7, 8, 9]])
    assert math.isclose(topk_overlap(a, b), (2 / 3 + 0) / 2, rel_tol=1e-6)

"""A teacher known by its last-position scores alone: any module, any padding convention."""

from __future__ import annotations

import pytest
import torch

from recshrink.compress.distill import DistillConfig, distill_fit
from recshrink.compress.teacher_cache import build_prefix_cache, build_teacher_cache
from recshrink.data.split import training_pairs
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.errors import RecshrinkError
from recshrink.models import build_model
from recshrink.teachers.protocol import teacher_from_module
from recshrink.train.config import TrainConfig

N, L = 30, 8


def _native():
    torch.manual_seed(0)
    return build_model("sasrec", N, dim=16, layers=1, heads=2, max_len=L).eval()


class RightPadded(torch.nn.Module):
    """RecBole's convention: ``forward(item_seq, item_seq_len)``, right-padded, ids shifted by 1."""

    def __init__(self, native):
        super().__init__()
        self.native = native

    def forward(self, item_seq, item_seq_len):
        left = torch.zeros_like(item_seq)
        for i, n in enumerate(item_seq_len.tolist()):
            if n:
                left[i, -n:] = item_seq[i, :n] - 1  # back to the native ids
        return self.native.scores(left)


def test_module_conventions_give_the_native_scores():
    native = _native()
    seq = torch.tensor([[0, 0, 0, 0, 0, 3, 9, 4], [5, 1, 2, 8, 7, 6, 3, 2], [0] * 7 + [11]])
    with torch.no_grad():
        want = native.scores(seq)[:, 1:]
    rb = teacher_from_module(RightPadded(native), N, L, padding="right", call="seq_len",
                             id_offset=1)  # fmt: skip
    assert torch.allclose(rb.scores(seq)[:, 1:], want, atol=1e-6)
    plain = teacher_from_module(lambda s: native.scores(s)[:, 1:], N, L, pad_column=False)
    assert torch.allclose(plain.scores(seq)[:, 1:], want, atol=1e-6)
    assert rb.scores(seq)[:, 0].isneginf().all()
    assert rb.digest() == teacher_from_module(RightPadded(native), N, L, padding="right",
                                              call="seq_len", id_offset=1).digest()


def test_prefix_expansion_cache_equals_the_native_cache():
    data = synthetic(SyntheticConfig(users=40, items=N, categories=3, min_len=3, max_len=L))
    windows = training_pairs(data.split(L).train, L)
    torch.manual_seed(1)  # a GRU reads a prefix the same alone or inside its window (SASRec's
    native = build_model("gru", N, dim=16, max_len=L).eval()  # end-aligned positions do not)
    full = build_teacher_cache(native, windows, top_m=5)
    pref = build_prefix_cache(teacher_from_module(native.scores, N, L), windows, top_m=5)
    assert torch.equal(full["offsets"], pref["offsets"]) and pref["vectors"].shape[1] == 0
    assert torch.equal(full["top_ids"], pref["top_ids"])  # every position, scored as a prefix
    assert torch.allclose(full["top_logits"].float(), pref["top_logits"].float(), atol=2e-2)


def test_a_scores_only_teacher_distils_with_top_m_kd(tmp_path):
    torch.set_num_threads(1)
    data = synthetic(SyntheticConfig(users=60, items=N, categories=3, min_len=3, max_len=L))
    split = data.split(L)
    teacher = teacher_from_module(_native().scores, N, L)
    torch.manual_seed(0)
    student = build_model("gru", N, dim=8, max_len=L)
    cfg = TrainConfig(epochs=1, batch_size=32, num_negatives=8)
    res, info = distill_fit(teacher, student, split, cfg, DistillConfig(top_m=5, kd_negatives=8, rank_k=5,
                            rank_weight=0.2), tmp_path / "w", progress=False)  # fmt: skip
    assert res.epochs == 1 and info["cache_positions"] > 0
    with pytest.raises(RecshrinkError, match="align_weight: 0.1 needs the teacher's user vectors"):
        distill_fit(teacher, student, split, cfg, DistillConfig(align_weight=0.1),
                    tmp_path / "w2", progress=False)  # fmt: skip


def test_a_module_with_the_wrong_signature_is_one_line():
    with pytest.raises(RecshrinkError, match="calling it as 'seq_len' with left-padded"):
        teacher_from_module(lambda s: s, N, L, call="seq_len")
    with pytest.raises(RecshrinkError, match=r"returned \(2, 8\) for 2 histories"):
        teacher_from_module(lambda s: s.float(), N, L)


def test_the_public_api_distils_from_any_module(tmp_path):
    import recshrink

    torch.set_num_threads(1)
    data = recshrink.synthetic(users=60, items=N, categories=3, min_len=3, max_len=L)
    native = _native()
    teacher = recshrink.teacher_from_module(RightPadded(native), N, L, padding="right",
                                            call="seq_len", id_offset=1)  # fmt: skip
    res = recshrink.distill(teacher, data, "gru_small", out=tmp_path / "s", max_len=L,
                            config=recshrink.TrainConfig(epochs=1, num_negatives=8),
                            kd=recshrink.DistillConfig(top_m=5, rank_k=5, kd_negatives=8))
    assert res.steps[0]["teacher"] == "RightPadded"
    assert res.summary["losses"] == ["ground_truth", "logit_kd"]  # no PCA init: no item table
    assert res.summary["epochs"] == 1 and (tmp_path / "s" / "model.safetensors").is_file()

"""SASRec attention runs on ``F.scaled_dot_product_attention``: it must match the hand-written
attention it replaced (kept here only as the reference)."""

import math

import pytest
import torch
import torch.nn.functional as F

from recshrink.models import sasrec
from recshrink.models.sasrec import CausalSelfAttention

N = 60


def reference_attention(self, x, mask):
    """The pre-SDPA ``CausalSelfAttention.forward``, verbatim."""
    b, l, _ = x.shape
    hd = self.q.out_features // self.heads
    v_hd = self.v.out_features // self.heads
    q = self.q(x).view(b, l, self.heads, hd).transpose(1, 2)
    k = self.k(x).view(b, l, self.heads, hd).transpose(1, 2)
    v = self.v(x).view(b, l, self.heads, v_hd).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    att = F.dropout(att, self.dropout, self.training)
    y = (att @ v).transpose(1, 2).reshape(b, l, self.heads * v_hd)
    return self.out(y)


def _seqs(g):
    s = torch.randint(1, N + 1, (9, 12), generator=g)
    lens = [0, 0, 1, 2, 5, 11, 12, 3, 7]  # two fully padded histories
    for i, n in enumerate(lens):
        s[i, : 12 - n] = 0
    return s


def _run(model, seq, reference):
    if not reference:
        return model.forward_all(seq), model.scores(seq)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CausalSelfAttention, "forward", reference_attention)
        return model.forward_all(seq), model.scores(seq)


@pytest.mark.parametrize(
    "kw",
    [dict(dim=32, layers=2, heads=2), dict(dim=48, layers=2, heads=[3, 1], head_dim=16)],
    ids=["base", "pruned-heads"],
)
def test_eval_matches_reference_attention(kw):
    torch.manual_seed(0)
    m = sasrec(N, max_len=12, dropout=0.3, **kw).eval()
    seq = _seqs(torch.Generator().manual_seed(1))
    with torch.no_grad():
        h_new, s_new = _run(m, seq, reference=False)
        h_ref, s_ref = _run(m, seq, reference=True)
    assert torch.isfinite(h_ref).all()  # the old code: a fully padded row attends to itself only
    assert torch.isfinite(h_new).all() and torch.isfinite(s_new[:, 1:]).all()
    assert torch.allclose(h_new, h_ref, atol=1e-5, rtol=0)
    assert torch.allclose(s_new[:, 1:], s_ref[:, 1:], atol=1e-5, rtol=0)
    assert torch.isinf(s_new[:, 0]).all()


def test_training_without_dropout_matches_reference_gradients():
    torch.manual_seed(0)
    m = sasrec(N, dim=32, layers=2, heads=2, max_len=12, dropout=0.0).train()
    seq = _seqs(torch.Generator().manual_seed(2))
    target = torch.randint(0, N, (seq.shape[0],), generator=torch.Generator().manual_seed(3))
    grads = []
    for reference in (False, True):
        m.zero_grad()
        _, s = _run(m, seq, reference)
        F.cross_entropy(s[:, 1:], target).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_state_dict_keys_and_shapes_unchanged():
    m = sasrec(N, dim=16, layers=1, heads=2, max_len=5)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items() if k.startswith("blocks.0.attn")}
    assert shapes == {
        "blocks.0.attn.q.weight": (16, 16), "blocks.0.attn.q.bias": (16,),
        "blocks.0.attn.k.weight": (16, 16), "blocks.0.attn.k.bias": (16,),
        "blocks.0.attn.v.weight": (16, 16), "blocks.0.attn.v.bias": (16,),
        "blocks.0.attn.out.weight": (16, 16), "blocks.0.attn.out.bias": (16,),
    }  # fmt: skip

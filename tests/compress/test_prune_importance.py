"""Pruning importance comes from Torch-Pruning for Linear/Conv/LayerNorm: it must stay the score
recshrink computed by hand before (kept here only as the reference)."""

import pytest
import torch
import torch_pruning as tp
from torch import nn

from recshrink.compress.prune import (
    _dependency_graph, _ensure_rnn_projection, _rnn_scores, _score, group_importance,
    prunable_units,
)  # fmt: skip
from recshrink.models import build_model

N = 40


def reference_importance(group, n, taylor):
    """The pre-library ``group_importance``: squared L2 / |w * g| of weights and biases, summed."""
    total = torch.zeros(n)
    seen = set()
    for dep, _ in group:
        module = dep.target.module
        out = dep.handler.__name__.endswith("out_channels")
        if (id(module), out) in seen:
            continue
        seen.add((id(module), out))
        if isinstance(module, nn.RNNBase):
            s = _rnn_scores(module, out, taylor)
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            w = _score(module.weight, taylor)
            s = w.flatten(1).sum(1) if out else w.transpose(0, 1).flatten(1).sum(1)
            if out and module.bias is not None:
                s = s + _score(module.bias, taylor)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            s = _score(module.weight, taylor) + _score(module.bias, taylor)
        else:
            continue
        if s.numel() == n:
            total += s
    return total


def _probes(arch, kw, targets, grads):
    torch.manual_seed(0)
    m = build_model(arch, N, max_len=8, **kw)
    _ensure_rnn_projection(m)
    dg, rnn_pruner = _dependency_graph(m)
    if grads:
        m.train()
        seq = torch.randint(1, N + 1, (12, 8))
        seq[:3, :4] = 0
        target = torch.randint(0, N, (12,))
        nn.functional.cross_entropy(m.scores(seq)[:, 1:], target).backward()
        m.eval()
    for unit in prunable_units(m, targets):
        if isinstance(unit.root, nn.RNNBase):
            fn = rnn_pruner.prune_out_channels
        elif isinstance(unit.root, nn.Conv1d):
            fn = tp.prune_conv_out_channels
        else:
            fn = tp.prune_linear_out_channels
        n = unit.channels()
        yield unit, n, lambda: dg.get_pruning_group(unit.root, fn, idxs=list(range(n)))


CASES = [
    ("sasrec", dict(dim=16, heads=4, layers=2, ffn_dim=32), ("ffn", "heads")),
    ("cnn", dict(dim=16), ("channels",)),  # Conv1d + LayerNorm members
    ("gru", dict(dim=16), ("hidden",)),  # our RNN scores + the projection's in-channels
    ("lstm", dict(dim=16, hidden=12), ("hidden",)),
]


@pytest.mark.parametrize("taylor", [False, True], ids=["magnitude", "taylor"])
@pytest.mark.parametrize("arch,kw,targets", CASES, ids=[c[0] for c in CASES])
def test_library_importance_equals_reference(arch, kw, targets, taylor):
    for unit, n, probe in _probes(arch, kw, targets, grads=taylor):
        new, ref = group_importance(probe(), n, taylor), reference_importance(probe(), n, taylor)
        assert new.shape == (n,) and new.dtype == torch.float32
        assert torch.allclose(new, ref, rtol=1e-5, atol=0), unit.name
        per_group = lambda s: s.reshape(-1, unit.group).sum(1)  # noqa: E731
        assert torch.equal(torch.argsort(per_group(new)), torch.argsort(per_group(ref))), unit.name


def test_taylor_without_gradients_scores_zero_and_leaves_grads_unset():
    kw = dict(dim=8, heads=2, layers=1)
    for _, n, probe in _probes("sasrec", kw, ("ffn", "heads"), grads=False):
        assert torch.equal(group_importance(probe(), n, True), torch.zeros(n))
    # the zeros lent to the library are taken back
    m = build_model("sasrec", N, dim=8, heads=2, layers=1, max_len=8)
    dg, _ = _dependency_graph(m)
    fc1 = m.blocks[0].ffn.fc1
    group = dg.get_pruning_group(fc1, tp.prune_linear_out_channels, idxs=list(range(32)))
    group_importance(group, 32, True)
    assert all(p.grad is None for p in m.parameters())

import pytest
import torch
from torch import nn

from recshrink.compress.prune import (
    PruneConfig, prunable_units, prune, structured_prune, taylor_gradients, unit_ratio,
)  # fmt: skip
from recshrink.compress.prune_rnn import RNNHiddenPruner
from recshrink.compress.sparsity import apply_sparsity
from recshrink.data.split import bucket_batches, leave_one_out, training_pairs
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.export.onnx import OnnxExportConfig, export_onnx, validate_onnx
from recshrink.models import build_model
from recshrink.models.io import load_model, save_model
from recshrink.train import TrainConfig
from recshrink.train.trainer import next_item_loss

N = 60


def seqs(b=6, l=9):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, N + 1, (b, l), generator=g)
    x[0, :4] = 0
    return x


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)])
def test_rnn_pruner_keeps_the_kept_units_exactly(cell, layers):
    torch.manual_seed(0)
    rnn = (nn.GRU if cell == "gru" else nn.LSTM)(5, 6, num_layers=layers, batch_first=True)
    ref = [p.detach().clone() for p in rnn.parameters()]
    pruner = RNNHiddenPruner()
    assert pruner.get_out_channels(rnn) == 6 and pruner.get_in_channels(rnn) == 5
    pruner.prune_out_channels(rnn, [1, 4])
    g = 4 if cell == "lstm" else 3
    keep = torch.tensor([0, 2, 3, 5])
    rows = torch.cat([k * 6 + keep for k in range(g)])
    assert rnn.hidden_size == 4
    assert rnn.weight_hh_l0.shape == (g * 4, 4)
    assert torch.equal(rnn.weight_ih_l0, ref[0][rows])
    assert torch.equal(rnn.weight_hh_l0, ref[1][rows][:, keep])
    if layers == 2:
        assert rnn.weight_ih_l1.shape == (g * 4, 4)
    pruner.prune_in_channels(rnn, [0])
    assert rnn.input_size == 4 and rnn.weight_ih_l0.shape == (g * 4, 4)
    out, _ = rnn(torch.randn(2, 3, 4))  # the flat weights were rebuilt: it still runs
    assert out.shape == (2, 3, 4)


def test_rnn_pruning_without_importance_loss_is_exact_for_dead_units():
    """Hidden units whose weights are all zero carry nothing: removing them changes no score."""
    torch.manual_seed(0)
    m = build_model("gru", N, dim=8, hidden=12).eval()
    with torch.no_grad():  # kill units 0..5 (rows of every gate, and their projection columns)
        for gate in range(3):
            m.rnn.weight_ih_l0[gate * 12 : gate * 12 + 6] = 0
            m.rnn.weight_hh_l0[gate * 12 : gate * 12 + 6] = 0
            m.rnn.bias_ih_l0[gate * 12 : gate * 12 + 6] = 0
            m.rnn.bias_hh_l0[gate * 12 : gate * 12 + 6] = 0
        m.proj.weight[:, :6] = 0
    before = m.scores(seqs())
    pruned, summary = prune(m, PruneConfig(ratio=0.5, recover="none"))
    assert pruned.rnn.hidden_size == 6 and pruned.proj.weight.shape == (8, 6)
    assert summary["steps"][0]["units"] == {"rnn": [12, 6]}
    assert torch.allclose(pruned.scores(seqs()), before, atol=1e-6)
    assert m.rnn.hidden_size == 12  # the original is untouched


@pytest.mark.parametrize("arch,args,expect", [
    ("sasrec", dict(dim=16, heads=4, layers=2, ffn_dim=32),
     {"blocks.0.attn": [16, 8], "blocks.0.ffn": [32, 16], "blocks.1.attn": [16, 8],
      "blocks.1.ffn": [32, 8]}),
    ("gru", dict(dim=16, layers=2), {"rnn": [16, 8]}),
    ("lstm", dict(dim=16, hidden=24), {"rnn": [24, 12]}),
    ("cnn", dict(dim=16, channels=16, dilations=(1, 2)), {"blocks.0": [16, 8], "blocks.1": [16, 8]}),
    ("cnn", dict(dim=16, width=24, kernel=2, dilations=(1, 2)),
     {"blocks.0": [24, 12], "blocks.1": [24, 12]}),
])  # fmt: skip
def test_pruned_shapes_save_load_and_export(tmp_path, arch, args, expect):
    torch.manual_seed(0)
    m = build_model(arch, N, max_len=10, **args).eval()
    cfg = PruneConfig(ratio=0.5, layers={"blocks.1.ffn": 0.75}, recover="none")
    pruned, summary = prune(m, cfg)
    assert summary["steps"][-1]["units"] == expect
    assert summary["params_after"] < summary["params_before"]
    if arch == "sasrec":
        assert [b.attn.heads for b in pruned.blocks] == [2, 2]
        assert pruned.blocks[0].attn.q.weight.shape == (8, 16)
        assert pruned.blocks[0].attn.out.weight.shape == (16, 8)
        assert pruned.builder_args["ffn_dim"] == [16, 8] and pruned.builder_args["head_dim"] == 4
    save_model(pruned, tmp_path / "m", steps=[cfg.step()])
    loaded, meta = load_model(tmp_path / "m")
    assert meta.steps[0]["type"] == "prune" and meta.steps[0]["ratio"] == 0.5
    assert loaded.num_params() == pruned.num_params()
    assert torch.allclose(loaded.scores(seqs()), pruned.scores(seqs()))
    path = export_onnx(pruned, tmp_path / "p.onnx", OnnxExportConfig(k=5))
    check = validate_onnx(path, pruned, seqs().numpy(), k=5)
    assert check["agreement@5"] == 1.0 and check["max_abs_diff"] < 1e-4 and check["nonfinite"] == 0


def test_heads_removed_are_the_least_important():
    torch.manual_seed(0)
    m = build_model("sasrec", N, dim=16, heads=4, layers=1).eval()
    with torch.no_grad():  # head 1 and 3 get tiny weights everywhere the group touches
        for head in (1, 3):
            sl = slice(head * 4, head * 4 + 4)
            for lin in (m.blocks[0].attn.q, m.blocks[0].attn.k, m.blocks[0].attn.v):
                lin.weight[sl] *= 1e-3
                lin.bias[sl] *= 1e-3
            m.blocks[0].attn.out.weight[:, sl] *= 1e-3
    kept_q = torch.cat([m.blocks[0].attn.q.weight[0:4], m.blocks[0].attn.q.weight[8:12]])
    pruned, _ = prune(m, PruneConfig(ratio=0.5, targets=("heads",), recover="none"))
    assert torch.equal(pruned.blocks[0].attn.q.weight, kept_q)
    assert pruned.blocks[0].ffn.fc1.out_features == 64  # not targeted


def test_unit_ratio_longest_prefix():
    cfg = PruneConfig(ratio=0.3, layers={"blocks": 0.4, "blocks.1.ffn": 0.6})
    assert unit_ratio("blocks.0.ffn", cfg) == 0.4
    assert unit_ratio("blocks.1.ffn", cfg) == 0.6
    assert unit_ratio("rnn", cfg) == 0.3
    assert unit_ratio("blocks.10.ffn", PruneConfig(layers={"blocks.1": 0.9})) == 0.5


def test_taylor_importance_and_iterative_recovery():
    data = synthetic(SyntheticConfig(users=80, items=40, categories=4, min_len=6, max_len=12))
    split = leave_one_out(data, 10)
    torch.manual_seed(0)
    m = build_model("sasrec", data.num_items, dim=16, heads=2, layers=1, max_len=10).eval()
    windows = training_pairs(split.train, 10)
    import numpy as np

    batches = bucket_batches(windows, 32, np.random.default_rng(0))[:2]
    loss = next_item_loss(TrainConfig(loss="ce"))
    assert taylor_gradients(m, batches, loss) == 2
    assert m.blocks[0].ffn.fc1.weight.grad is not None
    calls = []

    def recover(pruned, original, step):
        calls.append((step, pruned.blocks[0].ffn.fc1.out_features, original is m))

    pruned, summary = prune(m, PruneConfig(ratio=0.5, importance="taylor", steps=2),
                            recover=recover, taylor_batches=lambda: batches, loss_fn=loss)
    # two steps: 64 -> 48 -> 32 channels, recovery after each, from the unpruned model
    assert calls == [(1, 48, True), (2, 32, True)]
    assert [s["units"]["blocks.0.ffn"] for s in summary["steps"]] == [[64, 48], [48, 32]]
    with pytest.raises(ValueError, match="Taylor"):
        prune(m, PruneConfig(importance="taylor"))


def test_sparsity_modes():
    torch.manual_seed(0)
    m = build_model("gru", N, dim=8)
    stats = apply_sparsity(m, "unstructured", 0.5)
    w = m.rnn.weight_ih_l0
    assert abs(float((w == 0).float().mean()) - 0.5) < 0.02
    assert stats["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert bool((m.item_emb.weight[1:] != 0).all())  # the item table is left alone
    m2 = build_model("sasrec", N, dim=8, heads=2, layers=1)
    apply_sparsity(m2, "2:4", 0.0)
    blocks = m2.blocks[0].ffn.fc1.weight.reshape(-1, 4)
    assert bool(((blocks == 0).sum(1) >= 2).all())
    pruned, summary = prune(m2, PruneConfig(sparsity="2:4", recover="none"))
    assert summary["params_after"] == summary["params_before"] and "no size" in summary["note"]


def test_config_validation():
    with pytest.raises(ValueError):
        PruneConfig(ratio=1.0)
    with pytest.raises(ValueError, match="blocks.0"):
        PruneConfig(layers={"blocks.0": 1.5})
    with pytest.raises(ValueError):
        PruneConfig(targets=("everything",))
    assert PruneConfig(ratio=0.5, importance="taylor").step()["importance"] == "taylor"
    m = build_model("gru", N, dim=8)
    assert [u.kind for u in prunable_units(m, ("ffn",))] == []


def test_structured_prune_keeps_one_channel_at_least():
    m = build_model("cnn", N, dim=8, channels=2, dilations=(1,)).eval()
    changes = structured_prune(m, PruneConfig(ratio=0.9))
    assert changes["blocks.0"] == (2, 1)

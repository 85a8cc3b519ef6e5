import os

import numpy as np
import onnx
import pytest
import torch

from recshrink.errors import RecshrinkError
from recshrink.export.onnx import (
    OnnxExportConfig, ServingHead, export_onnx, onnx_metadata, ort_session, validate_onnx,
)  # fmt: skip
from recshrink.models import build_model

N, L = 120, 12


@pytest.mark.parametrize("name", ["sasrec_base", "gru_small", "lstm_2layer", "cnn_small"])
def test_export_matches_pytorch(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name, N, max_len=L).eval()
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(k=10),
                       metadata={"steps": [{"type": "distill"}], "id_map": "abc"})
    proto = onnx.load(str(path))
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert all(dims) and len(dims) == 2  # batch and seq_len stay dynamic
    meta = onnx_metadata(path)
    assert meta["arch"] == model.arch and meta["num_items"] == str(N) and meta["k"] == "10"
    assert meta["steps"] == '[{"type": "distill"}]' and meta["padding_id"] == "0"
    assert not list(tmp_path.glob("*.data")) and not list(tmp_path.glob(".*tmp*"))
    # the scores [B, N+1] are copied only by the two masks (padding column, history): no
    # Transpose/ScatterND round trip (at 1M items and batch 256 each copy is 1 GiB)
    ops = [n.op_type for n in proto.graph.node]
    assert "ScatterND" not in ops and ops.count("ScatterElements") == 2
    sess = ort_session(path, threads=1)
    head = ServingHead(model, 10)
    for length in (2, 5, L):
        seq = torch.randint(1, N + 1, (6, length))
        seq[0, : length - 1] = 0
        o_scores, o_ids = sess.run(None, {"seq": seq.numpy()})
        t_scores, t_ids = head(seq)
        assert o_ids.dtype == np.int64 and o_ids.shape == (6, 10)
        np.testing.assert_array_equal(o_ids, t_ids.numpy())
        np.testing.assert_allclose(o_scores, t_scores.detach().numpy(), atol=1e-4)
        # history items never come back
        for row, ids in zip(seq.tolist(), o_ids.tolist()):
            assert not set(row) & set(ids)
    rng = np.random.default_rng(0)
    hist = rng.integers(1, N + 1, (50, L))
    for row, n_pad in zip(hist, rng.integers(0, L - 1, 50)):
        row[:n_pad] = 0  # left padding
    v = validate_onnx(path, model, hist, batch_size=16)
    # an untrained model has near-ties, so allow an occasional swap at rank 10
    assert v["agreement@10"] >= 0.98 and v["max_abs_diff"] < 1e-4 and v["users"] == 50


def test_full_scores_output(tmp_path):
    model = build_model("gru", N, dim=8, max_len=L).eval()
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(k=5, full_scores=True,
                                                                     mask_history=False))
    seq = torch.randint(1, N + 1, (2, 4))
    _, ids, scores = ort_session(path).run(None, {"seq": seq.numpy()})
    assert scores.shape == (2, N + 1) and np.isneginf(scores[:, 0]).all()
    np.testing.assert_allclose(scores[:, 1:], model.scores(seq).detach().numpy()[:, 1:], atol=1e-5)
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable")[:, :5])


def test_config_validation():
    with pytest.raises(ValueError, match="opset"):
        OnnxExportConfig(opset=13)
    with pytest.raises(ValueError, match="k must"):
        ServingHead(build_model("gru", 5, dim=4), k=6)


def test_export_failure_is_one_line(tmp_path):
    class Broken(torch.nn.Module):
        arch, num_items, max_len = "broken", 10, 4

        def eval(self):
            return self

        def cpu(self):
            return self

        def scores(self, seq):
            return torch.from_numpy(seq.numpy())  # not traceable

    with pytest.raises(RecshrinkError, match="ONNX export of broken failed"):
        export_onnx(Broken(), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_rnn_exports_run_in_fresh_children_of_one_fork_server(tmp_path, monkeypatch):
    """Each RNN export runs in a process forked by one long-lived server: a second export keeps
    the dynamic length (no earlier export in its process), a failing child is one line and
    leaves the server serving."""
    from recshrink.export import fresh

    torch.manual_seed(0)
    model = build_model("gru", N, dim=8, max_len=L).eval()
    first = export_onnx(model, tmp_path / "a.onnx")
    server = fresh._servers[os.getpid()]
    job = {"model": str(tmp_path / "missing"), "path": str(tmp_path / "b.onnx"),
           "config": {}, "metadata": {}}
    assert (fresh.run_job("recshrink.export.onnx:_export_job", job, tmp_path)
            == f"{tmp_path / 'missing'}: no such model file or directory")  # the child's one line
    monkeypatch.chdir(tmp_path)  # relative paths are the caller's, not the server's
    second = tmp_path / export_onnx(model, "c.onnx")
    assert fresh._servers[os.getpid()] is server and server.poll() is None
    for path in (first, second):
        dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, True]  # batch and seq_len dynamic
    seq = torch.randint(1, N + 1, (4, L))
    cfg = OnnxExportConfig()
    ids = ort_session(second).run(None, {"seq": seq.numpy()})[1]  # [B, K]
    assert np.array_equal(ids, ServingHead(model, cfg.k, cfg.mask_history)(seq)[1].numpy())


def test_rnn_pinned_to_max_len_becomes_a_fixed_length_graph(tmp_path):
    """Some exporters pin an RNN's length (torch 2.11 always; 2.13 after the first RNN export in
    a process): the graph is kept at max_len, recorded, and every consumer left-pads to it."""
    from recshrink.export.onnx import graph_length, onnx_scorer, trim_for_graph
    from recshrink.export.runtime import Predictor

    torch.manual_seed(0)
    model = build_model("gru", N, dim=8, max_len=L).eval()
    export_onnx(model, tmp_path / "first.onnx", fresh_process=False)
    path = export_onnx(model, tmp_path / "m.onnx", fresh_process=False)  # pinned here
    dims = [d.dim_param or d.dim_value for d in
            onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]  # fmt: skip
    assert dims[1] == L and isinstance(dims[0], str)
    assert onnx_metadata(path)["fixed_len"] == str(L)
    rng = np.random.default_rng(1)
    hist = rng.integers(1, N + 1, (20, L))
    for row, n_pad in zip(hist, rng.integers(0, L - 1, 20)):
        row[:n_pad] = 0
    assert validate_onnx(path, model, hist)["agreement@10"] >= 0.99
    short = torch.from_numpy(hist[:, -5:].copy())  # shorter than the graph: padded to L
    ref = model.scores(short).detach()
    got = onnx_scorer(path)(short)
    # the items the graph returned (the scorer fills the others with the row's lowest score)
    ids = torch.from_numpy(ort_session(path).run(
        ["ids"], {"seq": trim_for_graph(short.numpy(), graph_length(path))})[0])
    np.testing.assert_allclose(got.gather(1, ids).numpy(), ref.gather(1, ids).numpy(), atol=1e-4)
    recs = Predictor.load(path).recommend([[3, 17, 42]], 5).ids[0]
    with torch.inference_mode():
        want = ServingHead(model, 5)(torch.tensor([[3, 17, 42]]))[1][0].tolist()
    assert recs == want


def test_onnxslim_keeps_dims_metadata_and_int8(tmp_path):
    pytest.importorskip("onnxslim")
    from recshrink.compress.quantize import RowwiseConfig, quantize_item_table

    torch.manual_seed(0)
    model = quantize_item_table(build_model("gru_small", N, max_len=L).eval(), RowwiseConfig(bits=8))
    plain = export_onnx(model, tmp_path / "plain.onnx")
    slim = export_onnx(model, tmp_path / "slim.onnx", OnnxExportConfig(slim=True))
    a, b = onnx.load(str(plain)), onnx.load(str(slim))
    assert len(b.graph.node) < len(a.graph.node)  # 60 -> 46 nodes for a d64 GRU at N=3000
    assert [d.dim_param for d in b.graph.input[0].type.tensor_type.shape.dim] == ["batch", "seq_len"]
    assert onnx_metadata(slim) == onnx_metadata(plain)
    assert any(n.op_type == "DequantizeLinear" for n in b.graph.node)  # the table stays INT8
    seq = np.random.default_rng(0).integers(1, N + 1, (5, L))
    ra, rb = ort_session(plain).run(None, {"seq": seq}), ort_session(slim).run(None, {"seq": seq})
    np.testing.assert_array_equal(ra[1], rb[1])
    np.testing.assert_allclose(ra[0], rb[0], atol=1e-5)


def test_validation_fails_on_non_finite_scores(tmp_path):
    """A NaN on one side of the comparison is a failure, never filtered out of the difference."""
    torch.manual_seed(0)
    model = build_model("gru_small", N, max_len=L).eval()
    path = export_onnx(model, tmp_path / "m.onnx", OnnxExportConfig(k=10))
    hist = np.random.default_rng(0).integers(1, N + 1, (20, L))
    ok = validate_onnx(path, model, hist)
    assert ok["nonfinite"] == 0 and np.isfinite(ok["max_abs_diff"])
    with torch.no_grad():  # PyTorch now gives NaN everywhere, the exported graph does not
        for p in model.parameters():
            p.fill_(float("nan"))
    bad = validate_onnx(path, model, hist)
    assert bad["nonfinite"] == 20 and bad["max_abs_diff"] == float("inf")

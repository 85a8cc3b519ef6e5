import importlib
import json

import numpy as np
import pytest
import torch

from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.errors import RecshrinkError
from recshrink.export.compat import trt_compatibility
from recshrink.export.onnx import ServingHead
from recshrink.export.runtime import Predictor
from recshrink.export.artifacts import id_map_fingerprint, sidecar_path
from recshrink.models import build_model
from recshrink.models.io import save_model
from recshrink.api.exports import export_checked

N = 40
RAW = [str(1000 + 7 * i) for i in range(N)]  # raw id of model id i + 1


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rt")
    data = synthetic(SyntheticConfig(users=60, items=N, categories=4, min_len=5, max_len=10))
    split = leave_one_out(data, 8)
    torch.manual_seed(0)
    model = build_model("sasrec", N, dim=16, heads=2, layers=1, max_len=8).eval()
    popular = [5, 9, 2]
    save_model(model, tmp / "dir", item_ids=RAW, extra={"popular": popular})
    info = export_checked(model, tmp / "m.onnx", split, steps=[], item_ids=RAW, popular=popular)
    return model, tmp, info, split


def raw(ids):
    return [int(RAW[i - 1]) for i in ids]


def test_onnx_and_torch_predictors_match_pytorch(artifacts):
    model, tmp, info, split = artifacts
    assert info["export_agreement@10"] == 1.0 and info["trt_compatible"] is True
    assert json.loads(sidecar_path(tmp / "m.onnx").read_text())["fingerprint"] == id_map_fingerprint(RAW)
    hist_ids = split.test.histories[:20]
    histories = [raw([i for i in h if i]) for h in hist_ids]
    with torch.inference_mode():  # the serving head excludes the history's own items
        ref = ServingHead(model, 5)(torch.from_numpy(hist_ids))[1]
    for path in (tmp / "m.onnx", tmp / "dir"):
        pred = Predictor.load(path, threads=1)
        rec = pred.recommend(histories, k=5)
        assert rec.ids == [raw(r) for r in ref.tolist()], path
        assert rec.unknown == 0 and rec.empty == 0 and rec.scores.shape == (20, 5)


def test_unknown_items_truncation_and_empty_histories(artifacts):
    model, tmp, _, _ = artifacts
    pred = Predictor.load(tmp / "m.onnx")
    long = raw(list(range(1, 21)))  # 20 items, the model reads the last 8
    rec = pred.recommend([long, [999999, int(RAW[4])], [], [999999]], k=3)
    assert rec.unknown == 2 and rec.empty == 2
    seq = torch.tensor([list(range(13, 21))])
    with torch.inference_mode():
        assert rec.ids[0] == raw(ServingHead(model, 3)(seq)[1][0].tolist())
    assert rec.ids[2] == rec.ids[3] == raw([5, 9, 2])  # popularity answers
    assert np.isnan(rec.scores[2]).all()
    # numpy input, string ids
    rec2 = pred.recommend(np.array([[int(RAW[0]), int(RAW[1])]]), k=2)
    rec3 = pred.recommend([[RAW[0], RAW[1]]], k=2)
    assert rec2.ids == rec3.ids


@pytest.mark.parametrize("bad,k,msg", [
    ([[1.5, 2]], 3, "integers"),
    ([[-3]], 3, "non-negative"),
    ([[True]], 3, "integers"),
    ("1 2 3", 3, "list of item-id lists"),
    ([5, 6], 3, "list of item ids"),
    (np.zeros((2, 2, 2), dtype=np.int64), 3, "rank 2"),
    (np.array([[1.0, 2.0]]), 3, "dtype"),
    ([[RAW[0]]], 0, "k must be in"),
    ([[RAW[0]]], N + 1, "k must be in"),
    ([[RAW[0]]], 2.5, "k must be an integer"),
])  # fmt: skip
def test_bad_input_is_one_value_error(artifacts, bad, k, msg):
    _, tmp, _, _ = artifacts
    pred = Predictor.load(tmp / "m.onnx")
    with pytest.raises(ValueError, match=msg):
        pred.recommend(bad, k)


def test_load_errors(tmp_path, artifacts):
    _, tmp, _, _ = artifacts
    with pytest.raises(RecshrinkError, match="no such"):
        Predictor.load(tmp_path / "missing.onnx")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(RecshrinkError, match="unknown artifact"):
        Predictor.load(tmp_path / "x.txt")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(RecshrinkError, match="not a loadable ONNX"):
        Predictor.load(tmp_path / "bad.onnx")
    (tmp_path / "e.engine").write_bytes(b"x")
    with pytest.raises(RecshrinkError, match="meta.json|TensorRT"):
        Predictor.load(tmp_path / "e.engine")
    # a sidecar that belongs to another id map is refused
    other = tmp_path / "m.onnx"
    other.write_bytes((tmp / "m.onnx").read_bytes())
    sidecar_path(other).write_text(json.dumps({"item_ids": list(reversed(RAW)), "popular": []}))
    with pytest.raises(RecshrinkError, match="does not match"):
        Predictor.load(other)


def test_export_gate_leaves_no_file(tmp_path, artifacts, monkeypatch):
    from recshrink.export.onnx import OnnxExportConfig

    model, _, _, split = artifacts
    # the module export_checked reads validate_onnx from (``recshrink.export`` is the entry
    # function, so ``import recshrink.export.onnx as m`` does not reach a module)
    checked = importlib.import_module(export_checked.__module__)

    def bad_validate(path, model, hist, **kw):
        return {"agreement@10": 0.5, "max_abs_diff": 1.0, "mean_abs_diff": 1.0, "users": len(hist), "nonfinite": 0}

    monkeypatch.setattr(checked, "validate_onnx", bad_validate)
    with pytest.raises(RecshrinkError, match="agreement"):
        export_checked(model, tmp_path / "g.onnx", split, steps=[], item_ids=RAW, popular=[],
                       cfg=OnnxExportConfig(min_agreement=0.99))
    assert list(tmp_path.iterdir()) == []


def test_compat_names_offending_nodes(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    k = helper.make_tensor("k", TensorProto.INT64, [1], [5000])
    nodes = [
        helper.make_node("Hardmax", ["x"], ["h"], name="hm"),
        helper.make_node("DynamicQuantizeLinear", ["h"], ["q", "s", "z"], name="dql"),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top"),
        helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="fm", domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, tmp_path / "g.onnx")
    res = trt_compatibility(tmp_path / "g.onnx")
    assert not res["compatible"]
    text = "\n".join(res["problems"])
    assert "dql (DynamicQuantizeLinear): not supported" in text
    assert "top (TopK): K above TensorRT's limit of 3840" in text
    assert "fm (FusedMatMul): operator of domain 'com.microsoft'" in text
    assert len(res["problems"]) == 3  # Hardmax is supported by TensorRT 10


def test_tensorrt_without_tensorrt_is_one_clear_error(tmp_path, artifacts):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from recshrink.export.tensorrt import TensorRTConfig, build_engine, opt_length

    _, tmp, _, _ = artifacts
    with pytest.raises(RecshrinkError, match=r"pip install 'recshrink\[tensorrt\]'"):
        build_engine(tmp / "m.onnx", tmp_path / "m.engine")
    assert opt_length(np.array([[0, 0, 1], [0, 1, 2], [1, 2, 3]]), 0.5) == 2
    with pytest.raises(ValueError):
        TensorRTConfig(min_batch=8, opt_batch=4)


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx(tmp_path, artifacts):  # runs where TensorRT and a GPU exist
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from recshrink.export.tensorrt import TensorRTConfig, build_engine

    model, tmp, _, split = artifacts
    engine = build_engine(tmp / "m.onnx", tmp_path / "m.engine",
                          TensorRTConfig(precision="fp32", opt_batch=16, max_batch=64, max_len=8))
    hist = [raw([i for i in h if i]) for h in split.test.histories[:30]]
    a = Predictor.load(engine).recommend(hist, 5).ids
    b = Predictor.load(tmp / "m.onnx").recommend(hist, 5).ids
    assert np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b)]) >= 0.99


def test_aoti_package_serves_the_same_top_k(tmp_path, artifacts):
    from recshrink.export.runtime import export_aoti

    model, _, _, split = artifacts
    path = export_aoti(model, tmp_path / "m.pt2", k=5, item_ids=RAW, popular=[5])
    hist = [raw([i for i in h if i]) for h in split.test.histories[:10]]
    got = Predictor.load(path).recommend(hist + [[]], 5)
    with torch.inference_mode():
        ref = ServingHead(model, 5)(torch.from_numpy(split.test.histories[:10]))[1]
    assert got.ids[:10] == [raw(r) for r in ref.tolist()]
    assert got.ids[10][0] == int(RAW[4])

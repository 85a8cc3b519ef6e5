import json

import numpy as np
import pytest
import torch

from recshrink.compress.quantize import RowwiseConfig, quantize_item_table
from recshrink.export.onnx import OnnxExportConfig, export_onnx, validate_onnx
from recshrink.compare import topk_overlap
from recshrink.models import build_model
from recshrink.models.io import load_model, save_model


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_saves_loads_and_exports(tmp_path, bits):
    torch.manual_seed(0)
    model = build_model("gru", 2000, dim=64, max_len=10).eval()
    seq = torch.randint(1, 2001, (64, 10))
    ref = model.recommend(seq, 10)[1]
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    quantize_item_table(model, RowwiseConfig(bits=bits))
    assert model.item_table().shape == (2001, 64)
    agree = topk_overlap(model.recommend(seq, 10)[1], ref)
    assert agree > (0.9 if bits == 8 else 0.6)
    save_model(model, tmp_path / "m", steps=[RowwiseConfig(bits=bits).step()])
    loaded, meta = load_model(tmp_path / "m")
    assert meta.steps[0]["mode"] == f"rowwise-int{bits}"
    assert torch.equal(loaded.scores(seq), model.scores(seq))
    q = export_onnx(model, tmp_path / "q.onnx", OnnxExportConfig(k=10))
    saved = (fp32.stat().st_size - q.stat().st_size) / (2001 * 64 * 4)
    # the table shrinks to codes + float32 scales: 1 - (64 + 4) / 256 = 0.73 saved for INT8,
    # codes + scale and offset 1 - (32 + 8) / 256 = 0.84 for INT4 (the GRU weights stay float32)
    assert saved > (0.72 if bits == 8 else 0.83), saved
    v = validate_onnx(q, model, seq.numpy())
    assert v["agreement@10"] >= 0.99


def test_config():
    with pytest.raises(ValueError):
        RowwiseConfig(bits=3)
    assert RowwiseConfig(bits=4).step() == {"type": "quantize", "mode": "rowwise-int4",
                                            "target": "item_table"}
    m = quantize_item_table(build_model("gru", 10, dim=4))
    with pytest.raises(ValueError, match="already"):
        quantize_item_table(m)
    assert np.isfinite(m.scores(torch.tensor([[1, 2]]))[:, 1:].detach().numpy()).all()


# -- ONNX Runtime quantization of exported graphs -----------------------------------------------
def _trained_like_sasrec(n=300, d=32, max_len=12):
    torch.manual_seed(0)
    return build_model("sasrec", n, dim=d, heads=2, layers=2, max_len=max_len).eval()


@pytest.mark.parametrize("mode", ["dynamic", "static", "fp16"])
def test_onnx_quantization_modes(tmp_path, mode):
    from recshrink.compress.quantize import OnnxQuantConfig, quantize_onnx
    from recshrink.export.compat import trt_compatibility
    from recshrink.export.onnx import onnx_metadata, onnx_scorer
    from recshrink.train.evaluate import model_scorer, scorer_agreement

    model = _trained_like_sasrec()
    src = export_onnx(model, tmp_path / "fp32.onnx", OnnxExportConfig(full_scores=True),
                      metadata={"steps": [{"type": "distill"}]})
    g = torch.Generator().manual_seed(0)
    hist = torch.randint(1, 301, (96, 12), generator=g).numpy()
    cfg = OnnxQuantConfig(mode=mode, calibration_users=64, calibration_batch=32)
    dst = quantize_onnx(src, tmp_path / "q.onnx", cfg, hist)
    ops = {n.op_type for n in __import__("onnx").load(str(dst)).graph.node}
    ratio = dst.stat().st_size / src.stat().st_size
    if mode == "dynamic":  # MatMul weights become int8 (DynamicQuantizeLinear + MatMulInteger)
        assert "MatMulInteger" in ops and "LayerNormalization" in ops  # LayerNorm stays float
        assert ratio < 0.9
        assert not trt_compatibility(dst)["compatible"]  # ORT-only integer ops, named
    elif mode == "static":  # QDQ around MatMul only
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        compat = trt_compatibility(dst)
        assert compat["compatible"], compat["problems"]
    else:
        assert 0.45 < ratio < 0.6
    steps = json.loads(onnx_metadata(dst)["steps"])
    assert steps[0] == {"type": "distill"} and steps[1] == cfg.step()
    agree = scorer_agreement(onnx_scorer(dst), model_scorer(model), hist)
    assert agree > (0.95 if mode == "fp16" else 0.6), agree


def test_dynamic_int8_reaches_the_scoring_matmul_of_a_gru(tmp_path):
    import onnx

    from recshrink.compress.quantize import OnnxQuantConfig, quantize_onnx
    from recshrink.export.onnx import onnx_scorer
    from recshrink.train.evaluate import model_scorer, scorer_agreement

    torch.manual_seed(0)
    model = build_model("gru", 2000, dim=32, max_len=10).eval()
    src = export_onnx(model, tmp_path / "fp32.onnx", OnnxExportConfig(full_scores=True))
    dst = quantize_onnx(src, tmp_path / "q.onnx", OnnxQuantConfig(mode="dynamic"))
    g = onnx.load(str(dst)).graph
    mm = [n for n in g.node if n.op_type == "MatMulInteger"]
    assert len(mm) == 1  # the scoring MatMul: the GRU itself has no quantized kernel
    weights = {t.name: t for t in g.initializer}
    table = weights[mm[0].input[1]]
    assert list(table.dims) == [32, 2001] and table.data_type == onnx.TensorProto.INT8
    hist = torch.randint(1, 2001, (64, 10), generator=torch.Generator().manual_seed(1)).numpy()
    assert scorer_agreement(onnx_scorer(dst), model_scorer(model), hist) > 0.8


def test_static_quantization_needs_histories(tmp_path):
    from recshrink.compress.quantize import OnnxQuantConfig, quantize_onnx
    from recshrink.errors import RecshrinkError

    src = export_onnx(_trained_like_sasrec(50, 8, 6), tmp_path / "fp32.onnx")
    with pytest.raises(RecshrinkError, match="calibration"):
        quantize_onnx(src, tmp_path / "q.onnx", OnnxQuantConfig(mode="static"), None)
    with pytest.raises(RecshrinkError, match="bf16"):
        quantize_onnx(src, tmp_path / "q.onnx", OnnxQuantConfig(mode="bf16"))
    assert not (tmp_path / "q.onnx").exists()
    assert OnnxQuantConfig(mode="static", calibration="entropy").step() == {
        "type": "quantize", "mode": "int8-qdq", "per_channel": False, "op_types": ["MatMul"],
        "calibration": "entropy"}  # fmt: skip


def test_int8_table_is_dequantize_linear_in_onnx(tmp_path):
    """The symmetric INT8 table reaches the graph as DequantizeLinear (what TensorRT takes)."""
    import onnx

    from recshrink.export.compat import trt_compatibility

    model = quantize_item_table(build_model("gru", 500, dim=16, max_len=8).eval())
    path = export_onnx(model, tmp_path / "q.onnx")
    proto = onnx.load(str(path))
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 1 and dq[0].input[0] == "model.item_emb.codes"
    assert trt_compatibility(path)["compatible"]
    seq = torch.randint(1, 501, (16, 8))
    assert validate_onnx(path, model, seq.numpy())["agreement@10"] == 1.0
    model4 = quantize_item_table(build_model("gru", 500, dim=16, max_len=8).eval(),
                                 RowwiseConfig(bits=4))  # fmt: skip
    problems = trt_compatibility(export_onnx(model4, tmp_path / "q4.onnx"))["problems"]
    assert len(problems) == 1 and "DequantizeLinear" in problems[0]

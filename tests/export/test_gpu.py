"""CUDA serving paths, checked against PyTorch on the CPU (skipped without a CUDA GPU)."""

import numpy as np
import pytest
import torch

from recshrink.export.backends import Backend, open_backend
from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.export.onnx import ServingHead
from recshrink.export.runtime import Predictor, export_aoti
from recshrink.models import build_model
from recshrink.models.io import save_model

pytestmark = pytest.mark.gpu

K = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = synthetic(SyntheticConfig(users=300, items=400, seed=3))
    split = leave_one_out(data, 20)
    hist = split.test.histories[:256].astype(np.int64)  # [256, 20]
    tmp = tmp_path_factory.mktemp("gpu")
    models = {}
    for arch, kw in (("sasrec", {"dim": 32, "heads": 2, "layers": 2}), ("gru", {"dim": 32}),
                     ("cnn", {"dim": 32})):  # fmt: skip
        torch.manual_seed(0)
        m = build_model(arch, data.num_items, max_len=20, **kw).eval()
        models[arch] = (m, save_model(m, tmp / arch))
    return models, hist, tmp


def _cpu_top(model, hist: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return ServingHead(model.cpu().eval(), K)(torch.from_numpy(hist))[1].numpy()


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / K for x, y in zip(a.tolist(), b.tolist())]))


def _run(runner: Backend, hist: np.ndarray) -> np.ndarray:
    x = hist if runner.fixed_len is None else hist[:, -runner.fixed_len :]
    x = runner.prepare(np.ascontiguousarray(x))
    out = runner.call(x)
    if runner.sync:
        runner.sync()
    return out[1].cpu().numpy()


@pytest.mark.parametrize("arch", ["sasrec", "gru", "cnn"])
@pytest.mark.parametrize("backend,dtype,floor", [
    ("torch", "fp32", 0.99), ("torch-cudagraph", "fp32", 0.99), ("torch-cudagraph", "fp16", 0.9),
    ("torch-cudagraph", "bf16", 0.8)])  # fmt: skip
def test_cuda_backends_agree_with_cpu(setup, arch, backend, dtype, floor):
    models, hist, _ = setup
    model, path = models[arch]
    ref = _cpu_top(model, hist)
    runner = open_backend(path, backend, device="cuda", dtype=dtype, k=K)
    got = _run(runner, hist)
    assert got.shape == (len(hist), K)
    assert _overlap(got, ref) >= floor
    # a replayed graph gives the same answer for a second, different batch of the same size
    again = _run(runner, hist[::-1].copy())
    assert _overlap(again, ref[::-1]) >= floor
    # short histories only: the CUDA-graph runner serves them from its length-8 bucket
    short = hist[(hist[:, :-8] == 0).all(1)][:32]
    assert len(short) >= 4
    assert _overlap(_run(runner, short), _cpu_top(model, short)) >= floor


def test_torch_compile_on_cuda(setup):
    models, hist, _ = setup
    model, path = models["cnn"]
    runner = open_backend(path, "torch-compile", device="cuda", k=K)
    assert _overlap(_run(runner, hist), _cpu_top(model, hist)) >= 0.99


@pytest.mark.parametrize("arch", ["gru", "cnn"])
def test_aoti_package_on_cuda(setup, arch):
    models, hist, tmp = setup
    model, _ = models[arch]
    pkg = export_aoti(model.cuda(), tmp / f"{arch}.pt2", k=K, device="cuda")
    ref = _cpu_top(model, hist)
    runner = open_backend(pkg, "aoti", device="cuda")
    assert _overlap(_run(runner, hist), ref) >= 0.99
    pred = Predictor.load(pkg, device="cuda")
    raw_hist = [[int(i) for i in h if i] for h in hist[:32]]
    got = pred.recommend(raw_hist, K).ids
    assert _overlap(np.array(got), ref[:32]) >= 0.99


def test_predictor_on_cuda_matches_cpu(setup):
    models, hist, _ = setup
    _, path = models["sasrec"]
    raw_hist = [[int(i) for i in h if i] for h in hist[:64]]
    a = Predictor.load(path, device="cuda").recommend(raw_hist, K).ids
    b = Predictor.load(path).recommend(raw_hist, K).ids
    assert _overlap(np.array(a), np.array(b)) >= 0.99

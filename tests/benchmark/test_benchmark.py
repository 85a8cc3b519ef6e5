import json

import numpy as np
import pytest
import torch

from recshrink.benchmark.latency import (
    PeakRSS, input_batches, percentile, summarize, throughput, time_calls,
)  # fmt: skip
from recshrink.benchmark.report import markdown, pareto_front, write_report
from recshrink.benchmark.run import run_benchmark
from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.errors import RecshrinkError
from recshrink.models import build_model
from recshrink.models.io import save_model


def test_percentiles_by_hand():
    s = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(s, 50) == 30.0
    assert percentile(s, 90) == pytest.approx(46.0)  # pos 3.6 -> 40 + 0.6 * 10
    assert percentile(s, 99) == pytest.approx(49.6)
    assert percentile([7.0], 99) == 7.0
    rng = np.random.default_rng(0)
    x = sorted(rng.exponential(100, 1001))
    for q in (50, 90, 99):
        assert percentile(x, q) == pytest.approx(float(np.percentile(x, q)))
    st = summarize([30, 10, 20, 40, 50])
    assert st == {"p50": 30.0, "p90": 46.0, "p99": 49.6, "mean": 30.0, "min": 10.0,
                  "max": 50.0, "n": 5}  # fmt: skip
    with pytest.raises(ValueError):
        percentile([], 50)


def test_throughput_by_hand():
    assert throughput(256, {"mean": 1000.0}) == 256000.0  # 256 users per ms
    assert throughput(1, {"mean": 50.0}) == 20000.0


def test_time_calls_with_a_fake_clock():
    """Each call costs 100 ns of fake time, plus 300 ns on every fifth input: p50 = 0.1 us."""
    now = [0]
    calls = []

    def clock():
        return now[0]

    def fn(x):
        calls.append(x)
        now[0] += 100 + (300 if x == 4 else 0)

    stats = time_calls(fn, [0, 1, 2, 3, 4], warmup=5, min_iters=50, max_iters=50, budget_s=0,
                       clock=clock)  # fmt: skip
    assert calls[:5] == [0, 1, 2, 3, 4] and len(calls) == 55  # warm-up is untimed
    assert stats["n"] == 50 and stats["p50"] == 0.1 and stats["max"] == 0.4
    assert stats["mean"] == pytest.approx((40 * 0.1 + 10 * 0.4) / 50)
    assert stats["p90"] == pytest.approx(0.4)
    # the budget stops the loop after min_iters once exceeded
    now[0] = 0
    stats = time_calls(fn, [0], warmup=0, min_iters=3, max_iters=1000, budget_s=1e-6,
                       clock=clock)  # fmt: skip
    assert stats["n"] == 10  # 10 calls of 100 ns reach the 1000 ns budget
    with pytest.raises(ValueError):
        time_calls(fn, [], clock=clock)


def test_input_batches_are_real_rotated_and_trimmed():
    hist = np.zeros((5, 6), dtype=np.int64)
    for i in range(5):
        hist[i, 6 - (i + 1):] = np.arange(1, i + 2)
    out = input_batches(hist, 3, count=4, seed=0)
    assert len(out) == 4 and all(b.shape[0] == 3 and b.dtype == np.int64 for b in out)
    for b in out:  # trimmed to the longest history of the batch (at least 2 columns)
        longest = max(int((r != 0).sum()) for r in b)
        assert b.shape[1] == max(2, longest)
    fixed = input_batches(hist, 2, count=2, fixed_len=6)
    assert all(b.shape == (2, 6) for b in fixed)
    assert len({b.tobytes() for b in out}) > 1  # distinct batches, not one cached input


def test_peak_rss_sees_an_allocation():
    with PeakRSS() as m:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB
        block.sum()
    assert m.increase_bytes > 32 * 1024 * 1024
    del block


def test_pareto_front():
    pts = [(10, 0.5), (20, 0.6), (15, 0.4), (5, 0.3), (30, 0.6)]
    assert pareto_front(pts) == [3, 0, 1]


def test_tiny_cpu_benchmark_end_to_end(tmp_path):
    from recshrink.export.onnx import OnnxExportConfig, export_onnx

    data = synthetic(SyntheticConfig(users=60, items=50, categories=4, min_len=5, max_len=10))
    split = leave_one_out(data, 8)
    torch.manual_seed(0)
    teacher = build_model("sasrec", data.num_items, dim=16, heads=2, layers=1, max_len=8)
    student = build_model("cnn", data.num_items, dim=8, max_len=8)
    save_model(teacher, tmp_path / "t")
    save_model(student, tmp_path / "s")
    export_onnx(student.eval(), tmp_path / "s.onnx", OnnxExportConfig(full_scores=True))
    models = [("teacher", tmp_path / "t"), ("student", tmp_path / "s"),
              ("student_onnx", tmp_path / "s.onnx")]  # fmt: skip
    rep = run_benchmark(models, data, split, batches=(1, 8), budget_s=0.05, threads=1,
                        progress=False)  # fmt: skip
    t, s, o = (rep["models"][k] for k in ("teacher", "student", "student_onnx"))
    assert set(t["latency_us"]["cpu"]) == {"torch"} and set(o["latency_us"]["cpu"]) == {"onnxruntime"}
    for e in (t, s, o):
        for b in ("1", "8"):
            st = e["latency_us"]["cpu"][next(iter(e["latency_us"]["cpu"]))][b]
            assert 0 < st["p50"] <= st["p90"] <= st["p99"] <= st["max"] and st["n"] >= 30
    # quality through the backend: the ONNX student ranks exactly like the PyTorch student
    assert o["metrics"]["ndcg@10"] == pytest.approx(s["metrics"]["ndcg@10"], abs=1e-6)
    assert o["quality_backend"] == "onnxruntime" and t["fidelity@10"] == 1.0
    # the validation split through the same backend too, with the same protocol
    from recshrink.train.evaluate import evaluate, model_scorer

    want = evaluate(model_scorer(student), split.valid, data.item_attrs)["ndcg@10"]
    assert o["valid"]["ndcg@10"] == pytest.approx(want, abs=1e-6)
    assert s["valid"]["ndcg@10"] == pytest.approx(want, abs=1e-6)
    assert rep["settings"]["protocol"] == {"split": "test", "mask_scope": "full",
                                           "ties": "pessimistic"}
    assert s["vs_teacher"]["size"] == pytest.approx(s["bytes"] / t["bytes"], abs=1e-4)
    assert s["vs_teacher"]["ndcg@10"] == pytest.approx(
        s["metrics"]["ndcg@10"] / t["metrics"]["ndcg@10"], abs=1e-3)  # fmt: skip
    # paired-bootstrap interval of the retention: around the point value, the same for two
    # backends that rank identically, none for the teacher itself
    lo, hi = s["vs_teacher"]["ndcg@10_ci"]
    assert lo <= s["vs_teacher"]["ndcg@10"] <= hi and lo < hi
    assert o["vs_teacher"]["ndcg@10_ci"] == [lo, hi] and "ndcg@10_ci" not in t["vs_teacher"]
    assert t["params"] == teacher.num_params() and o["params"] > 0
    files = write_report(rep, tmp_path / "rep")
    assert [f.name for f in files] == ["report.json", "report.md", "pareto.png", "latency_vs_batch.png"]
    assert all(f.stat().st_size > 0 for f in files)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| student_onnx | onnxruntime |" in md and "p50@1" in md
    assert f"{s['vs_teacher']['ndcg@10']:.3f} ({lo:.3f}-{hi:.3f})" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["teacher"] == "teacher"
    # the teacher on torch: first table, latency table, same-backend table
    assert markdown(rep).count("\n| teacher | torch |") == 3
    assert s["vs_teacher"]["same_backend"]["torch"]["teacher@1"] == "teacher"
    assert o["vs_teacher"]["same_backend"] == {}  # the teacher did not run on onnxruntime
    assert o["vs_teacher"]["teacher_backend@1"] == "torch"
    # a latency-only run (--no-quality) leaves the quality cells empty, never "nan"
    bare = {**rep, "models": {k: {f: v for f, v in e.items() if f not in ("metrics", "vs_teacher")}
                              for k, e in rep["models"].items()}}  # fmt: skip
    row = next(x for x in markdown(bare).splitlines() if x.startswith("| student | torch |"))
    assert "nan" not in markdown(bare) and row.split(" | ")[3:6] == ["", "", ""]
    with pytest.raises(RecshrinkError, match="unknown backend"):
        run_benchmark(models, data, split, backends=("tflite",))


def test_length_buckets_cut_a_batch_to_its_longest_history():
    from recshrink.export.backends import length_buckets, to_bucket

    assert length_buckets(50) == (8, 16, 32, 50)
    assert length_buckets(20) == (8, 16, 20)
    assert length_buckets(8) == (8,)
    h = np.zeros((2, 50), dtype=np.int64)
    h[0, -3:] = [5, 6, 7]
    h[1, -9:] = np.arange(1, 10)
    out = to_bucket(h, (8, 16, 32, 50))  # longest history 9 -> bucket 16
    assert out.shape == (2, 16) and out.dtype == np.int64
    assert out[0].tolist() == [0] * 13 + [5, 6, 7] and out[1, -9:].tolist() == list(range(1, 10))
    assert to_bucket(h[:1], (8, 16, 32, 50)).shape == (1, 8)
    assert to_bucket(np.zeros((1, 50), dtype=np.int64), (8, 50)).shape == (1, 8)  # empty
    short = np.array([[1, 2]])
    assert to_bucket(short, (8, 16)).tolist() == [[0] * 6 + [1, 2]]  # padded up to the bucket


def test_update_docs_replaces_its_block(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "update_docs", Path(__file__).resolve().parents[2] / "benchmarks" / "update_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    docs, rep = tmp_path / "b.md", tmp_path / "report.md"
    docs.write_text("# Benchmarks\n\nhand-written\n")
    rep.write_text("# Benchmark (cpu)\n\n| a |\n|---|\n| 1 |\n")
    mod.update(rep, docs, "x")
    rep.write_text("# Benchmark (cpu)\n\n| a |\n|---|\n| 2 |\n")
    mod.update(rep, docs, "x")
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n")
    assert text.count("<!-- bench:x:begin -->") == 1 and "| 2 |" in text and "| 1 |" not in text
    assert "#### Benchmark (cpu)" in text and not list(tmp_path.glob("*.tmp"))

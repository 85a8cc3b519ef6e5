"""Like-for-like speed-ups, the report's ratio tables, Pareto marker labels and the TensorRT
scorer's score assembly, all on hand-made inputs (no timing, no GPU)."""

import numpy as np
import pytest
import torch

from recshrink.benchmark.report import (
    label_groups, marker_labels, markdown, pareto_figure, teacher_fastest,
)  # fmt: skip
from recshrink.benchmark.run import _ratios, base_label


def _entry(lat: dict[str, dict[str, float]], nbytes: int = 1000, ndcg: float | None = None) -> dict:
    """An entry with p50s ``{backend: {batch: p50}}``; users/s = batch / p50."""
    e = {"bytes": nbytes,
         "latency_us": {"cpu": {b: {k: {"p50": v, "p99": 2 * v} for k, v in per.items()}
                                for b, per in lat.items()}},
         "throughput": {"cpu": {b: {k: int(k) * 1e6 / v for k, v in per.items()}
                                for b, per in lat.items()}}}  # fmt: skip
    if ndcg is not None:
        e["metrics"] = {"ndcg@10": ndcg, "f1@10": ndcg / 2}
    return e


def _report(models: dict) -> dict:
    return {"machine": {"processor": "x", "platform": "y", "torch": "z", "threads": 1},
            "settings": {"device": "cpu", "batches": [1, 16], "inputs": "i", "io": "o"},
            "teacher": "teacher", "models": models}  # fmt: skip


@pytest.fixture
def rep():
    r = _report({
        "teacher": _entry({"torch": {"1": 1000, "16": 4000}}, 4000, 0.4),
        "teacher.onnx": _entry({"onnxruntime": {"1": 400, "16": 5000}}, 4000, 0.4),
        "student": _entry({"torch": {"1": 500, "16": 1000}}, 1000, 0.36),
        "student.onnx": _entry({"onnxruntime": {"1": 100, "16": 2000}}, 1000, 0.36),
        "other": _entry({"torch": {"1": 250}, "onnxruntime": {"1": 200}}, 500),
    })
    _ratios(r, "cpu")
    return r


def test_base_label():
    assert base_label("teacher.dynamic.onnx") == "teacher" == base_label("teacher")
    assert base_label("student.fp16.engine") == "student"


def test_headline_is_fastest_vs_the_teachers_fastest(rep):
    s = rep["models"]["student.onnx"]["vs_teacher"]
    # batch 1: the teacher's fastest is its ONNX export (400 us), not eager torch (1000 us)
    assert s["speedup_p50@1"] == 4.0 and s["throughput_x@1"] == 4.0
    assert (s["teacher_label@1"], s["teacher_backend@1"], s["model_backend@1"]) == (
        "teacher.onnx", "onnxruntime", "onnxruntime")
    # batch 16: the teacher's fastest is torch (4000 us); users/s best vs best
    assert s["speedup_p50@16"] == 2.0 and s["throughput_x@16"] == 2.0
    assert (s["teacher_label@16"], s["teacher_backend@16"]) == ("teacher", "torch")
    st = rep["models"]["student"]["vs_teacher"]
    assert st["speedup_p50@1"] == 0.8 and st["speedup_p50@16"] == 4.0
    # the teacher itself against its own fastest artifact; a one-batch entry has one headline
    t = rep["models"]["teacher"]["vs_teacher"]
    assert t["speedup_p50@1"] == 0.4 and t["speedup_p50@16"] == 1.0
    o = rep["models"]["other"]["vs_teacher"]
    assert o["speedup_p50@1"] == 2.0 and o["model_backend@1"] == "onnxruntime"
    assert "speedup_p50@16" not in o
    assert "teacher_backend" not in s  # the old single "teacher's first backend" key is gone


def test_same_backend_ratios(rep):
    s = rep["models"]["student.onnx"]["vs_teacher"]["same_backend"]
    assert s == {"onnxruntime": {"speedup_p50@1": 4.0, "throughput_x@1": 4.0,
                                 "teacher@1": "teacher.onnx", "speedup_p50@16": 2.5,
                                 "throughput_x@16": 2.5, "teacher@16": "teacher.onnx"}}
    st = rep["models"]["student"]["vs_teacher"]["same_backend"]
    assert set(st) == {"torch"} and st["torch"]["speedup_p50@1"] == 2.0
    assert st["torch"]["speedup_p50@16"] == 4.0 and st["torch"]["teacher@1"] == "teacher"
    o = rep["models"]["other"]["vs_teacher"]["same_backend"]  # no dot: any teacher file on it
    assert o["torch"]["speedup_p50@1"] == 4.0 and o["onnxruntime"]["speedup_p50@1"] == 2.0
    assert o["onnxruntime"]["teacher@1"] == "teacher.onnx"
    assert rep["models"]["teacher.onnx"]["vs_teacher"]["same_backend"]["onnxruntime"][
        "speedup_p50@1"] == 1.0  # fmt: skip


def test_same_backend_prefers_the_teacher_file_of_the_same_kind():
    r = _report({
        "teacher": _entry({"torch": {"1": 1000}}),
        "teacher.onnx": _entry({"onnxruntime": {"1": 400}}),
        "teacher.dynamic.onnx": _entry({"onnxruntime": {"1": 300}}),
        "student.onnx": _entry({"onnxruntime": {"1": 100}}),
        "student.dynamic.onnx": _entry({"onnxruntime": {"1": 150}}),
        "student.static.onnx": _entry({"onnxruntime": {"1": 120}}),
    })
    _ratios(r, "cpu")
    v = {k: e["vs_teacher"] for k, e in r["models"].items()}
    assert v["student.onnx"]["same_backend"]["onnxruntime"]["speedup_p50@1"] == 4.0
    assert v["student.dynamic.onnx"]["same_backend"]["onnxruntime"]["speedup_p50@1"] == 2.0
    # no teacher.static.onnx: the teacher's fastest file on onnxruntime
    static = v["student.static.onnx"]["same_backend"]["onnxruntime"]
    assert static["teacher@1"] == "teacher.dynamic.onnx" and static["speedup_p50@1"] == 2.5
    # headlines: against the teacher's fastest over all its files (300 us)
    assert v["student.onnx"]["speedup_p50@1"] == 3.0
    assert v["student.dynamic.onnx"]["speedup_p50@1"] == 2.0
    assert v["student.onnx"]["teacher_label@1"] == "teacher.dynamic.onnx"
    assert teacher_fastest(r, "1") == (300, "teacher.dynamic.onnx", "onnxruntime")


def test_no_teacher_measurement_leaves_no_speedups():
    r = _report({"teacher": _entry({}), "student": _entry({"torch": {"1": 100}})})
    _ratios(r, "cpu")
    v = r["models"]["student"]["vs_teacher"]
    assert v["same_backend"] == {} and not any(k.startswith("speedup") for k in v)
    markdown(r)  # renders without the teacher's numbers


def test_markdown_ratio_tables(rep):
    md = markdown(rep)
    lines = md.splitlines()
    head = next(x for x in lines if x.startswith("| model | backend | size |"))
    assert head.endswith("| speed-up p50@1 vs teacher's fastest |")
    row = next(x for x in lines if x.startswith("| student.onnx | onnxruntime | "))
    assert row.endswith("| 4.00 |")  # 400 us / 100 us
    assert next(x for x in lines if x.startswith("| teacher | torch | 3")).endswith("| 0.40 |")
    title = "## Ratios to the teacher (fastest backend vs the teacher's fastest backend, same run)"
    assert title in md
    assert "B=1: `teacher.onnx` on onnxruntime (400 µs)" in md
    assert "B=16: `teacher` on torch (4000 µs)" in md
    ratio = lines[lines.index(title):]
    srow = next(x for x in ratio if x.startswith("| student.onnx |"))
    assert srow.split(" | ")[4:9] == ["onnxruntime", "4.0", "2.0", "4.0", "2.0 |"]
    same = lines[lines.index("## Speed-up vs the teacher on the same backend"):]
    assert "| student.onnx | onnxruntime | teacher.onnx | 4.0 | 2.5 |" in same
    assert "| student | torch | teacher | 2.0 | 4.0 |" in same
    assert "| other | onnxruntime | teacher.onnx | 2.0 |  |" in same
    assert "nan" not in md and "None" not in md


def test_label_groups_merge_overlapping_markers():
    xy = [(0.2, 0.5), (0.9, 0.1), (0.2, 0.5), (0.21, 0.51), (0.5, 0.5)]
    assert label_groups(xy) == [[0, 2, 3], [1], [4]]
    labels = marker_labels(xy)
    assert [t for t, _, _ in labels] == ["1,3,4", "2", "5"]
    assert labels[0][1:] == pytest.approx((0.61 / 3, 1.51 / 3))
    assert marker_labels([(0.1, 0.1), (0.1, 0.3)]) == [("1", 0.1, 0.1), ("2", 0.1, 0.3)]
    assert label_groups([]) == []


def test_pareto_figure_prints_one_label_for_coincident_points(tmp_path):
    r = _report({
        "a": _entry({"torch": {"1": 100}}, 1000, 0.30),
        "b": _entry({"torch": {"1": 1000}, "onnxruntime": {"1": 1001}}, 1000, 0.40),
        "c": _entry({"torch": {"1": 300}}, 500, 0.35),
    })
    fig = pareto_figure(r)
    try:
        texts = {t.get_text(): t for t in fig.axes[0].texts}
        assert set(texts) == {"1", "2,3", "4"}  # b on torch and on onnxruntime share a label
        # the combined label sits on the two markers, within the axes
        x, y = texts["2,3"].get_position()
        assert 0 < x < 1 and 0 < y < 1 and texts["1"].get_position()[0] < x
        fig.savefig(tmp_path / "p.png")
        assert (tmp_path / "p.png").stat().st_size > 0
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert pareto_figure(_report({"a": _entry({"torch": {"1": 100}})})) is None  # no metrics


class _FakeEngine:
    """Stands in for TensorRTRunner: a model whose score for item i is i * (last item)."""

    def __init__(self, n: int, k: int, full: bool):
        self.n, self.k, self.full, self.calls = n, k, full, []

    def has_output(self, name):
        return name in ("scores", "ids") or (self.full and name == "all_scores")

    def run_torch(self, seq, outputs=("scores", "ids")):
        self.calls.append((tuple(seq.shape), outputs))
        scores = seq[:, -1:].float() * torch.arange(self.n + 1).float()
        if outputs == ("all_scores",):
            return (scores.half(),)
        top = scores.topk(self.k, dim=-1)
        return top.values.half(), top.indices.int()


@pytest.mark.parametrize("full", [True, False])
def test_tensorrt_scorer_assembles_full_scores(full):
    from recshrink.errors import RecshrinkError
    from recshrink.export.tensorrt import tensorrt_scorer

    eng = _FakeEngine(n=6, k=2, full=full)
    score = tensorrt_scorer(eng, {"num_items": "6", "max_len": "4", "max_batch": 2})
    hist = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 5, 4, 3, 2, 1], [0, 0, 0, 0, 2, 2]])
    out = score(hist)
    assert out.shape == (3, 7) and out.dtype == torch.float32
    # chunks of max_batch; the batch trimmed of padding (to 5) and cut to max_len (4)
    assert [c[0] for c in eng.calls] == [(2, 4), (1, 4)]
    if full:
        assert eng.calls[0][1] == ("all_scores",)
        assert out[2].tolist() == [2.0 * i for i in range(7)]
    else:  # top-K fill, as onnx_scorer: the K best keep their scores, the rest the lowest
        assert out[2, 5:].tolist() == [10.0, 12.0] and out[2, 1:5].tolist() == [10.0] * 4
        assert np.isneginf(out[2, 0].item())
    with pytest.raises(RecshrinkError, match="num_items"):
        tensorrt_scorer(eng, {})
    if full:  # a top-K fill takes its width from meta.json; full scores are checked against it
        with pytest.raises(RecshrinkError, match="expected"):
            tensorrt_scorer(eng, {"num_items": "9"})(hist)

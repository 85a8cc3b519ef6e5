import json

import pytest
import torch

from recshrink.models.io import load_model
from recshrink.api import evaluate
from recshrink.pipeline import run_recipe
from recshrink.recipe import parse_recipe

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"format": "synthetic", "max_len": 12,
             "synthetic": {"users": 200, "items": 40, "categories": 4, "max_len": 12}},
    "teacher": {"name": "t", "model": "sasrec",
                "args": {"dim": 16, "layers": 1, "heads": 2},
                "train": {"epochs": 3, "batch_size": 32, "num_negatives": 16}},
    "baselines": [{"name": "g_alone", "model": "gru", "args": {"dim": 8},
                   "train": {"epochs": 2, "batch_size": 32, "num_negatives": 16}}],
    "students": [{"name": "g_kd", "model": "gru", "args": {"dim": 8},
                  "train": {"epochs": 2, "batch_size": 32, "num_negatives": 16},
                  "distill": {"top_m": 10, "kd_negatives": 16, "rank_weight": 0.1}}],
}  # fmt: skip


def test_recipe_end_to_end(tmp_path):
    torch.set_num_threads(1)
    recipe = parse_recipe(json.loads(json.dumps(TINY)))
    report = run_recipe(recipe, tmp_path, progress=False)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["models"].keys() == {"t", "g_alone", "g_kd"}
    assert saved["dataset"]["users"] == 200 and saved["dataset"]["items"] == 40
    assert saved["teacher"] == "t"
    t, b, s = (saved["models"][k] for k in ("t", "g_alone", "g_kd"))
    assert (t["role"], b["role"], s["role"]) == ("teacher", "baseline", "student")
    for m in (t, b, s):
        for key in ("hr@10", "ndcg@10", "f1@10", "mrr"):
            assert 0.0 <= m["metrics"][key] <= 1.0
        assert m["metrics"]["shift"]["count"] + m["metrics"]["stable"]["count"] == 200
        assert m["size_bytes"] > 0 and m["train_seconds"] is not None
    assert s["teacher"] == "t" and s["losses"] == ["ground_truth", "logit_kd", "ranking_kd",
                                                 "init_items_pca"]
    assert s["retention"] == pytest.approx(s["metrics"]["ndcg@10"] / t["metrics"]["ndcg@10"],
                                           abs=1e-4)
    assert s["vs_baseline"] == pytest.approx(
        s["metrics"]["ndcg@10"] / b["metrics"]["ndcg@10"], abs=1e-3)
    assert s["baseline"] == "g_alone" and 0.0 <= s["fidelity@10"] <= 1.0
    student, meta = load_model(tmp_path / "students" / "g_kd")
    assert meta.steps[0]["type"] == "distill" and meta.steps[0]["teacher"] == "t"
    assert student.num_params() == s["params"] == 41 * 8 + 3 * (8 * 8 * 2 + 16)
    # fidelity@10: the student's top 10 against the teacher's, both masked like every metric
    data = recipe.data.load()
    sp = data.split(recipe.data.max_len, recipe.data.shift_window)
    tops = [evaluate(load_model(tmp_path / d)[0], data, splits=sp, per_user=True)[1].top[:, :10]
            for d in ("teacher", "students/g_kd")]  # fmt: skip
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(tops[0].tolist(), tops[1].tolist())]
    assert s["fidelity@10"] == round(sum(overlap) / len(overlap), 4)
    # same recipe, same seed: the same metrics to the last digit (resumed runs are skipped)
    again = run_recipe(recipe, tmp_path / "again", progress=False)
    for name in report["models"]:
        assert again["models"][name]["metrics"] == report["models"][name]["metrics"]


def test_recipe_compression_stages_and_gate(tmp_path):
    from recshrink.errors import RecshrinkError

    torch.set_num_threads(1)
    raw = json.loads(json.dumps(TINY))
    raw["baselines"] = []
    raw["prune"] = [{"name": "g_p50", "model": "g_kd",
                     "config": {"ratio": 0.5, "recover": "finetune"},
                     "train": {"epochs": 1, "batch_size": 32, "num_negatives": 16}}]
    raw["quantize"] = [{"name": "g_int8", "model": "g_kd", "bits": 8}]
    # one exported model: each RNN export costs a fresh process (the INT8 table's export as
    # DequantizeLinear is tested in tests/compress/test_quantize.py)
    raw["export"] = {"models": ["g_kd"], "quantize": ["fp16"],
                     "retrieval": {"index": "flat", "recall_users": 50}}
    raw["benchmark"] = {"batches": [1, 4], "budget_s": 0.02}
    report = run_recipe(parse_recipe(raw), tmp_path, progress=False)
    m = report["models"]
    assert m["g_p50"]["role"] == "pruned" and m["g_p50"]["parent"] == "g_kd"
    assert [s["type"] for s in m["g_p50"]["steps"]] == ["distill", "prune"]
    assert m["g_p50"]["builder_args"]["hidden"] == 4
    assert m["g_int8"]["steps"][-1] == {"type": "quantize", "mode": "rowwise-int8",
                                        "target": "item_table"}  # fmt: skip
    assert m["g_int8"]["vs_parent"] == pytest.approx(
        m["g_int8"]["metrics"]["ndcg@10"] / m["g_kd"]["metrics"]["ndcg@10"], abs=1e-3)
    exp = m["g_kd"]["export"]
    assert exp["export_agreement@10"] == 1.0 and exp["trt_compatible"] and exp["bytes"] > 0
    assert exp["quantized"]["fp16"]["agreement@10"] >= 0.9
    assert "export" not in m["g_int8"]
    assert "torch" in m["t"]["latency_us"]["cpu"] and "1" in m["t"]["latency_us"]["cpu"]["torch"]
    assert "g_kd.onnx" in exp["benchmark"]
    # the retrieval artifact: exact (flat) index, so the same quality as the exact graph
    assert exp["retrieval"]["recall@10"] == 1.0 and exp["retrieval"]["index"] == "Flat,fp32"
    bench = json.loads((tmp_path / "benchmark.json").read_text())["models"]
    assert bench["g_kd.ann"]["kind"] == "retrieval"
    assert bench["g_kd.ann"]["metrics"]["ndcg@10"] == pytest.approx(
        bench["g_kd.onnx"]["metrics"]["ndcg@10"], abs=1e-6)  # fmt: skip
    for f in ("report.json", "report.md", "pareto.png", "benchmark.json"):
        assert (tmp_path / f).is_file(), f
    assert "valid" in bench["g_kd.ann"]
    # benchmark.models picks entries; valid: false scores the test split only
    raw_b = {**raw, "benchmark": {**raw["benchmark"], "models": ["t", "g_kd.ann"], "valid": False}}
    run_recipe(parse_recipe(raw_b), tmp_path, progress=False, from_stage="benchmark")
    picked = json.loads((tmp_path / "benchmark.json").read_text())["models"]
    assert list(picked) == ["t", "g_kd.ann"] and all("valid" not in e for e in picked.values())
    assert picked["g_kd.ann"]["metrics"] == bench["g_kd.ann"]["metrics"]
    # peak memory after each stage, non-decreasing (the peak up to that stage)
    peaks = json.loads((tmp_path / "report.json").read_text())["peak_rss_bytes"]
    assert list(peaks) == ["train", "compress", "export", "benchmark"]
    seq = [p["process"] for p in peaks.values()]
    assert seq == sorted(seq) and seq[0] > 50 * 2**20  # torch alone takes more than 50 MB
    # a gate the student cannot pass stops the run with one clear error
    raw2 = json.loads(json.dumps(TINY))
    raw2["baselines"] = []
    raw2["gates"] = {"min_retention": {"g_kd": 50.0}}
    with pytest.raises(RecshrinkError, match="quality gate failed: g_kd validation retention"):
        run_recipe(parse_recipe(raw2), tmp_path / "gated", progress=False)


def test_recipe_refers_to_unknown_models():
    from recshrink.errors import RecipeError

    raw = json.loads(json.dumps(TINY))
    raw["quantize"] = [{"name": "q", "model": "nobody"}]
    with pytest.raises(RecipeError, match="quantize.0.model: 'nobody' is not a model"):
        parse_recipe(raw)
    raw = json.loads(json.dumps(TINY))
    raw["export"] = {"models": ["ghost"]}
    with pytest.raises(RecipeError, match="export.models: 'ghost'"):
        parse_recipe(raw)
    raw = json.loads(json.dumps(TINY))
    raw["benchmark"] = {"backends": ["tflite"]}
    with pytest.raises(RecipeError, match="benchmark.backends: unknown backend 'tflite'"):
        parse_recipe(raw)


def test_rerun_reuses_manifests_and_from_redoes(tmp_path, monkeypatch):
    import recshrink.api.training as api_train

    torch.set_num_threads(1)
    raw = json.loads(json.dumps(TINY))
    raw["quantize"] = [{"name": "g_int8", "model": "g_kd", "bits": 8}]
    recipe = parse_recipe(raw)
    first = run_recipe(recipe, tmp_path, progress=False)
    man = json.loads((tmp_path / "students" / "g_kd" / "manifest.json").read_text())
    assert man["stage"] == "students" and man["entry"]["metrics"] == first["models"]["g_kd"]["metrics"]
    calls = []
    real_fit, real_distill = api_train.fit, api_train.distill_fit
    monkeypatch.setattr(api_train, "fit", lambda *a, **k: calls.append("fit") or real_fit(*a, **k))
    monkeypatch.setattr(api_train, "distill_fit",
                        lambda *a, **k: calls.append("distill") or real_distill(*a, **k))
    again = run_recipe(recipe, tmp_path, progress=False)
    assert calls == []  # every model came from its manifest
    assert again["models"] == first["models"]
    redo = run_recipe(recipe, tmp_path, progress=False, from_stage="students")
    assert calls == ["distill"]  # the student again (its training state resumes: same weights)
    assert redo["models"]["g_kd"]["metrics"] == first["models"]["g_kd"]["metrics"]
    # a changed student config invalidates the student and what was made from it
    raw["students"][0]["distill"]["rank_weight"] = 0.3
    calls.clear()
    run_recipe(parse_recipe(raw), tmp_path, progress=False)
    assert calls == ["distill"]
    from recshrink.errors import RecshrinkError

    with pytest.raises(RecshrinkError, match="--from"):
        run_recipe(recipe, tmp_path, progress=False, from_stage="nonsense")


def test_search_picks_the_fastest_trial_within_the_drop(tmp_path):
    torch.set_num_threads(1)
    raw = json.loads(json.dumps(TINY))
    raw["baselines"], raw["students"] = [], []
    tr = {"epochs": 1, "batch_size": 32, "num_negatives": 16}
    # the CNN exports in this process (an RNN needs a fresh one each time), and max_trials stops
    # the grid before the GRU
    raw["search"] = {"students": ["cnn_small", "gru_tiny"], "prune_ratios": [0.0, 0.5],
                     "quantize": ["none", "int8", "dynamic"], "max_drop": 0.99, "max_trials": 6,
                     "budget_s": 0.02, "train": tr, "prune_train": tr,
                     "distill": {"top_m": 10, "kd_negatives": 16}}
    raw["benchmark"] = {"batches": [1], "budget_s": 0.02}
    report = run_recipe(parse_recipe(raw), tmp_path, progress=False)
    s = report["search"]
    assert len(s["trials"]) == 6 and "max_trials" in s["message"]
    # the grid: larger prune ratios first within a student, each with every quantization
    assert [t["id"] for t in s["trials"]] == [
        "cnn_small-p50-none", "cnn_small-p50-int8", "cnn_small-p50-dynamic",
        "cnn_small-p0-none", "cnn_small-p0-int8", "cnn_small-p0-dynamic"]  # fmt: skip
    ok = [t for t in s["trials"] if t["meets"]]
    assert s["best"] == min(ok, key=lambda t: t["p50"])["id"]
    # validation chooses: the floor is the teacher's validation NDCG@10, trials meet it on
    # validation; test numbers are reported beside them
    tv = report["models"]["t"]["valid"]["ndcg@10"]
    tt = report["models"]["t"]["metrics"]["ndcg@10"]
    assert s["split"] == "valid" and s["floor"] == pytest.approx(tv * (1 - 0.99), abs=1e-6)
    for t in s["trials"]:
        assert t["ndcg@10"] == t["valid"]["ndcg@10"]
        assert t["drop"] == pytest.approx(1 - t["valid"]["ndcg@10"] / tv, abs=1e-3)
        assert t["test_drop"] == pytest.approx(1 - t["test"]["ndcg@10"] / tt, abs=1e-3)
        assert t["meets"] == (t["valid"]["ndcg@10"] >= s["floor"])
        assert (tmp_path / "search" / "trials" / f"{t['id']}.onnx").is_file()
    int8 = next(t for t in s["trials"] if t["id"] == "cnn_small-p0-int8")
    none = next(t for t in s["trials"] if t["id"] == "cnn_small-p0-none")
    assert int8["bytes"] < none["bytes"]
    dyn = next(t for t in s["trials"] if t["id"] == "cnn_small-p0-dynamic")
    assert dyn["steps"][-1]["mode"] == "int8-dynamic"  # ORT INT8 of the scoring MatMul
    ops = {n.op_type for n in __import__("onnx").load(
        str(tmp_path / "search" / "trials" / "cnn_small-p0-dynamic.onnx")).graph.node}
    assert "MatMulInteger" in ops and "MatMulInteger" not in {n.op_type for n in __import__(
        "onnx").load(str(tmp_path / "search" / "trials" / "cnn_small-p0-none.onnx")).graph.node}
    assert "## Search" in (tmp_path / "report.md").read_text()
    assert "valid NDCG@10" in (tmp_path / "report.md").read_text()
    # every model has valid and test metrics
    assert all("valid" in e and "metrics" in e for e in report["models"].values())
    # an impossible budget: the search says that no trial meets it
    raw["search"]["max_drop"] = 0.0
    raw["search"]["max_trials"] = 1
    del raw["benchmark"]
    s2 = run_recipe(parse_recipe(raw), tmp_path, progress=False)["search"]  # models reused
    if not s2["trials"][0]["meets"]:
        assert s2["best"] is None and s2["message"].startswith("no trial keeps validation ndcg@10")
    md = (tmp_path / "report.md").read_text()  # a search without a benchmark writes its table
    assert md.startswith("# Search") and s2["trials"][0]["id"] in md


def test_prune_recovery_never_reinitialises_the_item_table(tmp_path):
    """A student distilled with ``init_items: pca`` keeps its trained item table when pruned:
    recovery distils an already trained model (a PCA re-projection would scramble it)."""
    from recshrink.compress.distill import DistillConfig
    from recshrink.compress.prune import PruneConfig
    from recshrink.data.split import leave_one_out
    from recshrink.data.synthetic import SyntheticConfig, synthetic
    from recshrink.models import build_model
    from recshrink.api import prune
    from recshrink.train.config import TrainConfig

    torch.set_num_threads(1)
    data = synthetic(SyntheticConfig(users=80, items=30, categories=3, min_len=4, max_len=10))
    split = leave_one_out(data, 10)
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=8, max_len=10).eval()
    before = model.item_table().detach().clone()
    pruned = prune(model, data, out=tmp_path / "p", config=PruneConfig(ratio=0.5), split=split,
                   train=TrainConfig(epochs=1, batch_size=32, num_negatives=8, lr=1e-4),
                   kd=DistillConfig(top_m=5, kd_negatives=8, init_items="pca")).model
    after = pruned.item_table().detach()
    assert after.shape == before.shape
    cos = torch.nn.functional.cosine_similarity(after[1:], before[1:], dim=-1)
    assert cos.min() > 0.99  # one epoch at lr 1e-4 moves rows a little; a PCA rotation would not keep them


def _one_thread_each(raw: dict) -> dict:
    for spec in [raw["teacher"], *raw["baselines"], *raw["students"]]:
        spec["train"]["threads"] = 1
    return raw


def test_parallel_jobs_give_the_sequential_results(tmp_path):
    torch.set_num_threads(1)
    raw = _one_thread_each(json.loads(json.dumps(TINY)))
    raw["baselines"].append({"name": "c_alone", "model": "cnn", "args": {"dim": 8},
                             "train": {"epochs": 2, "batch_size": 32, "num_negatives": 16,
                                       "threads": 1}})  # fmt: skip
    raw["prune"] = [{"name": "g_p50", "model": "g_kd", "config": {"ratio": 0.5, "recover": "distill"},
                     "train": {"epochs": 2, "batch_size": 32, "num_negatives": 16, "threads": 1},
                     "distill": {"top_m": 10, "kd_negatives": 16}}]  # fmt: skip
    seq = run_recipe(parse_recipe(raw), tmp_path / "seq", progress=False)
    par = run_recipe(parse_recipe({**raw, "jobs": 2}), tmp_path / "par", progress=False)
    assert list(par["models"]) == list(seq["models"]) == ["t", "g_alone", "c_alone", "g_kd", "g_p50"]
    assert par["models"]["g_p50"]["steps"] == seq["models"]["g_p50"]["steps"]
    assert par["models"]["g_p50"]["params"] == seq["models"]["g_p50"]["params"] < par["models"]["g_kd"]["params"]
    for name, entry in seq["models"].items():
        assert par["models"][name]["metrics"] == entry["metrics"]
        assert par["models"][name].get("vs_baseline") == entry.get("vs_baseline")
    man = json.loads((tmp_path / "par" / "students" / "g_kd" / "manifest.json").read_text())
    assert man["entry"]["metrics"] == seq["models"]["g_kd"]["metrics"]
    # a re-run in parallel mode trains nothing: every model comes from its manifest
    again = run_recipe(parse_recipe({**raw, "jobs": 2}), tmp_path / "par", progress=False)
    assert again["models"] == par["models"]


def test_parallel_worker_error_stops_the_run(tmp_path):
    from recshrink.errors import RecshrinkError
    from recshrink.models import build_model
    from recshrink.models.io import save_model

    torch.set_num_threads(1)
    save_model(build_model("gru", 30, dim=8, max_len=12), tmp_path / "other")
    raw = _one_thread_each(json.loads(json.dumps(TINY)))
    raw["jobs"] = 2
    raw["baselines"][0]["load"] = str(tmp_path / "other")
    with pytest.raises(RecshrinkError, match="model has 30 items but the data has 40"):
        run_recipe(parse_recipe(raw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "students" / "g_kd" / "manifest.json").exists()


def test_search_over_a_trained_student_directory(tmp_path):
    from recshrink.errors import RecshrinkError

    torch.set_num_threads(1)
    first = run_recipe(parse_recipe(json.loads(json.dumps(TINY))), tmp_path / "run", progress=False)
    raw = json.loads(json.dumps(TINY))
    raw["baselines"], raw["students"] = [], []
    student_dir = str(tmp_path / "run" / "students" / "g_kd")
    raw["search"] = {"students": [student_dir], "prune_ratios": [0.0], "quantize": ["none", "dynamic"],
                     "max_drop": 0.99, "budget_s": 0.02}  # fmt: skip
    s = run_recipe(parse_recipe(raw), tmp_path / "search", progress=False)["search"]
    assert [t["id"] for t in s["trials"]] == ["g_kd-p0-none", "g_kd-p0-dynamic"]
    none = s["trials"][0]
    assert none["valid"]["ndcg@10"] == pytest.approx(first["models"]["g_kd"]["valid"]["ndcg@10"],
                                                     abs=1e-4)  # fmt: skip
    assert none["test"]["ndcg@10"] == pytest.approx(first["models"]["g_kd"]["metrics"]["ndcg@10"],
                                                    abs=1e-4)  # fmt: skip
    assert none["steps"][0]["type"] == "distill"  # the student's own steps, as it was made
    assert not (tmp_path / "search" / "search" / "students").exists()  # nothing distilled
    raw["search"]["students"] = [str(tmp_path / "missing" / "dir")]
    with pytest.raises(RecshrinkError, match="search.students.0"):
        run_recipe(parse_recipe(raw), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    raw["search"]["students"] = ["nonsense"]
    with pytest.raises(Exception, match="neither a model builder"):
        parse_recipe(raw)


def test_baseline_matches_builder_and_arguments():
    """A student is compared with a baseline of the same builder *and* arguments: a wider GRU
    student is not credited against the narrow GRU trained alone."""
    from recshrink.pipeline.training import arch_key as _arch
    from recshrink.recipe import ModelSpec

    narrow = ModelSpec(name="a", model="gru_small")
    wide = ModelSpec(name="b", model="gru_small", args={"hidden": 192})
    same = ModelSpec(name="c", model="gru_small", args={"hidden": 192})
    assert _arch(narrow) != _arch(wide) and _arch(wide) == _arch(same)
    assert _arch(ModelSpec(name="d", model="gru", args={"dim": 8, "hidden": 16})) == _arch(
        ModelSpec(name="e", model="gru", args={"hidden": 16, "dim": 8}))

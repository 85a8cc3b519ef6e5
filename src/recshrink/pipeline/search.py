"""Accuracy-gated search: the fastest (or smallest) compressed student within a quality budget.

Trials are the grid of students (builder names, distilled here, or directories of students
trained earlier, taken as they are; in the order given) x prune ratios (largest
first) x quantization (row-wise INT8/INT4 item table, or ONNX Runtime dynamic INT8 of the
exported graph, scoring MatMul included), tried until the trial or time budget runs out. Each
trial is distilled from the teacher (shared between trials of the same student through the
pipeline's manifests), pruned with recovery, quantized, exported to ONNX and measured through
ONNX Runtime: NDCG@10 / F1@10 on the validation and the test split, and p50 latency at the
objective's batch size. Validation chooses: a trial is accepted when its validation metric stays
within ``max_drop`` of the teacher's validation metric, and the best accepted trial wins; the
test numbers are only reported. The report lists every trial with both, and says so when none
meets the constraint.
"""

from __future__ import annotations

import copy
import time
from itertools import product
from pathlib import Path

from recshrink.api import check_compatible, distill, popular_items, prune
from recshrink.api.exports import export_checked
from recshrink.export.backends import open_backend
from recshrink.benchmark.run import time_runner
from recshrink.compress.prune import PruneConfig
from recshrink.compress.quantize import (
    OnnxQuantConfig, RowwiseConfig, quantize_item_table, quantize_onnx,
)  # fmt: skip
from recshrink.export.onnx import OnnxExportConfig
from recshrink.export.artifacts import sidecar_path
from recshrink.models.io import load_model
from recshrink.recipe import SearchSpec, StudentSpec
from recshrink.train.config import plain
from recshrink.train.evaluate import evaluate
from recshrink.train.trainer import state_digest


def run_search(spec: SearchSpec, recipe, data, split, out: Path, teacher, teacher_entry: dict,
               manifests, teacher_key: str, progress: bool = True) -> dict:  # fmt: skip
    """Run the trials; returns ``{"trials": [...], "best": id | None, "message": str}``.

    ``teacher_entry`` is the teacher's report entry: its ``valid`` metrics set the floor, its
    test ``metrics`` only the reported test drop.
    """
    t0 = time.perf_counter()
    root = out / "search"
    t_valid, t_test = teacher_entry["valid"][spec.metric], teacher_entry["metrics"][spec.metric]
    floor = t_valid * (1.0 - spec.max_drop)  # on validation: the test split never chooses
    popular = popular_items(split, data.num_items)
    trials: list[dict] = []
    students: dict[str, tuple] = {}
    grid = list(product(spec.students, sorted(spec.prune_ratios, reverse=True), spec.quantize))
    message = ""
    for n, (name, ratio, quant) in enumerate(grid):
        if n >= spec.max_trials:
            message = f"stopped after {spec.max_trials} trials (max_trials)"
            break
        if spec.max_minutes and time.perf_counter() - t0 > spec.max_minutes * 60:
            message = f"stopped after {spec.max_minutes} minutes (max_minutes)"
            break
        label = Path(name).name
        tid = f"{label}-p{int(round(ratio * 100))}-{quant}"
        if name not in students and "/" in name:  # a trained student, taken as it is
            model, meta = load_model(name)
            check_compatible(model, data, name)
            key = manifests.key("search-loaded", state_digest(model))
            students[name] = (model, key, meta.steps or [{"type": "loaded", "path": name}])
        if name not in students:  # distil each student once (manifests reuse earlier runs)
            sspec = StudentSpec(name=name, model=name, train=spec.train, distill=spec.distill)
            where = root / "students" / name
            key = manifests.key("search-student", sspec.model_dump(mode="json"), teacher_key)
            hit = manifests.hit("students", where, key)
            if hit:
                model = load_model(where)[0]
            else:
                ts = time.perf_counter()
                model = distill(teacher, data, sspec.model, out=where,
                                max_len=recipe.data.max_len, split=split, config=sspec.train,
                                kd=sspec.distill, cache_dir=out / "cache",
                                teacher_label=recipe.teacher.label, progress=progress,
                                desc=sspec.label).model  # fmt: skip
                manifests.record("students", where, key, time.perf_counter() - ts, {})
            students[name] = (model, key, [{"type": "distill", "teacher": recipe.teacher.label}])
        model, key, steps = students[name]
        if ratio > 0:
            pkey = manifests.key("search-prune", [ratio, plain(spec.prune_train)], key)
            legacy = manifests.key("search-prune", [ratio, str(spec.prune_train)], key)
            where = root / "pruned" / f"{label}-p{int(round(ratio * 100))}"
            hit = manifests.hit("prune", where, pkey, legacy)
            pcfg = PruneConfig(ratio=ratio, importance="taylor", recover="distill")
            if hit:
                model = load_model(where)[0]
            else:
                ts = time.perf_counter()
                model = prune(model, data, out=where, config=pcfg, train=spec.prune_train,
                              kd=spec.distill, split=split, steps=steps, parent_label=label,
                              cache_dir=out / "cache", progress=progress).model  # fmt: skip
                manifests.record("prune", where, pkey, time.perf_counter() - ts, {})
            steps = [*steps, pcfg.step()]
        if quant in ("int8", "int4"):
            cfg = RowwiseConfig(bits=8 if quant == "int8" else 4)
            model = quantize_item_table(copy.deepcopy(model), cfg)
            steps = [*steps, cfg.step()]
        path = root / "trials" / f"{tid}.onnx"
        trial = {"id": tid, "student": label, "prune_ratio": ratio, "quantize": quant,
                 "params": model.num_params(), "steps": steps}  # fmt: skip
        try:
            fp32 = path.with_suffix(".fp32.onnx") if quant == "dynamic" else path
            info = export_checked(model, fp32, split, steps=steps, item_ids=data.item_ids,
                                  popular=popular, cfg=OnnxExportConfig(
                                      full_scores=True, min_agreement=0.0,
                                      mask_history=recipe.evaluate.mask_history))
            if quant == "dynamic":  # ONNX Runtime dynamic INT8 of the exported graph
                qcfg = OnnxQuantConfig(mode="dynamic")
                quantize_onnx(fp32, path, qcfg)
                sidecar_path(path).write_text(sidecar_path(fp32).read_text())
                info["bytes"] = path.stat().st_size
                trial["steps"] = steps = [*steps, qcfg.step()]
        except Exception as exc:  # an export failure is a failed trial, not a failed search
            trial["error"] = str(exc)[:300]
            trials.append(trial)
            continue
        runner = open_backend(path, "onnxruntime", threads=spec.threads)
        ev = recipe.evaluate.kwargs()
        mv = evaluate(runner.scorer, split.valid, data.item_attrs, **ev)
        m = evaluate(runner.scorer, split.test, data.item_attrs, **ev)
        lat, _ = time_runner(runner, split.test.histories, [spec.batch], spec.budget_s)
        stats = lat[str(spec.batch)]
        trial.update({"bytes": info["bytes"], "export_agreement@10": info["export_agreement@10"],
                      "valid": {k: round(mv[k], 6) for k in ("ndcg@10", "f1@10")},
                      "test": {k: round(m[k], 6) for k in ("ndcg@10", "f1@10")},
                      "ndcg@10": round(mv["ndcg@10"], 6), "f1@10": round(mv["f1@10"], 6),
                      "p50": stats["p50"],
                      "p99": stats["p99"], "batch": spec.batch,
                      "drop": round(1.0 - mv[spec.metric] / max(t_valid, 1e-12), 4),
                      "test_drop": round(1.0 - m[spec.metric] / max(t_test, 1e-12), 4),
                      "meets": mv[spec.metric] >= floor})  # fmt: skip
        trials.append(trial)
        if progress:
            print(f"[search] {tid}: valid {spec.metric} {mv[spec.metric]:.4f} (drop "
                  f"{trial['drop']:.3f}), p50@{spec.batch} {stats['p50']:.0f} us, "
                  f"{info['bytes']:,} B", flush=True)  # fmt: skip
    ok = [t for t in trials if t.get("meets")]
    objective = "p50" if spec.objective == "latency" else "bytes"
    best = min(ok, key=lambda t: t[objective]) if ok else None
    if best:
        message = (f"best: {best['id']} (validation {spec.metric} {best[spec.metric]:.4f}, drop "
                   f"{best['drop']:.3f} <= {spec.max_drop}; test {spec.metric} "
                   f"{best['test'][spec.metric]:.4f}, drop {best['test_drop']:.3f}; {objective} "
                   f"{best[objective]})" + (f"; {message}" if message else ""))  # fmt: skip
    else:
        message = (f"no trial keeps validation {spec.metric} within {spec.max_drop:.0%} of the "
                   f"teacher's (floor {floor:.4f})" + (f"; {message}" if message else ""))  # fmt: skip
    return {"objective": spec.objective, "metric": spec.metric, "max_drop": spec.max_drop,
            "split": "valid", "floor": round(floor, 6), "teacher_valid": round(t_valid, 6),
            "teacher_test": round(t_test, 6), "trials": trials, "best": best["id"] if best else None,
            "message": message, "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip

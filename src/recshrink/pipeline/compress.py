"""The stages after training: prune -> quantize -> export (+ ONNX Runtime quantization,
TensorRT engines), each adding its models to the report."""

from __future__ import annotations

import time
from pathlib import Path

from recshrink.api import export, popular_items, prune, quantize
from recshrink.api.training import save_trained
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.entries import model_entry
from recshrink.errors import RecshrinkError
from recshrink.export.ann_index import RetrievalConfig
from recshrink.export.onnx import OnnxExportConfig
from recshrink.export.tensorrt import TensorRTConfig, opt_length
from recshrink.fsutil import write_json
from recshrink.models.base import SeqRecModel
from recshrink.models.io import load_model
from recshrink.pipeline.gates import check_gates
from recshrink.pipeline.manifests import Manifests
from recshrink.pipeline.training import (
    TrainState, fidelity, model_dirs, split_metrics, teacher_top,
)  # fmt: skip
from recshrink.recipe import EvalSpec, Recipe


def derived_entry(model: SeqRecModel, role: str, where: Path, parent: str, steps: list[dict],
                  state: TrainState, report: dict, data: InteractionData, split: Split,
                  ev: EvalSpec, extra: dict) -> dict:  # fmt: skip
    """The report entry of a pruned or quantized model: test and valid metrics, retention of
    the teacher's NDCG@10 on each split, the ratio to its parent and fidelity to the teacher."""
    metrics, users = split_metrics(model, data, split, ev, per_user=True)
    valid = split_metrics(model, data, split, ev, "valid")
    t = report["models"][report["teacher"]]
    return model_entry(model, role, where, metrics, valid=valid, extra={
        "parent": parent, "steps": steps,
        "retention": round(metrics["ndcg@10"] / max(t["metrics"]["ndcg@10"], 1e-12), 4),
        "valid_retention": round(valid["ndcg@10"] / max(t["valid"]["ndcg@10"], 1e-12), 4),
        "vs_parent": round(metrics["ndcg@10"] /
                           max(report["models"][parent]["metrics"]["ndcg@10"], 1e-12), 4),
        "params_ratio": round(model.num_params() / state.teacher.num_params(), 4),
        "fidelity@10": fidelity(users.top, teacher_top(state, data, split, ev)),
        **extra})  # fmt: skip


def _reuse(hit: dict | None, name: str, where: Path, report: dict, made: dict,
           recipe: Recipe) -> bool:  # fmt: skip
    """Take a model and its report entry from a matching manifest (False: no match)."""
    if not hit:
        return False
    report["models"][name] = hit["entry"]
    made[name] = (load_model(where)[0], where, hit["entry"].get("steps", []))
    check_gates(recipe, report)
    return True


def _keep(stage: str, name: str, model: SeqRecModel, where: Path, steps: list[dict], key: str,
          t_stage: float, recipe: Recipe, out: Path, report: dict, made: dict,
          manifests: Manifests) -> None:  # fmt: skip
    """Record a made model (its report entry written): manifest, report.json, gates."""
    manifests.record(stage, where, key, time.perf_counter() - t_stage, report["models"][name])
    made[name] = (model, where, steps)
    write_json(out / "report.json", report)
    check_gates(recipe, report)


def prune_stage(recipe: Recipe, data: InteractionData, split: Split, out: Path, report: dict,
                made: dict, state: TrainState, progress: bool, manifests: Manifests,
                keys: dict[str, str]) -> None:  # fmt: skip
    """Prune each ``prune:`` job's parent (keys computed by the run; prunings may have run in
    workers, whose work this resumes)."""
    dirs = model_dirs(recipe, out)
    for job in recipe.prune:
        parent, _, psteps = made[job.model]
        where, key = dirs[job.name], keys[job.name]
        if _reuse(manifests.hit("prune", where, key), job.name, where, report, made, recipe):
            continue
        t_stage = time.perf_counter()
        res = prune(parent, data, out=where, config=job.config, train=job.train, kd=job.distill,
                    split=split, steps=psteps, parent_label=job.model, cache_dir=out / "cache",
                    progress=progress)  # fmt: skip
        steps = res.steps
        report["models"][job.name] = derived_entry(
            res.model, "pruned", where, job.model, steps, state, report, data, split,
            recipe.evaluate, {"prune": res.summary})  # fmt: skip
        _keep("prune", job.name, res.model, where, steps, key, t_stage, recipe, out, report,
              made, manifests)


def quantize_stage(recipe: Recipe, data: InteractionData, split: Split, out: Path, report: dict,
                   made: dict, state: TrainState, manifests: Manifests,
                   keys: dict[str, str]) -> None:  # fmt: skip
    """Row-wise quantize the item table of each ``quantize:`` job's parent."""
    for job in recipe.quantize:
        parent, _, psteps = made[job.model]
        where = out / "quantized" / job.name
        key = keys[job.name] = manifests.key("quantize", job.model_dump(mode="json"),
                                             keys[job.model])  # fmt: skip
        if _reuse(manifests.hit("quantize", where, key), job.name, where, report, made, recipe):
            continue
        t_stage = time.perf_counter()
        res = quantize(parent, f"rowwise-int{job.bits}")
        steps = [*psteps, res.summary["step"]]
        save_trained(res.model, where, data, split, steps, {"parent": job.model})
        report["models"][job.name] = derived_entry(
            res.model, "quantized", where, job.model, steps, state, report, data, split,
            recipe.evaluate, {})  # fmt: skip
        _keep("quantize", job.name, res.model, where, steps, key, t_stage, recipe, out, report,
              made, manifests)


def export_stage(recipe: Recipe, data: InteractionData, split: Split, out: Path, report: dict,
                 made: dict) -> list[tuple[str, Path]]:  # fmt: skip
    """Export ``export.models`` to ONNX (validated), quantize the graphs through ONNX Runtime and
    build TensorRT engines as asked; returns the (label, path) of every exported file."""
    exported: list[tuple[str, Path]] = []
    if not recipe.export:
        return exported
    ev = recipe.evaluate
    popular = popular_items(split, data.num_items)
    cfg = OnnxExportConfig(k=recipe.export.k, min_agreement=recipe.export.min_agreement,
                           full_scores=True, slim=recipe.export.slim,
                           mask_history=ev.mask_history)  # fmt: skip
    for name in recipe.export.models or list(made):
        model, _, steps = made[name]
        path = out / "export" / f"{name}.onnx"
        info = export(model, path, data=data, split=split, config=cfg, item_ids=data.item_ids,
                      popular=popular, steps=steps)
        exported.append((f"{name}.onnx", path))
        for mode in recipe.export.quantize:  # the sidecar comes along
            qpath = out / "export" / f"{name}.{mode}.onnx"
            res = quantize(path, mode, out=qpath, data=data, split=split, eval_kwargs=ev.kwargs())
            info.setdefault("quantized", {})[mode] = {
                k: res[k] for k in ("path", "size_ratio", "agreement@10", "step")}
            info["quantized"][mode]["bytes"] = res["after"]["bytes"]
            info["quantized"][mode]["ndcg@10"] = res["after"]["metrics"]["ndcg@10"]
            exported.append((f"{name}.{mode}.onnx", qpath))
        for precision in recipe.export.tensorrt:  # int8 engines come from static QDQ graphs
            src = out / "export" / f"{name}.static.onnx" if precision == "int8" else path
            if not src.is_file():
                raise RecshrinkError(f"export.tensorrt: int8 needs export.quantize: [static] "
                                     f"(no {src})")  # fmt: skip
            engine = out / "export" / f"{name}.{precision}.engine"
            built = export(src, engine, "tensorrt", config=TensorRTConfig(
                precision=precision, opt_len=opt_length(split.test.histories),
                timing_cache=str(out / "export" / "timing.cache")))  # fmt: skip
            info.setdefault("tensorrt", {})[precision] = {k: built[k] for k in ("path", "bytes")}
            exported.append((f"{name}.{precision}.engine", engine))
        if recipe.export.retrieval is not None:
            apath = out / "export" / f"{name}.ann"
            info["retrieval"] = export(model, apath, "ann", data=data, split=split,
                                       config=RetrievalConfig(**recipe.export.retrieval),
                                       item_ids=data.item_ids, popular=popular, steps=steps)  # fmt: skip
            exported.append((f"{name}.ann", apath))
        report["models"][name]["export"] = info
        write_json(out / "report.json", report)
    return exported

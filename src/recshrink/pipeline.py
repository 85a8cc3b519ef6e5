"""The recipe pipeline: data -> teacher -> baselines -> evaluate -> report.json."""

from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from recshrink import __version__
from recshrink.data.dataset import InteractionData
from recshrink.data.loaders import kcore_filter, load_data
from recshrink.data.split import Split, leave_one_out
from recshrink.data.synthetic import synthetic
from recshrink.errors import DataError, RecshrinkError
from recshrink.fsutil import write_json
from recshrink.metrics import topk_overlap
from recshrink.models import build_model
from recshrink.models.base import SeqRecModel
from recshrink.models.io import artifact_bytes, load_model, save_model
from recshrink.compress.distill import DistillConfig, distill
from recshrink.compress.prune import PruneConfig
from recshrink.recipe import DataSpec, EvalSpec, ModelSpec, Recipe, StudentSpec
from recshrink.train.evaluate import evaluate, model_scorer
from recshrink.train.config import TrainConfig, without_later_defaults
from recshrink.train.trainer import (
    TrainResult, fit, item_popularity, next_item_loss, state_digest,
)  # fmt: skip


def load_dataset(spec: DataSpec) -> InteractionData:
    """Load (and k-core filter) the data a :class:`DataSpec` describes.

    Raises:
        DataError: Missing or malformed files.
    """
    if spec.format == "synthetic":
        data = synthetic(spec.synthetic)
    else:
        path = spec.resolve(spec.path)
        options: dict = {}
        if spec.name:
            options["name"] = spec.name
        if spec.format == "s3rec" and spec.attributes:
            options["attributes"] = spec.resolve(spec.attributes)
        elif spec.format == "recbole" and spec.item_path:
            options["item_path"] = spec.resolve(spec.item_path)
        elif spec.format == "csv":
            options.update(spec.csv.model_dump())
        if not path.exists():
            hint = "" if Path(path).is_absolute() else (
                " (relative data paths start at data.root, $RECSHRINK_DATA or ./data)"
            )
            raise DataError(path, f"no such file{hint}")
        data = load_data(spec.format, path, **options)
    if spec.kcore > 1:
        data = kcore_filter(data, spec.kcore)
    return data


def dataset_entry(data: InteractionData) -> dict:
    """The ``dataset`` block of report.json."""
    return {**data.stats(), "fingerprint": data.fingerprint(), "source": data.source}


def machine_entry(device: str = "cpu") -> dict:
    """Where numbers were measured."""
    out = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def model_entry(
    model: SeqRecModel,
    role: str,
    artifact: Path,
    metrics: dict,
    *,
    train: dict | None = None,
    extra: dict | None = None,
    valid: dict | None = None,
) -> dict:
    """One model's block in report.json: ``metrics`` are on the test split, ``valid`` on the
    validation split (what gates and choices read)."""
    entry = {
        "arch": model.arch,
        "role": role,
        "builder_args": dict(model.builder_args),
        "params": model.num_params(),
        "size_bytes": artifact_bytes(artifact),
        "artifact": str(artifact),
        "train_seconds": (train or {}).get("seconds"),
        "metrics": _round(metrics),
    }
    if valid is not None:
        entry["valid"] = _round(valid)
    if train:
        entry["train"] = _round(train)
    entry.update(extra or {})
    return entry


def popular_items(split: Split, num_items: int, n: int = 100) -> list[int]:
    """The ``n`` most frequent items of the training split (answers for empty histories)."""
    pop = item_popularity(split.train, num_items)
    return [int(i) for i in torch.argsort(pop, descending=True, stable=True)[:n] if pop[i] > 0]


def _save(model: SeqRecModel, out_dir: Path, data: InteractionData, split: Split,
          steps: list[dict], extra: dict) -> None:
    """Save a model made from ``data``: its id map, data fingerprint, steps, and the popular
    items that answer empty histories."""
    save_model(model, out_dir, item_ids=data.item_ids, data_fingerprint=data.fingerprint(),
               steps=steps, extra={**extra, "popular": popular_items(split, data.num_items)})


def check_compatible(model: SeqRecModel, data: InteractionData, where: str) -> None:
    """Refuse a model whose catalogue does not match the data.

    Raises:
        RecshrinkError: Different item counts.
    """
    if model.num_items != data.num_items:
        raise RecshrinkError(
            f"{where}: model has {model.num_items} items but the data has {data.num_items}; "
            "was it trained on other data?"
        )


def _train_summary(result: TrainResult, loss: str) -> dict:
    return {
        "seconds": result.seconds,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "loss": loss,
        "valid_ndcg@10": result.best_valid.get("ndcg@10"),
        "history": result.history,
        "resumed_from": result.resumed_from,
    }


def train_or_load(
    spec: ModelSpec,
    data: InteractionData,
    split: Split,
    out_dir: Path,
    *,
    max_len: int,
    progress: bool = True,
) -> tuple[SeqRecModel, dict]:
    """Train the model a spec describes into ``out_dir`` (or load ``spec.load``).

    Returns:
        The model (best weights) and a training summary for the report.
    """
    if spec.load:
        model, meta = load_model(spec.load)
        check_compatible(model, data, spec.load)
        save_model(model, out_dir, item_ids=meta.item_ids or data.item_ids,
                   data_fingerprint=meta.data_fingerprint, steps=meta.steps,
                   extra={"loaded_from": str(spec.load)})  # fmt: skip
        return model, {"loaded_from": str(spec.load), "seconds": 0.0,
                       "fingerprint_matches": meta.data_fingerprint in ("", data.fingerprint())}
    cfg = spec.train
    args = {"max_len": max_len, **spec.args}
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model, data.num_items, **args)
    key = f"{spec.model}|{sorted(args.items())}|{data.fingerprint()}"
    result = fit(model, split, cfg, out_dir / "work", item_attrs=data.item_attrs,
                 run_key=key, progress=progress, desc=spec.label)  # fmt: skip
    summary = _train_summary(result, cfg.loss)
    if result.rank_digests:
        summary["rank_digests"] = result.rank_digests
    model.cpu()
    _save(model, out_dir, data, split, [],
          {"train": {k: v for k, v in summary.items() if k != "history"}})
    return model, summary


def distill_student(
    spec: StudentSpec,
    teacher: SeqRecModel,
    teacher_label: str,
    data: InteractionData,
    split: Split,
    out_dir: Path,
    *,
    max_len: int,
    cache_dir: Path | None,
    progress: bool = True,
) -> tuple[SeqRecModel, dict]:
    """Distil ``teacher`` into the student a spec describes; the model goes to ``out_dir``.

    Returns:
        The student (best weights) and a summary for the report.
    """
    cfg = spec.train
    args = {"max_len": max_len, **spec.args}
    torch.manual_seed(cfg.seed)
    student = build_model(spec.model, data.num_items, **args)
    key = f"{spec.model}|{sorted(args.items())}|{data.fingerprint()}"
    result, info = distill(teacher, student, split, cfg, spec.distill, out_dir / "work",
                           cache_dir=cache_dir, item_attrs=data.item_attrs, run_key=key,
                           progress=progress, desc=spec.label)  # fmt: skip
    summary = {**_train_summary(result, cfg.loss), **info}
    summary["seconds"] += info["cache_seconds"] * (not info["cache_reused"])
    step = {"type": "distill", "teacher": teacher_label, "losses": info["losses"],
            "config": dict(vars(spec.distill))}  # fmt: skip
    student.cpu()
    _save(student, out_dir, data, split, [step],
          {"train": {k: v for k, v in summary.items() if k != "history"}})
    return student, summary


def prune_model(
    parent: SeqRecModel,
    parent_label: str,
    parent_steps: list[dict],
    cfg: PruneConfig,
    data: InteractionData,
    split: Split,
    out_dir: Path,
    *,
    train_cfg: TrainConfig,
    distill_cfg: DistillConfig | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[SeqRecModel, dict]:
    """Prune ``parent`` with recovery after each step and save it to ``out_dir``.

    Recovery is ``cfg.recover``: distillation from the unpruned ``parent`` (``distill_cfg``,
    default ground truth 0.1 + top-M logit KD 0.9), fine-tuning on the ground truth, or none.
    Each recovery is a resumable training run under ``out_dir/work/step<N>``.

    Returns:
        The pruned model and a summary (per-step sizes, params, recovery epochs and seconds).
    """
    from recshrink.compress.prune import prune
    from recshrink.data.split import bucket_batches, training_pairs

    t0 = time.perf_counter()
    recoveries: list[dict] = []
    key = f"prune|{state_digest(parent)}|{cfg}|{data.fingerprint()}"

    # recovery trains an already trained model: never re-initialise its item table
    rcfg = dataclasses.replace(distill_cfg or DistillConfig(), init_items="none")

    def recover(pruned: SeqRecModel, original: SeqRecModel, step: int) -> None:
        work = out_dir / "work" / f"step{step}"
        if cfg.recover == "distill":
            result, _ = distill(original, pruned, split, train_cfg, rcfg,
                                work, cache_dir=cache_dir, item_attrs=data.item_attrs,
                                run_key=f"{key}|{step}", progress=progress,
                                desc=f"recover {step}/{cfg.steps}")  # fmt: skip
        else:
            result = fit(pruned, split, train_cfg, work, item_attrs=data.item_attrs,
                         run_key=f"{key}|{step}", progress=progress,
                         desc=f"recover {step}/{cfg.steps}")  # fmt: skip
        pruned.cpu().eval()
        recoveries.append({"step": step, "epochs": result.epochs, "best_epoch": result.best_epoch,
                           "seconds": round(result.seconds, 2),
                           "valid_ndcg@10": result.best_valid.get("ndcg@10")})  # fmt: skip

    def batches() -> list[dict]:
        windows = training_pairs(split.train, parent.max_len)
        rng = np.random.default_rng(train_cfg.seed)
        return bucket_batches(windows, train_cfg.batch_size, rng)[: cfg.taylor_batches]

    loss = next_item_loss(TrainConfig(loss="ce"))
    pruned, summary = prune(parent, cfg, recover=None if cfg.recover == "none" else recover,
                            taylor_batches=batches, loss_fn=loss)  # fmt: skip
    summary["recovery"] = recoveries
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    step = {**cfg.step(), "parent": parent_label}
    _save(pruned, out_dir, data, split, [*parent_steps, step],
          {"parent": parent_label, "prune": summary})
    return pruned, summary


def export_checked(
    model: SeqRecModel,
    path: Path,
    split: Split,
    *,
    steps: list[dict],
    item_ids: list[str],
    popular: list[int],
    cfg: "OnnxExportConfig | None" = None,
) -> dict:
    """Export ``model`` to ONNX, validate it on validation histories, and gate on agreement.

    The file is written under a temporary name; if top-10 agreement with PyTorch is below
    ``cfg.min_agreement`` it is removed and the export fails.

    Returns:
        The ``export`` block of report.json.

    Raises:
        RecshrinkError: The exporter failed or agreement is below the threshold.
    """
    from recshrink.export.onnx import OnnxExportConfig, export_onnx, validate_onnx
    from recshrink.export.runtime import id_map_fingerprint, write_sidecar

    cfg = cfg or OnnxExportConfig(full_scores=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.unvalidated")
    try:
        export_onnx(model, tmp, cfg, metadata={"steps": steps,
                                               "id_map_fingerprint": id_map_fingerprint(item_ids)})
        hist = split.valid.histories[: cfg.validate_users] if cfg.validate_users else None
        check = (validate_onnx(tmp, model, hist, mask_history=cfg.mask_history)
                 if hist is not None and len(hist) else {})  # fmt: skip
        if check and check["nonfinite"]:
            raise RecshrinkError(f"{path}: the ONNX graph gives NaN or infinite scores for "
                                 f"{check['nonfinite']} of {check['users']} validation users; "
                                 "no file written")  # fmt: skip
        if check and check["agreement@10"] < cfg.min_agreement:
            raise RecshrinkError(
                f"{path}: ONNX top-10 agreement with PyTorch {check['agreement@10']:.4f} is below "
                f"{cfg.min_agreement} (max |diff| {check['max_abs_diff']:.3g}); no file written"
            )
        write_sidecar(path, item_ids, popular)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    from recshrink.export.compat import trt_compatibility

    return {"format": "onnx", "path": str(path), "bytes": path.stat().st_size,
            "export_agreement@10": check.get("agreement@10"),
            "max_abs_diff": check.get("max_abs_diff"),
            "trt_compatible": trt_compatibility(path)["compatible"]}  # fmt: skip


def quantize_file(
    src: Path,
    dst: Path,
    cfg: "OnnxQuantConfig",
    data: InteractionData,
    split: Split,
    ev: EvalSpec,
    threads: int | None = None,
) -> dict:
    """Quantize an exported ONNX file and measure it against its source through ONNX Runtime.

    Returns:
        ``{"step", "before": {"bytes", "metrics"}, "after": {...}, "agreement@10"}``.
    """
    from recshrink.compress.quantize import quantize_onnx
    from recshrink.export.onnx import onnx_scorer
    from recshrink.train.evaluate import scorer_agreement

    quantize_onnx(src, dst, cfg, split.valid.histories)
    before, after = onnx_scorer(src, threads), onnx_scorer(dst, threads)
    out = {"step": cfg.step(), "path": str(dst),
           "size_ratio": round(dst.stat().st_size / src.stat().st_size, 4),
           "agreement@10": scorer_agreement(before, after, split.valid.histories, 10,
                                            ev.mask_history)}  # fmt: skip
    for side, path, fn in (("before", src, before), ("after", dst, after)):
        out[side] = {"path": str(path), "bytes": path.stat().st_size,
                     "valid": _round(evaluate(fn, split.valid, data.item_attrs, **ev.kwargs())),
                     "metrics": _round(evaluate(fn, split.test, data.item_attrs, **ev.kwargs()))}
    return out


def split_metrics(model: SeqRecModel, data: InteractionData, split: Split, ev: EvalSpec,
                 which: str = "test") -> dict:  # fmt: skip
    """Full-ranking metrics of ``model`` on the test (or ``"valid"``) split, with the recipe's
    protocol (history masking, tie policy)."""
    es = split.test if which == "test" else split.valid
    return evaluate(model_scorer(model), es, data.item_attrs, **ev.kwargs())


def protocol_entry(ev: EvalSpec, data: InteractionData, split: Split, max_len: int,
                   shift_window: int) -> dict:  # fmt: skip
    """The ``protocol`` block of report.json: how every number in the report was measured."""
    from recshrink.train.evaluate import MIN_GROUP_CASES, shift_groups

    shift = int((split.test.shift & split.test.known).sum())
    stable = int((~split.test.shift & split.test.known).sum())
    out = {"split": "leave-one-out", "ranking": "full", "max_len": max_len,
           "mask_history": ev.mask_history, "mask_scope": ev.mask_scope, "ties": ev.ties,
           "nonfinite": "rows with NaN or +inf scores are misses (nonfinite_users)",
           "ks": list(ev.ks), "users": {"valid": len(split.valid), "test": len(split.test)},
           "selection": "models, settings and search trials are chosen on the valid split; "
                        "the test split is scored once for the reported models",
           "shift_window": shift_window, "shift_cases": shift, "stable_cases": stable,
           "shift_source": "ground truth" if data.shift is not None else
                           "item attributes" if data.item_attrs is not None else "none"}  # fmt: skip
    if data.item_attrs is not None:
        out["attrs_dropped"] = {"rule": "attributes on more than half the items",
                                "ids": split.dropped_attrs,
                                "names": _attr_names(data, split.dropped_attrs)}  # fmt: skip
    if out["shift_source"] != "none" and not shift_groups(split.test):
        out["shift_split"] = (f"too few cases to mean anything ({shift} shift, {stable} stable; "
                              f"each needs {MIN_GROUP_CASES}): shift/stable quality is not "
                              "reported")  # fmt: skip
    return out


def _attr_names(data: InteractionData, ids: list[int]) -> list[str]:
    names = data.attr_names or []
    return [names[i] if 0 <= i < len(names) else str(i) for i in ids]


def _agreement(model: SeqRecModel, teacher: SeqRecModel, split: Split, batch: int = 1024) -> float:
    """Top-10 overlap with the teacher on the test histories (history not masked)."""
    hist = torch.from_numpy(split.test.histories)
    total = 0.0
    model.eval()
    teacher.eval()
    with torch.inference_mode():
        for i in range(0, len(hist), batch):
            h = hist[i : i + batch]
            total += topk_overlap(model.recommend(h, 10)[1], teacher.recommend(h, 10)[1]) * len(h)
    return round(total / max(1, len(hist)), 4)


STAGES = ("teacher", "baselines", "students", "prune", "quantize", "export", "benchmark")


class Manifests:
    """Per-artifact ``manifest.json``: the stage, a hash of its config and inputs, the recshrink
    version, its timing and its report entry. A re-run skips an artifact whose manifest matches
    (same config, same inputs); ``from_stage`` redoes that stage and every later one.
    """

    def __init__(self, data_fingerprint: str, from_stage: str | None = None,
                 protocol: dict | None = None) -> None:  # fmt: skip
        if from_stage is not None and from_stage not in STAGES:
            raise RecshrinkError(f"--from {from_stage!r}: choose one of {', '.join(STAGES)}")
        self.fingerprint = data_fingerprint
        self.protocol = protocol  # the evaluation protocol: entries hold metrics measured by it
        self.redo = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()

    def key(self, stage: str, config: object, *parents: str) -> str:
        """Hash of the stage, its config (JSON), the data and the parents' keys."""
        import hashlib
        import json

        proto = [self.protocol] if self.protocol is not None else []
        blob = json.dumps([stage, without_later_defaults(config), self.fingerprint,
                           __version__, *proto, *parents], sort_keys=True, default=str)  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def hit(self, stage: str, where: Path, key: str) -> dict | None:
        """The manifest at ``where`` if it matches ``key`` and its artifact is complete."""
        import json

        m = where / "manifest.json"
        if stage in self.redo or not m.is_file():
            return None
        try:
            man = json.loads(m.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if man.get("key") != key or not all((where / f).exists() for f in man.get("files", [])):
            return None
        return man

    def record(self, stage: str, where: Path, key: str, seconds: float, entry: dict,
               files: tuple[str, ...] = ("config.json", "model.safetensors")) -> None:  # fmt: skip
        write_json(where / "manifest.json", {"stage": stage, "key": key, "version": __version__,
                                             "seconds": round(seconds, 2), "files": list(files),
                                             "entry": entry})  # fmt: skip


_STAGE_OF = {"teacher": "teacher", "baseline": "baselines", "student": "students"}


@dataclasses.dataclass
class _TrainState:
    """What later models of the training stages need from earlier ones."""

    teacher: SeqRecModel | None = None
    teacher_ndcg: float | None = None
    teacher_valid_ndcg: float | None = None
    baseline_by_model: dict[str, str] = dataclasses.field(default_factory=dict)


def _arch(spec: ModelSpec) -> str:
    """What makes two specs the same architecture: the builder or preset and its arguments."""
    import json

    return spec.model + json.dumps(spec.args, sort_keys=True, default=str)


def _train_job(recipe: Recipe, role: str, spec: ModelSpec, where: Path, data: InteractionData,
               split: Split, out: Path, teacher: SeqRecModel | None,
               progress: bool) -> tuple[SeqRecModel, dict]:  # fmt: skip
    """Train (or distil, or load) one model of the teacher/baselines/students stages."""
    if role == "student":
        return distill_student(spec, teacher, recipe.teacher.label, data, split, where,
                               max_len=recipe.data.max_len, cache_dir=out / "cache",
                               progress=progress)  # fmt: skip
    return train_or_load(spec, data, split, where, max_len=recipe.data.max_len, progress=progress)


def _finish_job(recipe: Recipe, role: str, spec: ModelSpec, where: Path, trained: tuple | None,
                hit: dict | None, key: str, data: InteractionData, split: Split, out: Path,
                report: dict, made: dict, manifests: Manifests, state: _TrainState) -> None:  # fmt: skip
    """Score a trained model (or take a matching manifest's entry) into the report, in recipe
    order: the teacher first, baselines before the students that are compared with them."""
    stage = _STAGE_OF[role]
    if hit:  # the same model from an earlier run: reuse it and its report entry
        model, _ = load_model(where)
        entry = hit["entry"]
        if role == "teacher":
            state.teacher, state.teacher_ndcg = model, entry["metrics"]["ndcg@10"]
            state.teacher_valid_ndcg = entry["valid"]["ndcg@10"]
        if role == "baseline":
            state.baseline_by_model.setdefault(_arch(spec), spec.label)
        report["models"][spec.label] = entry
        made[spec.label] = (model, where, entry.get("steps", []))
        write_json(out / "report.json", report)
        check_gates(recipe, report)
        return
    model, summary, seconds = trained
    teacher = state.teacher
    metrics = split_metrics(model, data, split, recipe.evaluate)
    valid = split_metrics(model, data, split, recipe.evaluate, "valid")
    extra: dict = {}
    if role == "teacher":
        state.teacher, state.teacher_ndcg = model, metrics["ndcg@10"]
        state.teacher_valid_ndcg = valid["ndcg@10"]
    elif state.teacher_ndcg:
        extra["retention"] = round(metrics["ndcg@10"] / state.teacher_ndcg, 4)
        extra["valid_retention"] = round(valid["ndcg@10"] / max(state.teacher_valid_ndcg, 1e-12), 4)
        extra["params_ratio"] = round(model.num_params() / teacher.num_params(), 4)
    if role == "baseline":
        state.baseline_by_model.setdefault(_arch(spec), spec.label)
    if role == "student":
        extra["teacher"] = recipe.teacher.label
        extra["losses"] = summary["losses"]
        extra["steps"] = [{"type": "distill", "teacher": recipe.teacher.label,
                           "losses": summary["losses"]}]  # fmt: skip
        base = state.baseline_by_model.get(_arch(spec))
        if base:
            base_ndcg = report["models"][base]["metrics"]["ndcg@10"]
            extra["baseline"] = base
            extra["vs_baseline"] = round(metrics["ndcg@10"] / max(base_ndcg, 1e-12), 4)
    extra["fidelity@10"] = _agreement(model, teacher, split) if role != "teacher" else 1.0
    report["models"][spec.label] = model_entry(model, role, where, metrics, train=summary,
                                               extra=extra, valid=valid)  # fmt: skip
    manifests.record(stage, where, key, seconds, report["models"][spec.label])
    made[spec.label] = (model, where, extra.get("steps", []))
    write_json(out / "report.json", report)
    check_gates(recipe, report)


def _model_dirs(recipe: Recipe, out: Path) -> dict[str, Path]:
    """Where each model of the training and prune stages is written."""
    dirs = {recipe.teacher.label: out / "teacher"}
    dirs.update({b.label: out / "baselines" / b.label for b in recipe.baselines})
    dirs.update({s.label: out / "students" / s.label for s in recipe.students})
    dirs.update({j.name: out / "pruned" / j.name for j in recipe.prune})
    return dirs


def _report_steps(steps: list[dict]) -> list[dict]:
    """A saved model's steps as the report lists them (a distill step without its config)."""
    return [{k: v for k, v in st.items() if k != "config"} if st.get("type") == "distill" else st
            for st in steps]  # fmt: skip


def _worker_init() -> None:
    """In a training worker: exit when the recipe's process dies (killed runs leave no orphan
    still writing checkpoints that a re-run resumes from)."""
    import os
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _worker_train(recipe: Recipe, role: str, label: str, where: str, out: str,
                  threads: int) -> tuple[dict, float]:  # fmt: skip
    """A training worker's job: one model into ``where``; returns its summary and seconds."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    dirs = _model_dirs(recipe, Path(out))
    data = load_dataset(recipe.data)
    split = leave_one_out(data, recipe.data.max_len, recipe.data.shift_window)
    if role == "prune":  # the pruning and its recoveries; the pipeline's prune stage resumes them
        job = next(j for j in recipe.prune if j.name == label)
        parent, meta = load_model(dirs[job.model])
        train = job.train if job.train.threads else dataclasses.replace(job.train, threads=threads)
        _, summary = prune_model(parent, job.model, _report_steps(meta.steps), job.config, data,
                                 split, Path(where), train_cfg=train, distill_cfg=job.distill,
                                 cache_dir=Path(out) / "cache", progress=False)  # fmt: skip
        return summary, time.perf_counter() - t0
    specs = {s.label: s for s in [recipe.teacher, *recipe.baselines, *recipe.students]}
    spec = specs[label]
    if spec.train.threads is None:
        spec = spec.model_copy(update={"train": dataclasses.replace(spec.train, threads=threads)})
    teacher = load_model(dirs[recipe.teacher.label])[0] if role == "student" else None
    _, summary = _train_job(recipe, role, spec, Path(where), data, split, Path(out), teacher,
                            progress=False)  # fmt: skip
    return summary, time.perf_counter() - t0


def _train_parallel(recipe: Recipe, jobs: list, todo: list, out: Path, finish,
                    progress: bool, prunes: list | None = None) -> None:  # fmt: skip
    """Train ``todo`` in ``recipe.jobs`` worker processes, scoring results in recipe order.

    The teacher and the baselines start at once, the students as soon as the teacher is scored,
    each of ``prunes`` (prune jobs without a matching manifest) as soon as its parent is trained;
    a free worker takes the teacher first, then a student, a baseline, a pruning. Each worker
    uses the spec's ``train.threads`` or an equal share of the CPU cores. Prunings are only run
    here (their work directories filled); the prune stage then resumes and scores them.
    """
    import multiprocessing as mp
    import os
    import sys
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    prunes = prunes or []
    workers = min(recipe.jobs, len(todo) + len(prunes))
    threads = max(1, (os.cpu_count() or 1) // workers)
    order = {"teacher": 0, "student": 1, "baseline": 2, "prune": 3}
    queue = sorted(todo + prunes, key=lambda j: order[j[0]])  # stable: recipe order within a role
    def label(job: tuple) -> str:
        return job[1].name if job[0] == "prune" else job[1].label

    done: dict[str, tuple[dict, float]] = {}
    running: dict = {}
    pending = {label(j) for j in queue}
    teacher_ready = not any(role == "teacher" for role, _, _ in todo)

    def ready(job: tuple) -> bool:
        if job[0] == "student":
            return teacher_ready
        if job[0] == "prune":  # its parent trained, here or earlier
            return job[1].model not in pending or job[1].model in done
        return True

    def say(msg: str) -> None:
        if progress:
            print(f"[jobs] {msg}", file=sys.stderr, flush=True)

    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        nxt = 0
        while nxt < len(jobs) or running or queue:
            while len(running) < workers:  # first keep the workers busy
                job = next((j for j in queue if ready(j)), None)
                if job is None:
                    break
                queue.remove(job)
                spec = job[1]
                threads_of = spec.train.threads or threads
                say(f"{label(job)}: {job[0]} started ({threads_of} thread(s))")
                fut = pool.submit(_worker_train, recipe, job[0], label(job), str(job[2]),
                                  str(out), threads_of)  # fmt: skip
                running[fut] = job
            if nxt < len(jobs):  # then score finished models, in recipe order
                role, spec, where = jobs[nxt]
                if spec.label in done or spec.label not in pending:
                    trained = None
                    if spec.label in done:
                        summary, seconds = done[spec.label]
                        trained = (load_model(where)[0], summary, seconds)
                    finish(role, spec, where, trained)
                    teacher_ready = teacher_ready or role == "teacher"
                    nxt += 1
                    continue
            if not running:
                raise RuntimeError("job scheduler stalled")  # a bug, not a user error
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                summary, seconds = fut.result()  # a worker's error is raised here
                say(f"{label(job)}: {job[0]} done in {seconds / 60:.1f} min")
                done[label(job)] = (summary, seconds)
    except BaseException:  # an error or an interrupt: no worker keeps training
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    pool.shutdown(wait=True)


def run_recipe(recipe: Recipe, out_dir: str | Path, progress: bool = True,
               from_stage: str | None = None) -> dict:  # fmt: skip
    """Run a validated recipe end to end and write ``OUT/report.json``.

    Every model directory gets a ``manifest.json``; re-running the recipe skips models whose
    manifest matches and resumes an interrupted training from its last finished epoch.
    ``from_stage`` redoes that stage and every later one.

    Returns:
        The report.
    """
    for i, name in enumerate(recipe.search.students if recipe.search else []):
        if "/" in name and not (Path(name) / "config.json").is_file():
            raise RecshrinkError(f"search.students.{i}: {name}: not a trained model directory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_dataset(recipe.data)
    split = leave_one_out(data, recipe.data.max_len, recipe.data.shift_window)
    report = {
        "recshrink_version": __version__,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "machine": machine_entry(recipe.teacher.train.device),
        "dataset": dataset_entry(data),
        "protocol": protocol_entry(recipe.evaluate, data, split, recipe.data.max_len,
                                   recipe.data.shift_window),
        "teacher": recipe.teacher.label,
        "models": {},
    }
    dirs = _model_dirs(recipe, out)
    jobs = [("teacher", recipe.teacher), *(("baseline", b) for b in recipe.baselines),
            *(("student", s) for s in recipe.students)]  # fmt: skip
    jobs = [(role, spec, dirs[spec.label]) for role, spec in jobs]
    made: dict[str, tuple[SeqRecModel, Path, list[dict]]] = {}
    manifests = Manifests(data.fingerprint(), from_stage, recipe.evaluate.model_dump(mode="json"))
    keys: dict[str, str] = {}
    hits: dict[str, dict | None] = {}
    for role, spec, where in jobs:
        parents = (keys[recipe.teacher.label],) if role == "student" else ()
        keys[spec.label] = manifests.key(_STAGE_OF[role], spec.model_dump(mode="json"), *parents)
        hits[spec.label] = manifests.hit(_STAGE_OF[role], where, keys[spec.label])
    state = _TrainState()

    def finish(role: str, spec: ModelSpec, where: Path, trained: tuple | None) -> None:
        _finish_job(recipe, role, spec, where, trained, hits[spec.label], keys[spec.label],
                    data, split, out, report, made, manifests, state)  # fmt: skip

    todo = [(role, spec, where) for role, spec, where in jobs if not hits[spec.label]]
    prunes = []
    for job in recipe.prune:  # the prune stage's keys (used again by _compress_stages)
        key = manifests.key("prune", job.model_dump(mode="json"), keys[job.model])
        keys[job.name] = key
        if not manifests.hit("prune", dirs[job.name], key):
            prunes.append(("prune", job, dirs[job.name]))
    if recipe.jobs > 1 and len(todo) + len(prunes) > 1:
        _train_parallel(recipe, jobs, todo, out, finish, progress, prunes)
    else:
        for role, spec, where in jobs:
            trained = None
            if not hits[spec.label]:
                t_job = time.perf_counter()
                trained = (*_train_job(recipe, role, spec, where, data, split, out,
                                       state.teacher, progress),
                           time.perf_counter() - t_job)  # fmt: skip
            finish(role, spec, where, trained)
    teacher = state.teacher
    _compress_stages(recipe, data, split, out, report, made, teacher, progress, manifests, keys)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "report.json", report)
    check_gates(recipe, report)
    return report


def _derived_entry(model: SeqRecModel, role: str, where: Path, parent: str, steps: list[dict],
                   teacher: SeqRecModel, report: dict, data: InteractionData, split: Split,
                   ev: EvalSpec, extra: dict) -> dict:  # fmt: skip
    """The report entry of a pruned or quantized model: test and valid metrics, retention of
    the teacher's NDCG@10 on each split, and the ratio to its parent."""
    metrics = split_metrics(model, data, split, ev)
    valid = split_metrics(model, data, split, ev, "valid")
    t = report["models"][report["teacher"]]
    return model_entry(model, role, where, metrics, valid=valid, extra={
        "parent": parent, "steps": steps,
        "retention": round(metrics["ndcg@10"] / max(t["metrics"]["ndcg@10"], 1e-12), 4),
        "valid_retention": round(valid["ndcg@10"] / max(t["valid"]["ndcg@10"], 1e-12), 4),
        "vs_parent": round(metrics["ndcg@10"] /
                           max(report["models"][parent]["metrics"]["ndcg@10"], 1e-12), 4),
        "params_ratio": round(model.num_params() / teacher.num_params(), 4),
        "fidelity@10": _agreement(model, teacher, split), **extra})  # fmt: skip


def _reuse(hit: dict | None, name: str, where: Path, report: dict, made: dict,
           recipe: Recipe) -> bool:  # fmt: skip
    """Take a model and its report entry from a matching manifest (False: no match)."""
    if not hit:
        return False
    report["models"][name] = hit["entry"]
    made[name] = (load_model(where)[0], where, hit["entry"].get("steps", []))
    check_gates(recipe, report)
    return True


def _compress_stages(recipe: Recipe, data: InteractionData, split: Split, out: Path, report: dict,
                     made: dict, teacher: SeqRecModel, progress: bool, manifests: Manifests,
                     keys: dict[str, str]) -> None:  # fmt: skip
    """prune -> quantize -> export (+ ORT quantization) -> benchmark, each adding to the report."""
    import copy

    from recshrink.compress.quantize import OnnxQuantConfig, RowwiseConfig, quantize_item_table
    from recshrink.export.onnx import OnnxExportConfig
    from recshrink.export.runtime import sidecar_path

    ev = recipe.evaluate
    dirs = _model_dirs(recipe, out)
    for job in recipe.prune:  # keys computed by run_recipe; prunings may have run in workers
        parent, _, psteps = made[job.model]
        where, key = dirs[job.name], keys[job.name]
        if _reuse(manifests.hit("prune", where, key), job.name, where, report, made, recipe):
            continue
        t_stage = time.perf_counter()
        pruned, summary = prune_model(parent, job.model, psteps, job.config, data, split, where,
                                      train_cfg=job.train, distill_cfg=job.distill,
                                      cache_dir=out / "cache", progress=progress)  # fmt: skip
        steps = [*psteps, {**job.config.step(), "parent": job.model}]
        report["models"][job.name] = _derived_entry(
            pruned, "pruned", where, job.model, steps, teacher, report, data, split, ev,
            {"prune": summary})  # fmt: skip
        manifests.record("prune", where, key, time.perf_counter() - t_stage, report["models"][job.name])
        made[job.name] = (pruned, where, steps)
        write_json(out / "report.json", report)
        check_gates(recipe, report)
    for job in recipe.quantize:
        parent, _, psteps = made[job.model]
        where = out / "quantized" / job.name
        key = keys[job.name] = manifests.key("quantize", job.model_dump(mode="json"), keys[job.model])
        if _reuse(manifests.hit("quantize", where, key), job.name, where, report, made, recipe):
            continue
        t_stage = time.perf_counter()
        cfg = RowwiseConfig(bits=job.bits)
        q = quantize_item_table(copy.deepcopy(parent), cfg)
        steps = [*psteps, cfg.step()]
        _save(q, where, data, split, steps, {"parent": job.model})
        report["models"][job.name] = _derived_entry(
            q, "quantized", where, job.model, steps, teacher, report, data, split, ev, {})
        manifests.record("quantize", where, key, time.perf_counter() - t_stage,
                         report["models"][job.name])  # fmt: skip
        made[job.name] = (q, where, steps)
        write_json(out / "report.json", report)
        check_gates(recipe, report)
    exported: list[tuple[str, Path]] = []
    if recipe.export:
        popular = popular_items(split, data.num_items)
        cfg = OnnxExportConfig(k=recipe.export.k, min_agreement=recipe.export.min_agreement,
                               full_scores=True, slim=recipe.export.slim,
                               mask_history=ev.mask_history)  # fmt: skip
        for name in recipe.export.models or list(made):
            model, _, steps = made[name]
            path = out / "export" / f"{name}.onnx"
            info = export_checked(model, path, split, steps=steps, item_ids=data.item_ids,
                                  popular=popular, cfg=cfg)  # fmt: skip
            exported.append((f"{name}.onnx", path))
            for mode in recipe.export.quantize:
                qpath = out / "export" / f"{name}.{mode}.onnx"
                res = quantize_file(path, qpath, OnnxQuantConfig(mode=mode), data, split, ev)
                sidecar_path(qpath).write_text(sidecar_path(path).read_text())
                info.setdefault("quantized", {})[mode] = {
                    k: res[k] for k in ("path", "size_ratio", "agreement@10", "step")}
                info["quantized"][mode]["bytes"] = res["after"]["bytes"]
                info["quantized"][mode]["ndcg@10"] = res["after"]["metrics"]["ndcg@10"]
                exported.append((f"{name}.{mode}.onnx", qpath))
            for precision in recipe.export.tensorrt:  # int8 engines come from static QDQ graphs
                from recshrink.export.tensorrt import TensorRTConfig, build_engine, opt_length

                src = out / "export" / f"{name}.static.onnx" if precision == "int8" else path
                if not src.is_file():
                    raise RecshrinkError(f"export.tensorrt: int8 needs export.quantize: [static] "
                                         f"(no {src})")  # fmt: skip
                engine = out / "export" / f"{name}.{precision}.engine"
                build_engine(src, engine, TensorRTConfig(
                    precision=precision, opt_len=opt_length(split.test.histories),
                    timing_cache=str(out / "export" / "timing.cache")))  # fmt: skip
                info.setdefault("tensorrt", {})[precision] = {"path": str(engine),
                                                              "bytes": engine.stat().st_size}
                exported.append((f"{name}.{precision}.engine", engine))
            report["models"][name]["export"] = info
            write_json(out / "report.json", report)
    trials, floor = {}, None
    if recipe.search:
        from recshrink.search import run_search

        res = run_search(recipe.search, recipe, data, split, out, teacher,
                         report["models"][recipe.teacher.label], manifests,
                         keys[recipe.teacher.label], progress)  # fmt: skip
        report["search"] = res
        write_json(out / "report.json", report)
        # beside the benchmark's models (test numbers) trials show their test NDCG@10; alone,
        # the validation NDCG@10 that chose them, with the floor they were held to
        which = "test" if recipe.benchmark else "valid"
        trials = {t["id"]: {"p50": t["p50"], "ndcg@10": t[which]["ndcg@10"], "bytes": t["bytes"]}
                  for t in res["trials"] if "p50" in t and res.get("objective")}  # fmt: skip
        floor = res["floor"] if res.get("metric") == "ndcg@10" and which == "valid" else None
        if not recipe.benchmark:
            from recshrink.benchmark.report import plots, search_markdown
            from recshrink.fsutil import atomic_write_text

            atomic_write_text(out / "report.md", search_markdown(res))
            if trials:
                plots({"settings": {"device": "cpu", "batches": [recipe.search.batch]},
                       "models": {}, "trials": trials, "quality_floor": floor,
                       "quality_split": "valid"}, out, batch=str(recipe.search.batch))  # fmt: skip
    if recipe.benchmark:
        from recshrink.benchmark.report import markdown, plots
        from recshrink.benchmark.run import run_benchmark
        from recshrink.fsutil import atomic_write_text

        b = recipe.benchmark
        entries = [(name, where) for name, (_, where, _) in made.items()] + exported
        bench = run_benchmark(entries, data, split, backends=tuple(b.backends), device=b.device,
                              batches=tuple(b.batches), threads=b.threads, budget_s=b.budget_s,
                              teacher=recipe.teacher.label, ks=ev.ks, progress=progress,
                              mask_scope=ev.mask_scope, ties=ev.ties)  # fmt: skip
        bench["trials"] = trials
        write_json(out / "benchmark.json", bench)
        text = markdown(bench)
        if recipe.search:
            from recshrink.benchmark.report import search_markdown

            text += "\n" + search_markdown(report["search"], level=2)
        atomic_write_text(out / "report.md", text)
        plots(bench, out)
        for name, e in bench["models"].items():
            target = report["models"].get(name)
            if target is None:  # an exported file: attach to its model's export block
                base = name.split(".")[0]
                target = report["models"][base].setdefault("export", {}).setdefault("benchmark", {})
                target = target.setdefault(name, {})
            for key in ("latency_us", "throughput", "memory", "vs_teacher"):
                if key in e:
                    target[key] = e[key]
        report["benchmark"] = {"settings": bench["settings"], "machine": bench["machine"]}


def check_gates(recipe: Recipe, report: dict) -> None:
    """Fail (a user error, exit 2) when a model made so far is under its retention floor: its
    NDCG@10 over the teacher's on the validation split (the test split only reports).

    Called after every model, so a failing gate stops the run before anything downstream.

    Raises:
        RecshrinkError: Names every model under its floor.
    """
    failed = []
    for name, floor in recipe.gates.min_retention.items():
        if name not in report["models"]:
            continue
        entry = report["models"][name]
        got = entry.get("valid_retention", 1.0 if name == recipe.teacher.label else None)
        if got is None or got < floor:
            failed.append(f"{name} validation retention {got} < {floor}")
    if failed:
        raise RecshrinkError("quality gate failed: " + "; ".join(failed) +
                             " (report.json is written; nothing downstream was skipped silently)")

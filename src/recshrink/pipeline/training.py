"""The training stages of a recipe (teacher, baselines, students): one job per model, scored
into the report in recipe order."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from recshrink.api import check_compatible, distill, evaluate, train
from recshrink.compare import fidelity
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.entries import model_entry
from recshrink.fsutil import write_json
from recshrink.models.base import SeqRecModel
from recshrink.models.io import load_model, save_model
from recshrink.teachers import open_model
from recshrink.pipeline.gates import check_gates
from recshrink.pipeline.manifests import Manifests
from recshrink.recipe import EvalSpec, ModelSpec, Recipe

STAGE_OF = {"teacher": "teacher", "baseline": "baselines", "student": "students"}


@dataclasses.dataclass
class TrainState:
    """What later models of the training stages need from earlier ones."""

    teacher: SeqRecModel | None = None
    teacher_ndcg: float | None = None
    teacher_valid_ndcg: float | None = None
    teacher_top: np.ndarray | None = None  # [U, K] the teacher's masked top items, test users
    baseline_by_model: dict[str, str] = dataclasses.field(default_factory=dict)


def arch_key(spec: ModelSpec) -> str:
    """What makes two specs the same architecture: the builder or preset and its arguments."""
    return spec.model + json.dumps(spec.args, sort_keys=True, default=str)


def model_dirs(recipe: Recipe, out: Path) -> dict[str, Path]:
    """Where each model of the training and prune stages is written."""
    dirs = {recipe.teacher.label: out / "teacher"}
    dirs.update({b.label: out / "baselines" / b.label for b in recipe.baselines})
    dirs.update({s.label: out / "students" / s.label for s in recipe.students})
    dirs.update({j.name: out / "pruned" / j.name for j in recipe.prune})
    return dirs


def split_metrics(model: SeqRecModel, data: InteractionData, split: Split, ev: EvalSpec,
                  which: str = "test", per_user: bool = False):  # fmt: skip
    """Full-ranking metrics of ``model`` on the test (or ``"valid"``) split, with the recipe's
    protocol (history masking, tie policy); with ``per_user``, also every user's rank and top
    items."""
    return evaluate(model, data, split=which, splits=split, per_user=per_user, **ev.kwargs())


def teacher_top(state: TrainState, data: InteractionData, split: Split, ev: EvalSpec) -> np.ndarray:
    """The teacher's top items on the test users (ranked once, when first needed)."""
    if state.teacher_top is None:
        state.teacher_top = split_metrics(state.teacher, data, split, ev, per_user=True)[1].top
    return state.teacher_top


def load_teacher(spec: ModelSpec, data: InteractionData, out_dir: Path) -> tuple[SeqRecModel, dict]:
    """A recipe's ``teacher.load``: the model copied into ``out_dir`` with its provenance."""
    model, meta = open_model(spec.load)
    check_compatible(model, data, spec.load)
    save_model(model, out_dir, item_ids=meta.item_ids or data.item_ids,
               data_fingerprint=meta.data_fingerprint, steps=meta.steps,
               extra={"loaded_from": str(spec.load)})  # fmt: skip
    return model, {"loaded_from": str(spec.load), "seconds": 0.0,
                   "fingerprint_matches": meta.data_fingerprint in ("", data.fingerprint())}


def train_job(recipe: Recipe, role: str, spec: ModelSpec, where: Path, data: InteractionData,
              split: Split, out: Path, teacher: SeqRecModel | None,
              progress: bool) -> tuple[SeqRecModel, dict]:  # fmt: skip
    """Train (or distil, or load) one model of the teacher/baselines/students stages."""
    if role == "student":
        res = distill(teacher, data, spec.model, out=where, max_len=recipe.data.max_len,
                      model_args=spec.args, split=split, config=spec.train, kd=spec.distill,
                      cache_dir=out / "cache", teacher_label=recipe.teacher.label,
                      progress=progress, desc=spec.label)  # fmt: skip
        return res.model, res.summary
    if spec.load:
        return load_teacher(spec, data, where)
    res = train(spec.model, data, out=where, max_len=recipe.data.max_len, model_args=spec.args,
                split=split, config=spec.train, progress=progress, desc=spec.label)  # fmt: skip
    return res.model, res.summary


def finish_job(recipe: Recipe, role: str, spec: ModelSpec, where: Path, trained: tuple | None,
               hit: dict | None, key: str, data: InteractionData, split: Split, out: Path,
               report: dict, made: dict, manifests: Manifests, state: TrainState) -> None:  # fmt: skip
    """Score a trained model (or take a matching manifest's entry) into the report, in recipe
    order: the teacher first, baselines before the students that are compared with them."""
    stage = STAGE_OF[role]
    if hit:  # the same model from an earlier run: reuse it and its report entry
        model, _ = load_model(where)
        entry = hit["entry"]
        if role == "teacher":
            state.teacher, state.teacher_ndcg = model, entry["metrics"]["ndcg@10"]
            state.teacher_valid_ndcg = entry["valid"]["ndcg@10"]
        if role == "baseline":
            state.baseline_by_model.setdefault(arch_key(spec), spec.label)
        report["models"][spec.label] = entry
        made[spec.label] = (model, where, entry.get("steps", []))
        write_json(out / "report.json", report)
        check_gates(recipe, report)
        return
    model, summary, seconds = trained
    teacher = state.teacher
    metrics, users = split_metrics(model, data, split, recipe.evaluate, per_user=True)
    valid = split_metrics(model, data, split, recipe.evaluate, "valid")
    extra: dict = {}
    if role == "teacher":
        state.teacher, state.teacher_ndcg = model, metrics["ndcg@10"]
        state.teacher_valid_ndcg = valid["ndcg@10"]
        state.teacher_top = users.top
    elif state.teacher_ndcg:
        extra["retention"] = round(metrics["ndcg@10"] / state.teacher_ndcg, 4)
        extra["valid_retention"] = round(valid["ndcg@10"] / max(state.teacher_valid_ndcg, 1e-12), 4)
        extra["params_ratio"] = round(model.num_params() / teacher.num_params(), 4)
    if role == "baseline":
        state.baseline_by_model.setdefault(arch_key(spec), spec.label)
    if role == "student":
        extra["teacher"] = recipe.teacher.label
        extra["losses"] = summary["losses"]
        extra["steps"] = [{"type": "distill", "teacher": recipe.teacher.label,
                           "losses": summary["losses"]}]  # fmt: skip
        base = state.baseline_by_model.get(arch_key(spec))
        if base:
            base_ndcg = report["models"][base]["metrics"]["ndcg@10"]
            extra["baseline"] = base
            extra["vs_baseline"] = round(metrics["ndcg@10"] / max(base_ndcg, 1e-12), 4)
    extra["fidelity@10"] = (fidelity(users.top, teacher_top(state, data, split, recipe.evaluate))
                            if role != "teacher" else 1.0)  # fmt: skip
    report["models"][spec.label] = model_entry(model, role, where, metrics, train=summary,
                                               extra=extra, valid=valid)  # fmt: skip
    manifests.record(stage, where, key, seconds, report["models"][spec.label])
    made[spec.label] = (model, where, extra.get("steps", []))
    write_json(out / "report.json", report)
    check_gates(recipe, report)

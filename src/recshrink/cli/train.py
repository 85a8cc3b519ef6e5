"""``recshrink data stats``, ``train``, ``distill``, ``evaluate``, ``run`` and ``recipe
validate``: each parses its options and calls one function of :mod:`recshrink.api`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from recshrink.api import check_compatible, distill, evaluate, import_model, train
from recshrink.cli._base import (
    Group, check_out, data_options, data_spec, key_values, load_data_options, main,
    print_metrics, protocol_options, train_options, validated,
)  # fmt: skip
from recshrink.compare import rank_retention
from recshrink.entries import dataset_entry, single_model_report
from recshrink.errors import RecshrinkError
from recshrink.export.artifacts import artifact_kind
from recshrink.fsutil import write_json
from recshrink.teachers import open_teacher
from recshrink.pipeline import STAGES, run as run_recipe_file
from recshrink.recipe import EvalSpec, ModelSpec, StudentSpec, load_recipe


@main.group(cls=Group)
def data() -> None:
    """Inspect data sets."""


@data.command("stats")
@data_options
def data_stats(**kw) -> None:
    """Print users, items, interactions and sequence lengths as JSON."""
    ds = data_spec(**kw).load()
    click.echo(json.dumps({**ds.stats(), "fingerprint": ds.fingerprint()}, indent=2))


def _spec(cls, model: str, args: tuple[str, ...], train_kw: dict, **extra):
    return validated(lambda: cls(model=model, args=key_values(args, "--arg"), train=train_kw,
                                 **extra))  # fmt: skip


def _finish(out: Path, label: str, res, ds, split, role: str, device: str,
            extra: dict | None = None) -> None:  # fmt: skip
    metrics = evaluate(res.model, ds, splits=split, **EvalSpec().kwargs())
    write_json(out / "report.json", single_model_report(label, res.model, out, ds, metrics,
                                                        res.summary, role, device, extra))
    print_metrics(label, metrics)
    click.echo(f"model written to {out} ({res.summary['seconds']:.0f} s, best epoch "
               f"{res.summary['best_epoch']})")  # fmt: skip


@main.command("train")
@data_options
@click.option("--model", "model_name", default="sasrec_large", show_default=True,
              help="Builder or preset name.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model directory.")
@train_options
def train_cmd(model_name, out, args, progress, data_path, fmt, attributes, item_path, kcore,
              max_len, csv_columns, sep, **train_kw) -> None:  # fmt: skip
    """Train a model (teacher, or a student without distillation); evaluate it on the test split."""
    spec = _spec(ModelSpec, model_name, args, train_kw)
    check_out(out, "dir")
    ds, split = load_data_options(dict(data_path=data_path, fmt=fmt, attributes=attributes,
                                       item_path=item_path, kcore=kcore, max_len=max_len,
                                       csv_columns=csv_columns, sep=sep))  # fmt: skip
    res = train(spec.model, ds, out=out, max_len=max_len, model_args=spec.args, split=split,
                config=spec.train, progress=progress, desc=spec.label)  # fmt: skip
    role = "teacher" if res.model.arch == "sasrec" else "baseline"  # a student trained alone
    _finish(out, spec.label, res, ds, split, role, spec.train.device)


@main.command("distill")
@click.option("--teacher", "teacher_path", required=True, type=click.Path(path_type=Path),
              help="Trained teacher: model directory, .pt, RecBole checkpoint (.pth), ONNX graph "
                   "or torch.export program (.pt2).")
@click.option("--student", "student_name", default="gru_small", show_default=True,
              help="Student builder or preset name.")
@data_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Student directory.")
@click.option("--kd", "kd", multiple=True,
              help="Distillation setting KEY=VALUE (repeatable), e.g. --kd kd_weight=0.9 "
                   "--kd temperature=2 --kd rank_weight=0.2 --kd init_items=pca.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where cached teacher outputs go (default: OUT/../.teacher-cache).")
@train_options
def distill_cmd(teacher_path, student_name, out, kd, cache_dir, args, progress, data_path, fmt,
                attributes, item_path, kcore, max_len, csv_columns, sep, **train_kw) -> None:  # fmt: skip
    """Distil a trained teacher into a student (GRU/LSTM/CNN) and evaluate it."""
    spec = _spec(StudentSpec, student_name, args, train_kw, distill=key_values(kd, "--kd"))
    check_out(out, "dir")
    if not teacher_path.exists():
        raise RecshrinkError(f"{teacher_path}: no such teacher file or directory")
    ds, split = load_data_options(dict(data_path=data_path, fmt=fmt, attributes=attributes,
                                       item_path=item_path, kcore=kcore, max_len=max_len,
                                       csv_columns=csv_columns, sep=sep))  # fmt: skip
    teacher, _ = open_teacher(teacher_path, ds.num_items, ds.item_ids)
    check_compatible(teacher, ds, str(teacher_path))
    res = distill(teacher, ds, spec.model, out=out, max_len=max_len, model_args=spec.args,
                  split=split, config=spec.train, kd=spec.distill, cache_dir=cache_dir,
                  teacher_label=str(teacher_path), progress=progress, desc=spec.label)  # fmt: skip
    _finish(out, spec.label, res, ds, split, "student", spec.train.device,
            extra={"teacher": str(teacher_path), "losses": res.summary["losses"]})


@main.command("evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory, .pt, RecBole checkpoint, ONNX graph or torch.export program.")
@data_options
@click.option("--split", "which", type=click.Choice(["test", "valid"]), default="test",
              show_default=True)
@click.option("--against", "against_path", type=click.Path(path_type=Path), default=None,
              help="A reference model (e.g. the teacher): report this model's retention of its "
                   "NDCG@10 and HR@10 with paired-bootstrap 95% intervals over the same users.")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples for --against.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the metrics to this JSON file.")
@click.option("--mask-history/--no-mask-history", default=True, show_default=True,
              help="Exclude the user's history from the ranking (--no-mask-history: as RecBole's "
                   "full-sort evaluation, which masks only padding).")
@protocol_options
def evaluate_cmd(model_path, which, against_path, resamples, out, mask_history, ties, mask_scope,
                 **kw) -> None:  # fmt: skip
    """Full-ranking metrics of a trained model on the data's leave-one-out split."""
    if out:
        check_out(out, "file")
    for p in (model_path, against_path):
        if p is not None and not p.exists():
            raise RecshrinkError(f"{p}: no such model file or directory")
    ds, split = load_data_options(kw)
    model, meta = _opened(model_path, ds)
    reference = _opened(against_path, ds)[0] if against_path else None
    es = split.test if which == "test" else split.valid
    proto = {"ties": ties, "mask_scope": mask_scope, "mask_history": mask_history}
    metrics, per_user = evaluate(model, ds, split=which, splits=split, per_user=True, **proto)
    print_metrics(f"{meta.arch if meta else getattr(model, 'arch', model_path.name)} ({which})",
                  metrics)  # fmt: skip
    if metrics.get("nonfinite_users"):
        click.echo(f"warning: {metrics['nonfinite_users']:,} of {metrics['count']:,} users had "
                   "NaN or infinite scores (counted as misses)", err=True)  # fmt: skip
    if meta and meta.data_fingerprint and meta.data_fingerprint != ds.fingerprint():
        click.echo("warning: the model was trained on data with another fingerprint", err=True)
    result = {"model": str(model_path), "split": which, "dataset": dataset_entry(ds),
              "protocol": {**proto, "users": len(es)}, "metrics": metrics}  # fmt: skip
    if reference is not None:
        ref_ranks = evaluate(reference, ds, split=which, splits=split, per_user=True,
                             **proto)[1].ranks  # fmt: skip
        result["against"] = {"model": str(against_path),
                             **_paired_retention(per_user.ranks, ref_ranks, resamples)}
    if out:
        write_json(out, result)


def _opened(path: Path, ds) -> tuple:
    """A model file opened for evaluation (checked against the data), or an exported artifact
    as its path (:func:`recshrink.evaluate` serves it through its backend)."""
    if artifact_kind(path) != "checkpoint":
        return path, None
    model, meta = open_teacher(path, ds.num_items, ds.item_ids)
    check_compatible(model, ds, str(path))
    return model, meta


def _paired_retention(ranks, ref_ranks, resamples: int) -> dict:
    """Retention of the reference's NDCG@10 and HR@10 by a model with per-user ranks
    ``ranks``, with paired-bootstrap intervals (printed)."""
    out = {}
    for name in ("ndcg", "hr"):
        try:
            cmp = rank_retention(ranks, ref_ranks, name, 10, resamples)
        except ValueError:
            raise RecshrinkError(
                f"the reference model's {name}@10 is 0: no retention to compute") from None
        out[f"{name}@10"] = cmp
        click.echo(f"  {name}@10 vs reference: {cmp['model']:.4f} vs {cmp['reference']:.4f}, "
                   f"retention {cmp['ratio']:.3f} (95% CI {cmp['ratio_low']:.3f}-"
                   f"{cmp['ratio_high']:.3f}; difference {cmp['diff']:+.4f}, CI "
                   f"{cmp['diff_low']:+.4f} to {cmp['diff_high']:+.4f}; paired bootstrap over "
                   f"{cmp['users']:,} users)")
    return out


def _read_ids(path: Path) -> list[str]:
    """An id list file: a JSON list, or one raw id per line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecshrinkError(f"{path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecshrinkError(f"{path}: not valid JSON: {exc}") from None
        return [str(x) for x in ids]
    return [line.strip() for line in text.splitlines() if line.strip()]


@main.command("import")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="A checkpoint trained elsewhere: RecBole's .pth (SASRec, GRU4Rec), read "
                   "without running anything in it.")
@data_options
@click.option("--item-ids", type=click.Path(path_type=Path), default=None,
              help="The raw id of each of the model's items in index order (a JSON list or one "
                   "per line; default: the data's ids, for RecBole atomic files).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Native model directory to write.")
def import_cmd(model_path, item_ids, out, **kw) -> None:
    """Import a model trained elsewhere as a native model directory; evaluate it."""
    check_out(out, "dir")
    ds, split = load_data_options(kw)
    res = import_model(model_path, ds, out=out,
                       item_ids=_read_ids(item_ids) if item_ids else None)  # fmt: skip
    metrics = evaluate(res.model, ds, splits=split, **EvalSpec().kwargs())
    write_json(out / "report.json", single_model_report(
        out.name, res.model, out, ds, metrics, {"seconds": 0.0, **res.summary}, "teacher"))
    print_metrics(f"{out.name} (imported {res.steps[0].get('model', res.model.arch)})", metrics)
    click.echo(f"model written to {out}")


@main.command("run")
@click.argument("recipe_path", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--set", "overrides", multiple=True, help="Override KEY.PATH=VALUE (repeatable).")
@click.option("--progress/--no-progress", default=True)
@click.option("--from", "from_stage", default=None, type=click.Choice(list(STAGES)),
              help="Redo this stage and every later one (earlier stages whose manifest "
                   "matches are reused).")
def run_cmd(recipe_path, out, overrides, progress, from_stage) -> None:
    """Run a recipe end to end (validated before any work starts).

    Re-running it skips models whose manifest matches and resumes interrupted trainings.
    """
    recipe = load_recipe(recipe_path, tuple(overrides))
    check_out(out, "dir")
    report = run_recipe_file(recipe, out, progress=progress, from_stage=from_stage)
    for name, entry in report["models"].items():
        print_metrics(f"{name} [{entry['role']}, {entry['params']:,} params]", entry["metrics"])
    click.echo(f"report: {out / 'report.json'} ({report['seconds']:.0f} s)")


@main.group(cls=Group)
def recipe() -> None:
    """Work with recipes."""


@recipe.command("validate")
@click.argument("recipe_path", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, help="Override KEY.PATH=VALUE (repeatable).")
def recipe_validate(recipe_path, overrides) -> None:
    """Check a recipe without running it."""
    r = load_recipe(recipe_path, tuple(overrides))
    click.echo(f"{recipe_path}: ok (recipe {r.name!r}, data {r.data.format}, teacher "
               f"{r.teacher.label}, {len(r.baselines)} baselines, {len(r.students)} students)")

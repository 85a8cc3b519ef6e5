"""The ``recshrink`` command line.

Every user error (bad path, malformed data, invalid recipe, incompatible model) prints one line
``error: ...`` and exits with code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from recshrink import __version__
from recshrink.errors import RecshrinkError

FORMAT_CHOICES = ["s3rec", "pairs", "recbole", "csv"]


class _Group(click.Group):
    """A click group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RecshrinkError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted (finished steps are kept; re-run to resume)", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # an internal error: one line unless debugging
            if isinstance(exc, OSError) and exc.filename and not os.environ.get("RECSHRINK_DEBUG"):
                # a path the user gave cannot be read or written (permissions, disk full, ...)
                click.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
                sys.exit(2)
            if os.environ.get("RECSHRINK_DEBUG"):
                traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)


def _check_out(path: Path, kind: str) -> None:
    """Refuse an output path that cannot become a ``kind`` ("dir" or "file") before any work.

    Raises:
        RecshrinkError: ``path`` (or a parent) exists with the wrong type.
    """
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise RecshrinkError(f"{path}: exists and is not a directory")
        if kind == "file" and path.is_dir():
            raise RecshrinkError(f"{path}: is a directory, expected a file name")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RecshrinkError(f"{path}: {parent} is not a directory")
            return


def _data_options(f, format_flag: str = "--format"):
    opts = [
        click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
                     help="Interaction file (S3-Rec lines, pairs, RecBole .inter, CSV)."),
        click.option(format_flag, "fmt", type=click.Choice(FORMAT_CHOICES), default=None,
                     help="File format (default: from the extension; .inter=recbole, "
                          ".csv=csv, else s3rec)."),
        click.option("--attributes", type=click.Path(path_type=Path), default=None,
                     help="S3-Rec item2attributes.json."),
        click.option("--item-path", type=click.Path(path_type=Path), default=None,
                     help="RecBole .item file (default: next to the .inter file)."),
        click.option("--kcore", type=int, default=0, show_default=True,
                     help="Drop users/items with fewer interactions."),
        click.option("--max-len", type=int, default=50, show_default=True,
                     help="History length."),
        click.option("--csv-columns", default="user_id,item_id", show_default=True,
                     help="CSV columns: user,item[,time[,category]]."),
        click.option("--sep", default=",", show_default=True, help="CSV separator."),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def _data_spec(data_path, fmt, attributes, item_path, kcore, max_len, csv_columns, sep):
    from pydantic import ValidationError

    from recshrink.recipe import DataSpec, format_validation_error

    if fmt is None:
        fmt = {".inter": "recbole", ".csv": "csv"}.get(data_path.suffix, "s3rec")
    cols = [c.strip() or None for c in csv_columns.split(",")]
    if len(cols) < 2 or len(cols) > 4 or not cols[0] or not cols[1]:
        raise RecshrinkError("--csv-columns: expected user,item[,time[,category]]")
    cols += [None] * (4 - len(cols))
    try:
        return DataSpec(
            format=fmt, path=str(data_path), root=".",
            attributes=str(attributes) if attributes else None,
            item_path=str(item_path) if item_path else None,
            kcore=kcore, max_len=max_len,
            csv={"user_col": cols[0], "item_col": cols[1], "time_col": cols[2],
                 "category_col": cols[3], "sep": sep},
        )  # fmt: skip
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None


def _print_metrics(name: str, m: dict) -> None:
    keys = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "f1@10", "mrr"]
    line = "  ".join(f"{k}={m[k]:.4f}" for k in keys if k in m)
    click.echo(f"{name}: {line}")
    for group in ("shift", "stable"):
        if group in m and m[group].get("count"):
            click.echo(f"  {group} ({m[group]['count']} users): ndcg@10={m[group]['ndcg@10']:.4f}"
                       f"  hr@10={m[group]['hr@10']:.4f}")  # fmt: skip


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="recshrink")
def main() -> None:
    """recshrink: compress large sequential interest models into small, fast recommenders."""


@main.group(cls=_Group)
def data() -> None:
    """Inspect data sets."""


@data.command("stats")
@_data_options
def data_stats(**kw) -> None:
    """Print users, items, interactions and sequence lengths as JSON."""
    from recshrink.pipeline import load_dataset

    ds = load_dataset(_data_spec(**kw))
    click.echo(json.dumps({**ds.stats(), "fingerprint": ds.fingerprint()}, indent=2))


def _train_options(f):
    opts = [
        click.option("--arg", "args", multiple=True,
                     help="Builder argument KEY=VALUE (repeatable), e.g. --arg dim=128."),
        click.option("--epochs", type=int, default=200, show_default=True),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option("--lr", type=float, default=1e-3, show_default=True),
        click.option("--weight-decay", type=float, default=0.0, show_default=True),
        click.option("--loss", type=click.Choice(["ce", "sampled", "bce"]), default="sampled",
                     show_default=True),
        click.option("--negatives", "num_negatives", type=int, default=1024, show_default=True,
                     help="Shared negatives for the sampled softmax."),
        click.option("--patience", type=int, default=10, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="cpu", show_default=True),
        click.option("--threads", type=int, default=None),
        click.option("--max-minutes", type=float, default=None, help="Training time budget."),
        click.option("--lr-decay", type=float, default=1.0, show_default=True,
                     help="Multiply the learning rate by this on a validation plateau (1 = off)."),
        click.option("--lr-patience", type=int, default=2, show_default=True,
                     help="Evaluations without improvement before each lr decay."),
        click.option("--min-lr", type=float, default=0.0, show_default=True,
                     help="No lr decay goes below this rate."),
        click.option("--progress/--no-progress", default=True),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def _key_values(items: tuple[str, ...], flag: str) -> dict:
    from recshrink.recipe import _parse_value

    out = {}
    for a in items:
        if "=" not in a:
            raise RecshrinkError(f"{flag} {a!r}: expected KEY=VALUE")
        k, v = a.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _spec(cls, model: str, args: tuple[str, ...], train_kw: dict, **extra):
    from pydantic import ValidationError

    from recshrink.recipe import format_validation_error

    try:
        return cls(model=model, args=_key_values(args, "--arg"), train=train_kw, **extra)
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None


def _finish(out: Path, label: str, model, ds, split, summary: dict, role: str, device: str,
            extra: dict | None = None) -> None:  # fmt: skip
    from recshrink.fsutil import write_json
    from recshrink.pipeline import dataset_entry, machine_entry, model_entry, split_metrics
    from recshrink.recipe import EvalSpec

    metrics = split_metrics(model, ds, split, EvalSpec())
    report = {
        "recshrink_version": __version__, "machine": machine_entry(device),
        "dataset": dataset_entry(ds), "teacher": label if role == "teacher" else None,
        "models": {label: model_entry(model, role, out, metrics, train=summary, extra=extra)},
    }  # fmt: skip
    write_json(out / "report.json", report)
    _print_metrics(label, metrics)
    click.echo(f"model written to {out} ({summary['seconds']:.0f} s, best epoch "
               f"{summary['best_epoch']})")  # fmt: skip


@main.command()
@_data_options
@click.option("--model", "model_name", default="sasrec_large", show_default=True,
              help="Builder or preset name.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model directory.")
@_train_options
def train(model_name, out, args, progress, data_path, fmt, attributes, item_path, kcore, max_len,
          csv_columns, sep, **train_kw) -> None:  # fmt: skip
    """Train a model (teacher, or a student without distillation); evaluate it on the test split."""
    from recshrink.data.split import leave_one_out
    from recshrink.pipeline import load_dataset, train_or_load
    from recshrink.recipe import ModelSpec

    spec = _spec(ModelSpec, model_name, args, train_kw)
    _check_out(out, "dir")
    dspec = _data_spec(data_path, fmt, attributes, item_path, kcore, max_len, csv_columns, sep)
    ds = load_dataset(dspec)
    split = leave_one_out(ds, dspec.max_len, dspec.shift_window)
    model, summary = train_or_load(spec, ds, split, out, max_len=dspec.max_len, progress=progress)
    role = "teacher" if model.arch == "sasrec" else "baseline"  # a student trained alone
    _finish(out, spec.label, model, ds, split, summary, role, spec.train.device)


@main.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(path_type=Path),
              help="Trained teacher (model directory or .pt).")
@click.option("--student", "student_name", default="gru_small", show_default=True,
              help="Student builder or preset name.")
@_data_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Student directory.")
@click.option("--kd", "kd", multiple=True,
              help="Distillation setting KEY=VALUE (repeatable), e.g. --kd kd_weight=0.9 "
                   "--kd temperature=2 --kd rank_weight=0.2 --kd init_items=pca.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where cached teacher outputs go (default: OUT/../.teacher-cache).")
@_train_options
def distill(teacher_path, student_name, out, kd, cache_dir, args, progress, data_path, fmt,
            attributes, item_path, kcore, max_len, csv_columns, sep, **train_kw) -> None:  # fmt: skip
    """Distil a trained teacher into a student (GRU/LSTM/CNN) and evaluate it."""
    from recshrink.data.split import leave_one_out
    from recshrink.models.io import load_model
    from recshrink.pipeline import check_compatible, distill_student, load_dataset
    from recshrink.recipe import StudentSpec

    spec = _spec(StudentSpec, student_name, args, train_kw, distill=_key_values(kd, "--kd"))
    _check_out(out, "dir")
    teacher, _ = load_model(teacher_path)
    dspec = _data_spec(data_path, fmt, attributes, item_path, kcore, max_len, csv_columns, sep)
    ds = load_dataset(dspec)
    check_compatible(teacher, ds, str(teacher_path))
    split = leave_one_out(ds, dspec.max_len, dspec.shift_window)
    cache = cache_dir or out.parent / ".teacher-cache"
    model, summary = distill_student(spec, teacher, str(teacher_path), ds, split, out,
                                     max_len=dspec.max_len, cache_dir=cache, progress=progress)
    _finish(out, spec.label, model, ds, split, summary, "student", spec.train.device,
            extra={"teacher": str(teacher_path), "losses": summary["losses"]})


def _protocol_options(f):
    """``--ties`` and ``--mask-scope``: the ranking protocol (defaults from EvalSpec)."""
    from recshrink.recipe import EvalSpec

    ev = EvalSpec()
    f = click.option("--mask-scope", type=click.Choice(["full", "window"]), default=ev.mask_scope,
                     show_default=True, help="Mask every item before the target (full) or only "
                     "the model's last max_len items (window).")(f)  # fmt: skip
    return click.option("--ties", type=click.Choice(["pessimistic", "expected"]), default=ev.ties,
                        show_default=True, help="A tied target ranks behind its ties "
                        "(pessimistic) or at the expected rank of random tie-breaking.")(f)  # fmt: skip


@main.command("evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory or .pt file.")
@_data_options
@click.option("--split", "which", type=click.Choice(["test", "valid"]), default="test",
              show_default=True)
@click.option("--against", "against_path", type=click.Path(path_type=Path), default=None,
              help="A reference model (e.g. the teacher): report this model's retention of its "
                   "NDCG@10 and HR@10 with paired-bootstrap 95% intervals over the same users.")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples for --against.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the metrics to this JSON file.")
@_protocol_options
def evaluate_cmd(model_path, which, against_path, resamples, out, ties, mask_scope, **kw) -> None:
    """Full-ranking metrics of a trained model on the data's leave-one-out split."""
    from recshrink.data.split import leave_one_out
    from recshrink.fsutil import write_json
    from recshrink.models.io import load_model
    from recshrink.pipeline import check_compatible, dataset_entry, load_dataset
    from recshrink.train.evaluate import evaluate, model_scorer

    if out:
        _check_out(out, "file")
    model, meta = load_model(model_path)
    reference = load_model(against_path)[0] if against_path else None
    dspec = _data_spec(**kw)
    ds = load_dataset(dspec)
    check_compatible(model, ds, str(model_path))
    if reference is not None:
        check_compatible(reference, ds, str(against_path))
    split = leave_one_out(ds, dspec.max_len, dspec.shift_window)
    es = split.test if which == "test" else split.valid
    proto = {"ties": ties, "mask_scope": mask_scope}
    metrics, per_user = evaluate(model_scorer(model), es, ds.item_attrs, per_user=True, **proto)
    _print_metrics(f"{meta.arch} ({which})", metrics)
    if metrics.get("nonfinite_users"):
        click.echo(f"warning: {metrics['nonfinite_users']:,} of {metrics['count']:,} users had "
                   "NaN or infinite scores (counted as misses)", err=True)  # fmt: skip
    if meta.data_fingerprint and meta.data_fingerprint != ds.fingerprint():
        click.echo("warning: the model was trained on data with another fingerprint", err=True)
    result = {"model": str(model_path), "split": which, "dataset": dataset_entry(ds),
              "protocol": {**proto, "users": len(es)}, "metrics": metrics}  # fmt: skip
    if reference is not None:
        result["against"] = {"model": str(against_path),
                             **_paired_retention(per_user.ranks, reference, es, resamples, proto)}  # fmt: skip
    if out:
        write_json(out, result)


def _paired_retention(ranks, reference, eval_set, resamples: int, proto: dict) -> dict:
    """Retention of ``reference``'s NDCG@10 and HR@10 by a model whose per-user test ranks are
    ``ranks``, with paired-bootstrap intervals (printed)."""
    from recshrink.metrics import rank_retention
    from recshrink.train.evaluate import evaluate, model_scorer

    ref_ranks = evaluate(model_scorer(reference), eval_set, per_user=True, **proto)[1].ranks
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


@main.command()
@click.argument("recipe_path", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--set", "overrides", multiple=True, help="Override KEY.PATH=VALUE (repeatable).")
@click.option("--progress/--no-progress", default=True)
@click.option("--from", "from_stage", default=None,
              type=click.Choice(["teacher", "baselines", "students", "prune", "quantize",
                                 "export", "benchmark"]),
              help="Redo this stage and every later one (earlier stages whose manifest "
                   "matches are reused).")
def run(recipe_path, out, overrides, progress, from_stage) -> None:
    """Run a recipe end to end (validated before any work starts).

    Re-running it skips models whose manifest matches and resumes interrupted trainings.
    """
    from recshrink.pipeline import run_recipe
    from recshrink.recipe import load_recipe

    recipe = load_recipe(recipe_path, tuple(overrides))
    _check_out(out, "dir")
    report = run_recipe(recipe, out, progress=progress, from_stage=from_stage)
    for name, entry in report["models"].items():
        _print_metrics(f"{name} [{entry['role']}, {entry['params']:,} params]", entry["metrics"])
    click.echo(f"report: {out / 'report.json'} ({report['seconds']:.0f} s)")


def _load_with_data(model_path: Path, kw: dict):
    """Load a model and the data it was trained on (checked to match)."""
    from recshrink.data.split import leave_one_out
    from recshrink.models.io import load_model
    from recshrink.pipeline import check_compatible, load_dataset

    model, meta = load_model(model_path)
    dspec = _data_spec(**kw)
    ds = load_dataset(dspec)
    check_compatible(model, ds, str(model_path))
    return model, meta, ds, leave_one_out(ds, dspec.max_len, dspec.shift_window)


def _compare_entry(label, model, path, metrics, parent_metrics, agreement, extra=None) -> dict:
    from recshrink.models.io import artifact_bytes

    entry = {"params": model.num_params() if model is not None else None,
             "size_bytes": artifact_bytes(path), "artifact": str(path),
             "metrics": metrics, "agreement@10": agreement,
             "retention": round(metrics["ndcg@10"] / max(parent_metrics["ndcg@10"], 1e-12), 4)}
    entry.update(extra or {})
    click.echo(f"{label}: size {entry['size_bytes']:,} B, ndcg@10 {metrics['ndcg@10']:.4f} "
               f"(retention {entry['retention']:.3f}), f1@10 {metrics['f1@10']:.4f}, "
               f"agreement@10 {agreement:.3f}")  # fmt: skip
    return entry


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Trained model directory (or .pt) to prune.")
@_data_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Pruned model directory.")
@click.option("--ratio", type=float, default=0.5, show_default=True,
              help="Fraction of channels to remove from every prunable unit.")
@click.option("--layer", "layers", multiple=True,
              help="Per-module ratio NAME=RATIO by dotted-name prefix, e.g. blocks.1.ffn=0.6.")
@click.option("--importance", type=click.Choice(["magnitude", "taylor"]), default="taylor",
              show_default=True)
@click.option("--steps", "n_steps", type=int, default=1, show_default=True,
              help="Prune in this many steps, each followed by recovery.")
@click.option("--recover", type=click.Choice(["distill", "finetune", "none"]), default="distill",
              show_default=True, help="Recovery after each step.")
@click.option("--sparsity", type=click.Choice(["structured", "unstructured", "2:4"]),
              default="structured", show_default=True)
@click.option("--targets", default="ffn,heads,hidden,channels", show_default=True,
              help="Units to prune (ffn, heads: SASRec; hidden: GRU/LSTM; channels: CNN).")
@click.option("--kd", "kd", multiple=True, help="Recovery distillation setting KEY=VALUE.")
@_train_options
def prune(model_path, out, ratio, layers, importance, n_steps, recover, sparsity, targets, kd, args,
          progress, data_path, fmt, attributes, item_path, kcore, max_len, csv_columns, sep,
          **train_kw) -> None:  # fmt: skip
    """Structured pruning (or sparsity) with recovery training; reports the cost in NDCG/F1."""
    from pydantic import ValidationError

    from recshrink.compress.distill import DistillConfig
    from recshrink.compress.prune import PruneConfig
    from recshrink.fsutil import write_json
    from recshrink.pipeline import prune_model, split_metrics
    from recshrink.recipe import EvalSpec, format_validation_error
    from recshrink.train.config import TrainConfig
    from recshrink.train.evaluate import model_scorer, scorer_agreement

    try:
        cfg = PruneConfig(ratio=ratio, layers=_key_values(layers, "--layer"), importance=importance,
                          steps=n_steps, recover=recover, sparsity=sparsity,
                          targets=tuple(t.strip() for t in targets.split(",") if t.strip()))
        train_cfg = TrainConfig(**train_kw)
        kd_cfg = DistillConfig(**_key_values(kd, "--kd"))
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None
    if args:
        raise RecshrinkError("--arg: builder arguments do not apply to pruning")
    _check_out(out, "dir")
    kw = dict(data_path=data_path, fmt=fmt, attributes=attributes, item_path=item_path,
              kcore=kcore, max_len=max_len, csv_columns=csv_columns, sep=sep)
    parent, meta, ds, split = _load_with_data(model_path, kw)
    pruned, summary = prune_model(parent, str(model_path), meta.steps, cfg, ds, split, out,
                                  train_cfg=train_cfg, distill_cfg=kd_cfg,
                                  cache_dir=out.parent / ".teacher-cache", progress=progress)
    ev = EvalSpec()
    m_parent, m_pruned = split_metrics(parent, ds, split, ev), split_metrics(pruned, ds, split, ev)
    agree = scorer_agreement(model_scorer(pruned), model_scorer(parent), split.test.histories)
    report = {"parent": {"artifact": str(model_path), "params": parent.num_params(),
                         "metrics": m_parent},
              "pruned": _compare_entry("pruned", pruned, out, m_pruned, m_parent, agree,
                                       {"parent": str(model_path), "steps": [cfg.step()],
                                        "prune": summary})}  # fmt: skip
    write_json(out / "report.json", report)
    click.echo(f"params {parent.num_params():,} -> {pruned.num_params():,}; written to {out}")


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory (row-wise modes, or exported first) or an exported .onnx.")
@_data_options
@click.option("--mode", type=click.Choice(["rowwise-int8", "rowwise-int4", "dynamic", "static",
                                           "fp16"]), default="dynamic", show_default=True,
              help="rowwise-*: item table in PyTorch (writes a model directory); dynamic/static "
                   "INT8 and fp16: ONNX Runtime on the exported graph (writes an .onnx).")
@click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"]),
              default="minmax", show_default=True, help="Static INT8 calibration method.")
@click.option("--per-channel", is_flag=True, help="Per-channel weight scales.")
@click.option("--op-types", default="MatMul", show_default=True,
              help="Comma-separated operators to quantize.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads for evaluation.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output model directory (row-wise) or .onnx file.")
def quantize(model_path, mode, calibration, per_channel, op_types, threads, out, **kw) -> None:
    """Quantize a model and report size, NDCG@10/F1@10 and top-10 agreement before and after."""
    import tempfile

    from pydantic import ValidationError

    from recshrink.compress.quantize import OnnxQuantConfig, RowwiseConfig, quantize_item_table
    from recshrink.fsutil import write_json
    from recshrink.models.io import load_model, save_model
    from recshrink.pipeline import (
        check_compatible, export_checked, load_dataset, quantize_file, split_metrics,
    )  # fmt: skip
    from recshrink.recipe import EvalSpec, format_validation_error
    from recshrink.train.evaluate import model_scorer, scorer_agreement

    ev = EvalSpec()
    if mode.startswith("rowwise"):
        if model_path.suffix == ".onnx":
            raise RecshrinkError(f"{model_path}: row-wise modes take a model directory")
        _check_out(out, "dir")
        model, meta, ds, split = _load_with_data(model_path, kw)
        cfg = RowwiseConfig(bits=int(mode[-1]))
        parent_metrics = split_metrics(model, ds, split, ev)
        parent_scorer = model_scorer(load_model(model_path)[0])
        q = quantize_item_table(model, cfg)
        save_model(q, out, item_ids=meta.item_ids, data_fingerprint=meta.data_fingerprint,
                   steps=[*meta.steps, cfg.step()], extra={**meta.extra, "parent": str(model_path)})
        metrics = split_metrics(q, ds, split, ev)
        agree = scorer_agreement(model_scorer(q), parent_scorer, split.test.histories)
        entry = _compare_entry(mode, q, out, metrics, parent_metrics, agree,
                               {"parent": str(model_path), "steps": [*meta.steps, cfg.step()]})
        write_json(out / "report.json", {"parent": {"artifact": str(model_path),
                                                    "metrics": parent_metrics}, "quantized": entry})
        return
    if out.suffix != ".onnx":
        raise RecshrinkError(f"{out}: ONNX quantization writes an .onnx file")
    _check_out(out, "file")
    try:
        cfg = OnnxQuantConfig(mode=mode, calibration=calibration, per_channel=per_channel,
                              op_types=tuple(o.strip() for o in op_types.split(",") if o.strip()))
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None
    from recshrink.data.split import leave_one_out

    dspec = _data_spec(**kw)
    ds = load_dataset(dspec)
    split = leave_one_out(ds, dspec.max_len, dspec.shift_window)
    with tempfile.TemporaryDirectory(prefix="recshrink-q-") as tmp:
        src = model_path
        if model_path.suffix != ".onnx":
            model, meta = load_model(model_path)
            check_compatible(model, ds, str(model_path))
            src = Path(tmp) / "fp32.onnx"
            export_checked(model, src, split, steps=meta.steps, item_ids=meta.item_ids,
                           popular=meta.extra.get("popular", []))
        res = quantize_file(src, out, cfg, ds, split, ev, threads)
        from recshrink.export.runtime import sidecar_path

        if sidecar_path(src).is_file():
            sidecar_path(out).write_text(sidecar_path(src).read_text())
    click.echo(f"{mode}: {res['before']['bytes']:,} B -> {res['after']['bytes']:,} B "
               f"({res['size_ratio']:.1%}); ndcg@10 {res['before']['metrics']['ndcg@10']:.4f} -> "
               f"{res['after']['metrics']['ndcg@10']:.4f}; agreement@10 {res['agreement@10']:.3f}")
    write_json(out.with_name(out.stem + ".report.json"), res)


@main.command("export")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory (or .pt); for tensorrt also an .onnx file.")
@lambda f: _data_options(f, "--data-format")
@click.option("--format", "target", type=click.Choice(["onnx", "tensorrt", "aoti"]),
              default="onnx", show_default=True)
@click.option("--quantized", type=click.Choice(["none", "dynamic", "static", "fp16"]),
              default="none", show_default=True, help="ONNX Runtime quantization after export.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16",
              show_default=True, help="TensorRT engine precision.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Items per user in the graph.")
@click.option("--slim", is_flag=True, help="Simplify the graph with onnxslim (the slim extra).")
@click.option("--min-agreement", type=float, default=0.99, show_default=True,
              help="Fail below this top-10 agreement with PyTorch (fp32 ONNX).")
@click.option("--device", default="cpu", show_default=True, help="AOTInductor target device.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output file.")
def export_cmd(model_path, target, quantized, precision, k, slim, min_agreement, device, out,
               **kw) -> None:  # fmt: skip
    """Export a model: ONNX (validated against PyTorch), a TensorRT engine, or an AOTInductor package."""
    from recshrink.export.onnx import OnnxExportConfig
    from recshrink.fsutil import write_json

    _check_out(out, "file")
    if target == "tensorrt":
        from recshrink.export.tensorrt import TensorRTConfig, build_engine, opt_length

        if model_path.suffix != ".onnx":
            raise RecshrinkError("--format tensorrt takes an exported .onnx (export it first)")
        from recshrink.data.split import leave_one_out
        from recshrink.pipeline import load_dataset

        dspec = _data_spec(**kw)
        split = leave_one_out(load_dataset(dspec), dspec.max_len, dspec.shift_window)
        build_engine(model_path, out, TensorRTConfig(precision=precision,
                                                     opt_len=opt_length(split.test.histories)))
        click.echo(f"engine written to {out}")
        return
    model, meta, ds, split = _load_with_data(model_path, kw)
    popular = meta.extra.get("popular", [])
    if target == "aoti":
        from recshrink.export.runtime import export_aoti

        export_aoti(model, out, k=k, device=device, item_ids=meta.item_ids, popular=popular)
        click.echo(f"AOTInductor package written to {out}")
        return
    if out.suffix != ".onnx":
        raise RecshrinkError(f"{out}: expected a .onnx file name")
    from recshrink.pipeline import export_checked, quantize_file
    from recshrink.recipe import EvalSpec

    cfg = OnnxExportConfig(k=k, min_agreement=min_agreement, full_scores=True, slim=slim)
    if quantized == "none":
        info = export_checked(model, out, split, steps=meta.steps, item_ids=meta.item_ids,
                              popular=popular, cfg=cfg)
    else:
        from recshrink.compress.quantize import OnnxQuantConfig
        from recshrink.export.runtime import sidecar_path

        fp32 = out.with_name(out.stem + ".fp32.onnx")
        export_checked(model, fp32, split, steps=meta.steps, item_ids=meta.item_ids,
                       popular=popular, cfg=cfg)
        info = quantize_file(fp32, out, OnnxQuantConfig(mode=quantized), ds, split, EvalSpec())
        sidecar_path(out).write_text(sidecar_path(fp32).read_text())
    write_json(out.with_name(out.stem + ".export.json"), info)
    click.echo(json.dumps({k2: v for k2, v in info.items() if k2 not in ("before", "after")}))


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Artifact: .onnx, .engine/.plan, .pt2, or a model directory.")
@click.option("--history", "histories", multiple=True, required=True,
              help='A history of raw item ids, oldest first, e.g. "3 17 42" (repeatable).')
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def recommend(model_path, histories, k, device) -> None:
    """Top-k items for one or more histories, from any exported artifact."""
    from recshrink.export.runtime import Predictor

    parsed = []
    for h in histories:
        ids = []
        for tok in h.replace(",", " ").split():
            try:
                ids.append(int(tok))
            except ValueError:
                raise RecshrinkError(f"--history {h!r}: {tok!r} is not an integer item id") from None
        parsed.append(ids)
    pred = Predictor.load(model_path, device=device)
    try:
        rec = pred.recommend(parsed, k)
    except ValueError as exc:
        raise RecshrinkError(str(exc)) from None
    for h, ids, sc in zip(histories, rec.ids, rec.scores):
        click.echo(json.dumps({"history": h, "items": ids,
                               "scores": [None if s != s else round(float(s), 4) for s in sc]}))
    if rec.unknown:
        click.echo(f"note: {rec.unknown} unknown item id(s) skipped", err=True)
    if rec.nonfinite:
        click.echo(f"warning: {rec.nonfinite:,} of {len(parsed):,} histories had NaN or infinite "
                   "scores (no items returned)", err=True)  # fmt: skip


@main.command()
@click.option("--model", "models", multiple=True, required=True,
              help="Artifact to benchmark, optionally LABEL=PATH (repeatable): a model "
                   "directory, .onnx, .pt2 or .engine.")
@_data_options
@click.option("--backend", "backends", default="torch,onnxruntime", show_default=True,
              help="Comma-separated: torch, torch-compile, torch-cudagraph, onnxruntime, aoti, "
                   "tensorrt (each model runs on those that apply to its artifact).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch", "batches", default="1,16,256", show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime).")
@click.option("--budget", type=float, default=2.0, show_default=True,
              help="Seconds of timed calls per model, backend and batch size.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32",
              show_default=True, help="Weights of the PyTorch backends (fp16/bf16 on GPU).")
@click.option("--teacher", default=None, help="Label of the reference model (default: first).")
@click.option("--no-quality", is_flag=True, help="Skip ranking quality (latency only).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report directory.")
@_protocol_options
def benchmark(models, backends, device, batches, threads, budget, dtype, teacher, no_quality, out,
              ties, mask_scope, **kw) -> None:  # fmt: skip
    """Latency, throughput, memory, size and quality through the serving backend, side by side."""
    from recshrink.benchmark.report import write_report
    from recshrink.benchmark.run import run_benchmark
    from recshrink.data.split import leave_one_out
    from recshrink.pipeline import load_dataset

    _check_out(out, "dir")
    pairs = []
    for m in models:
        label, _, path = m.rpartition("=")
        path = Path(path)
        pairs.append((label or path.stem if path.suffix else label or path.name, path))
    try:
        bs = tuple(int(b) for b in batches.split(",") if b.strip())
    except ValueError:
        raise RecshrinkError(f"--batch {batches!r}: expected comma-separated integers") from None
    if not bs or min(bs) < 1:
        raise RecshrinkError(f"--batch {batches!r}: batch sizes must be positive")
    for _, path in pairs:
        if not path.exists():
            raise RecshrinkError(f"{path}: no such model artifact")
    dspec = _data_spec(**kw)
    ds = load_dataset(dspec)
    split = leave_one_out(ds, dspec.max_len, dspec.shift_window)
    report = run_benchmark(pairs, ds, split, backends=tuple(b.strip() for b in backends.split(",")),
                           device=device, batches=bs, threads=threads, budget_s=budget,
                           dtype=dtype, teacher=teacher, quality=not no_quality,
                           ties=ties, mask_scope=mask_scope)  # fmt: skip
    report["dataset"] = {**ds.stats(), "fingerprint": ds.fingerprint()}
    for path in write_report(report, out):
        click.echo(f"wrote {path}")


@main.group(cls=_Group)
def recipe() -> None:
    """Work with recipes."""


@recipe.command("validate")
@click.argument("recipe_path", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, help="Override KEY.PATH=VALUE (repeatable).")
def recipe_validate(recipe_path, overrides) -> None:
    """Check a recipe without running it."""
    from recshrink.recipe import load_recipe

    r = load_recipe(recipe_path, tuple(overrides))
    click.echo(f"{recipe_path}: ok (recipe {r.name!r}, data {r.data.format}, teacher "
               f"{r.teacher.label}, {len(r.baselines)} baselines, {len(r.students)} students)")


if __name__ == "__main__":
    main()

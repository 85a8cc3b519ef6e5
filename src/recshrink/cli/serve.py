"""``recshrink recommend`` and ``benchmark``: serving from an artifact, and timing artifacts side
by side; each calls one function of the public API."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click

from recshrink.api import benchmark
from recshrink.benchmark.report import write_report
from recshrink.cli._base import check_out, data_options, load_data_options, main, protocol_options
from recshrink.errors import RecshrinkError
from recshrink.export.runtime import Predictor

_BENCH = {k: p.default for k, p in inspect.signature(benchmark).parameters.items()}


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Artifact: .onnx, .engine/.plan, .pt2, or a model directory.")
@click.option("--history", "histories", multiple=True, required=True,
              help='A history of raw item ids, oldest first, e.g. "3 17 42" (repeatable).')
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def recommend(model_path, histories, k, device) -> None:
    """Top-k items for one or more histories, from any exported artifact."""
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


@main.command("benchmark")
@click.option("--model", "models", multiple=True, required=True,
              help="Artifact to benchmark, optionally LABEL=PATH (repeatable): a model "
                   "directory, .onnx, .pt2 or .engine.")
@data_options
@click.option("--backend", "backends", default=",".join(_BENCH["backends"]), show_default=True,
              help="Comma-separated: torch, torch-compile, torch-cudagraph, onnxruntime, aoti, "
                   "tensorrt (each model runs on those that apply to its artifact).")
@click.option("--device", default=_BENCH["device"], show_default=True)
@click.option("--batch", "batches", default=",".join(map(str, _BENCH["batches"])), show_default=True,
              help="Comma-separated batch sizes.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime).")
@click.option("--budget", type=float, default=_BENCH["budget_s"], show_default=True,
              help="Seconds of timed calls per model, backend and batch size.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default=_BENCH["dtype"],
              show_default=True, help="Weights of the PyTorch backends (fp16/bf16 on GPU).")
@click.option("--teacher", default=None, help="Label of the reference model (default: first).")
@click.option("--no-quality", is_flag=True, help="Skip ranking quality (latency only).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report directory.")
@protocol_options
def benchmark_cmd(models, backends, device, batches, threads, budget, dtype, teacher, no_quality,
                  out, ties, mask_scope, **kw) -> None:  # fmt: skip
    """Latency, throughput, memory, size and quality through the serving backend, side by side."""
    check_out(out, "dir")
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
    ds, split = load_data_options(kw)
    report = benchmark(pairs, ds, backends=tuple(b.strip() for b in backends.split(",")),
                       device=device, batches=bs, threads=threads, budget_s=budget, dtype=dtype,
                       teacher=teacher, quality=not no_quality, split=split, ties=ties,
                       mask_scope=mask_scope, progress=True)  # fmt: skip
    report["dataset"] = {**ds.stats(), "fingerprint": ds.fingerprint()}
    for path in write_report(report, out):
        click.echo(f"wrote {path}")

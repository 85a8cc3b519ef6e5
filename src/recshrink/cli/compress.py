"""``recshrink prune``, ``quantize`` and ``export``: each parses its options and calls one
function of :mod:`recshrink.api`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from recshrink.api import check_compatible, evaluate, export, prune, quantize
from recshrink.api.quantization import ROWWISE
from recshrink.cli._base import (
    check_out, data_options, key_values, load_data_options, main, train_options,
    validated,
)  # fmt: skip
from recshrink.compress.distill import DistillConfig
from recshrink.compress.prune import PruneConfig
from recshrink.compress.quantize import OnnxQuantConfig
from recshrink.entries import comparison_entry
from recshrink.errors import RecshrinkError
from recshrink.export.onnx import OnnxExportConfig
from recshrink.export.ann_index import CODES, INDEXES, RetrievalConfig
from recshrink.export.tensorrt import TensorRTConfig, opt_length
from recshrink.fsutil import write_json
from recshrink.teachers import open_model
from recshrink.recipe import EvalSpec
from recshrink.train.config import TrainConfig
from recshrink.train.evaluate import model_scorer, scorer_agreement

_PRUNE = PruneConfig()
_QUANT = OnnxQuantConfig()
_ONNX = OnnxExportConfig()
_TRT = TensorRTConfig()


def _load_with_data(model_path: Path, kw: dict):
    """Load a model and the data it was trained on (checked to match)."""
    model, meta = open_model(model_path)
    ds, split = load_data_options(kw)
    check_compatible(model, ds, str(model_path))
    return model, meta, ds, split


def _compare(label: str, model, path: Path, metrics: dict, parent_metrics: dict, agreement: float,
             extra: dict | None = None) -> dict:  # fmt: skip
    entry = comparison_entry(model, path, metrics, parent_metrics, agreement, extra)
    click.echo(f"{label}: size {entry['size_bytes']:,} B, ndcg@10 {metrics['ndcg@10']:.4f} "
               f"(retention {entry['retention']:.3f}), f1@10 {metrics['f1@10']:.4f}, "
               f"agreement@10 {agreement:.3f}")  # fmt: skip
    return entry


@main.command("prune")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Trained model directory (or .pt) to prune.")
@data_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Pruned model directory.")
@click.option("--ratio", type=float, default=_PRUNE.ratio, show_default=True,
              help="Fraction of channels to remove from every prunable unit.")
@click.option("--layer", "layers", multiple=True,
              help="Per-module ratio NAME=RATIO by dotted-name prefix, e.g. blocks.1.ffn=0.6.")
@click.option("--importance", type=click.Choice(["magnitude", "taylor"]),
              default=_PRUNE.importance, show_default=True)
@click.option("--steps", "n_steps", type=int, default=_PRUNE.steps, show_default=True,
              help="Prune in this many steps, each followed by recovery.")
@click.option("--recover", type=click.Choice(["distill", "finetune", "none"]),
              default=_PRUNE.recover, show_default=True, help="Recovery after each step.")
@click.option("--sparsity", type=click.Choice(["structured", "unstructured", "2:4"]),
              default=_PRUNE.sparsity, show_default=True)
@click.option("--targets", default=",".join(_PRUNE.targets), show_default=True,
              help="Units to prune (ffn, heads: SASRec; hidden: GRU/LSTM; channels: CNN).")
@click.option("--kd", "kd", multiple=True, help="Recovery distillation setting KEY=VALUE.")
@train_options
def prune_cmd(model_path, out, ratio, layers, importance, n_steps, recover, sparsity, targets, kd,
              args, progress, data_path, fmt, attributes, item_path, kcore, max_len, csv_columns,
              sep, **train_kw) -> None:  # fmt: skip
    """Structured pruning (or sparsity) with recovery training; reports the cost in NDCG/F1."""
    cfg = validated(lambda: PruneConfig(
        ratio=ratio, layers=key_values(layers, "--layer"), importance=importance, steps=n_steps,
        recover=recover, sparsity=sparsity,
        targets=tuple(t.strip() for t in targets.split(",") if t.strip())))  # fmt: skip
    train_cfg = validated(lambda: TrainConfig(**train_kw))
    kd_cfg = validated(lambda: DistillConfig(**key_values(kd, "--kd")))
    if args:
        raise RecshrinkError("--arg: builder arguments do not apply to pruning")
    check_out(out, "dir")
    kw = dict(data_path=data_path, fmt=fmt, attributes=attributes, item_path=item_path,
              kcore=kcore, max_len=max_len, csv_columns=csv_columns, sep=sep)
    parent, meta, ds, split = _load_with_data(model_path, kw)
    res = prune(parent, ds, out=out, config=cfg, train=train_cfg, kd=kd_cfg, split=split,
                steps=meta.steps, parent_label=str(model_path), progress=progress)  # fmt: skip
    ev = EvalSpec().kwargs()
    m_parent = evaluate(parent, ds, splits=split, **ev)
    m_pruned = evaluate(res.model, ds, splits=split, **ev)
    agree = scorer_agreement(model_scorer(res.model), model_scorer(parent), split.test.histories)
    report = {"parent": {"artifact": str(model_path), "params": parent.num_params(),
                         "metrics": m_parent},
              "pruned": _compare("pruned", res.model, out, m_pruned, m_parent, agree,
                                 {"parent": str(model_path), "steps": [cfg.step()],
                                  "prune": res.summary})}  # fmt: skip
    write_json(out / "report.json", report)
    click.echo(f"params {parent.num_params():,} -> {res.model.num_params():,}; written to {out}")


@main.command("quantize")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory (row-wise modes, or exported first) or an exported .onnx.")
@data_options
@click.option("--mode", type=click.Choice(["rowwise-int8", "rowwise-int4", "dynamic", "static",
                                           "fp16"]), default=_QUANT.mode, show_default=True,
              help="rowwise-*: item table in PyTorch (writes a model directory); dynamic/static "
                   "INT8 and fp16: ONNX Runtime on the exported graph (writes an .onnx).")
@click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"]),
              default=_QUANT.calibration, show_default=True, help="Static INT8 calibration method.")
@click.option("--per-channel", is_flag=True, help="Per-channel weight scales.")
@click.option("--op-types", default=",".join(_QUANT.op_types), show_default=True,
              help="Comma-separated operators to quantize.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads for evaluation.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output model directory (row-wise) or .onnx file.")
def quantize_cmd(model_path, mode, calibration, per_channel, op_types, threads, out, **kw) -> None:
    """Quantize a model and report size, NDCG@10/F1@10 and top-10 agreement before and after."""
    ev = EvalSpec().kwargs()
    if mode in ROWWISE:
        if model_path.suffix == ".onnx":
            raise RecshrinkError(f"{model_path}: row-wise modes take a model directory")
        check_out(out, "dir")
        model, meta, ds, split = _load_with_data(model_path, kw)
        parent_metrics = evaluate(model, ds, splits=split, **ev)
        res = quantize(model_path, mode, out=out)
        metrics = evaluate(res.model, ds, splits=split, **ev)
        agree = scorer_agreement(model_scorer(res.model), model_scorer(model),
                                 split.test.histories)  # fmt: skip
        entry = _compare(mode, res.model, out, metrics, parent_metrics, agree,
                         {"parent": str(model_path), "steps": res.steps})
        write_json(out / "report.json", {"parent": {"artifact": str(model_path),
                                                    "metrics": parent_metrics}, "quantized": entry})
        return
    if out.suffix != ".onnx":
        raise RecshrinkError(f"{out}: ONNX quantization writes an .onnx file")
    check_out(out, "file")
    cfg = validated(lambda: OnnxQuantConfig(
        mode=mode, calibration=calibration, per_channel=per_channel,
        op_types=tuple(o.strip() for o in op_types.split(",") if o.strip())))  # fmt: skip
    ds, split = load_data_options(kw)
    res = quantize(model_path, mode, out=out, data=ds, split=split, config=cfg, eval_kwargs=ev,
                   threads=threads)  # fmt: skip
    click.echo(f"{mode}: {res['before']['bytes']:,} B -> {res['after']['bytes']:,} B "
               f"({res['size_ratio']:.1%}); ndcg@10 {res['before']['metrics']['ndcg@10']:.4f} -> "
               f"{res['after']['metrics']['ndcg@10']:.4f}; agreement@10 {res['agreement@10']:.3f}")
    write_json(out.with_name(out.stem + ".report.json"), res)


@main.command("export")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Model directory (or .pt); for tensorrt also an .onnx file.")
@lambda f: data_options(f, "--data-format")
@click.option("--format", "target", type=click.Choice(["onnx", "tensorrt", "aoti"]),
              default="onnx", show_default=True)
@click.option("--quantized", type=click.Choice(["none", "dynamic", "static", "fp16"]),
              default="none", show_default=True, help="ONNX Runtime quantization after export.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=_TRT.precision,
              show_default=True, help="TensorRT engine precision.")
@click.option("-k", "k", type=int, default=_ONNX.k, show_default=True,
              help="Items per user in the graph.")
@click.option("--slim", is_flag=True, help="Simplify the graph with onnxslim (the slim extra).")
@click.option("--min-agreement", type=float, default=_ONNX.min_agreement, show_default=True,
              help="Fail below this top-10 agreement with PyTorch (fp32 ONNX).")
@click.option("--device", default="cpu", show_default=True, help="AOTInductor target device.")
@click.option("--retrieval", type=click.Choice(["graph", "ann"]), default="graph",
              show_default=True, help="graph: the catalogue scored inside the graph (exact); "
              "ann: a directory with the user encoder (ONNX) and a FAISS item index.")  # fmt: skip
@click.option("--index", "index_kind", type=click.Choice(INDEXES), default="auto",
              show_default=True, help="Item index of --retrieval ann (auto: by catalogue size).")
@click.option("--codes", type=click.Choice(CODES), default="auto", show_default=True,
              help="Vectors stored by the index (int8: scalar-quantized; pq: IVF-PQ's codes).")
@click.option("--index-arg", "index_args", multiple=True, metavar="KEY=VALUE",
              help="Index setting (repeatable), e.g. --index-arg ef_search=128 --index-arg "
                   "nprobe=32 --index-arg min_recall=0.95.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output file (a directory for --retrieval ann).")
def export_cmd(model_path, target, quantized, precision, k, slim, min_agreement, device, retrieval,
               index_kind, codes, index_args, out, **kw) -> None:  # fmt: skip
    """Export a model: ONNX (validated against PyTorch), a TensorRT engine, an AOTInductor
    package, or a retrieval artifact (user encoder plus approximate-nearest-neighbour index)."""
    if retrieval == "ann":
        check_out(out, "dir")
        try:
            rcfg = RetrievalConfig(index=index_kind, codes=codes,
                                   **key_values(index_args, "--index-arg"))  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise RecshrinkError(f"--index-arg: {exc}") from None
        model, meta, ds, split = _load_with_data(model_path, kw)
        info = export(model_path, out, "ann", data=ds, split=split, config=rcfg)
        write_json(out.with_name(out.name + ".export.json"), info)
        click.echo(json.dumps(info))
        return
    check_out(out, "file")
    if target == "tensorrt":
        if model_path.suffix != ".onnx":
            raise RecshrinkError("--format tensorrt takes an exported .onnx (export it first)")
        _, split = load_data_options(kw)
        export(model_path, out, "tensorrt", split=split, config=TensorRTConfig(
            precision=precision, opt_len=opt_length(split.test.histories)))  # fmt: skip
        click.echo(f"engine written to {out}")
        return
    model, meta, ds, split = _load_with_data(model_path, kw)
    if target == "aoti":
        export(model_path, out, "aoti", k=k, device=device)
        click.echo(f"AOTInductor package written to {out}")
        return
    if out.suffix != ".onnx":
        raise RecshrinkError(f"{out}: expected a .onnx file name")
    cfg = OnnxExportConfig(k=k, min_agreement=min_agreement, full_scores=True, slim=slim)
    if quantized == "none":
        info = export(model_path, out, data=ds, split=split, config=cfg)
    else:
        fp32 = out.with_name(out.stem + ".fp32.onnx")
        export(model_path, fp32, data=ds, split=split, config=cfg)
        info = quantize(fp32, quantized, out=out, data=ds, split=split,
                        eval_kwargs=EvalSpec().kwargs())  # fmt: skip
    write_json(out.with_name(out.stem + ".export.json"), info)
    click.echo(json.dumps({k2: v for k2, v in info.items() if k2 not in ("before", "after")}))

"""The quantize stage's entry function: a model's item table row-wise (INT8/INT4, in PyTorch) or
an exported ONNX graph through ONNX Runtime's quantizer (dynamic/static INT8, fp16)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

from recshrink.api._common import PathLike, Result, as_model, as_split, check_compatible, configured
from recshrink.api.exports import export_checked
from recshrink.api.training import save_trained
from recshrink.compress.quantize import (
    OnnxQuantConfig, RowwiseConfig, quantize_item_table, quantize_onnx,
)  # fmt: skip
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.entries import rounded
from recshrink.errors import RecshrinkError
from recshrink.export.onnx import onnx_metadata, onnx_scorer
from recshrink.export.artifacts import sidecar_path
from recshrink.models.base import SeqRecModel
from recshrink.models.io import save_model
from recshrink.train.evaluate import evaluate, scorer_agreement

ROWWISE = {"rowwise-int8": 8, "rowwise-int4": 4}
ONNX_MODES = ("dynamic", "static", "fp16")


def quantize_file(src: Path, dst: Path, cfg: OnnxQuantConfig, data: InteractionData, split: Split,
                  eval_kwargs: dict, threads: int | None = None) -> dict:  # fmt: skip
    """Quantize an exported ONNX file (calibrated on validation histories) and measure it
    against its source through ONNX Runtime, on both splits.

    Returns:
        ``{"step", "path", "size_ratio", "agreement@10", "before": {"bytes", "valid",
        "metrics"}, "after": {...}}``.
    """
    quantize_onnx(src, dst, cfg, split.valid.histories)
    before, after = onnx_scorer(src, threads), onnx_scorer(dst, threads)
    out = {"step": cfg.step(), "path": str(dst),
           "size_ratio": round(dst.stat().st_size / src.stat().st_size, 4),
           "agreement@10": scorer_agreement(before, after, split.valid.histories, 10,
                                            eval_kwargs.get("mask_history", True))}  # fmt: skip
    for side, path, fn in (("before", src, before), ("after", dst, after)):
        out[side] = {"path": str(path), "bytes": path.stat().st_size,
                     "valid": rounded(evaluate(fn, split.valid, data.item_attrs, **eval_kwargs)),
                     "metrics": rounded(evaluate(fn, split.test, data.item_attrs, **eval_kwargs))}
    return out


def quantize(
    model: SeqRecModel | PathLike,
    mode: str = "rowwise-int8",
    *,
    out: PathLike | None = None,
    data: InteractionData | None = None,
    split: Split | None = None,
    config: OnnxQuantConfig | None = None,
    eval_kwargs: dict | None = None,
    threads: int | None = None,
) -> Result | dict:
    """Quantize a model or an exported graph.

    Args:
        model: A model or model directory (``rowwise-*``; ONNX modes export it first, validated),
            or an exported ``.onnx`` file (ONNX modes).
        mode: ``"rowwise-int8"`` / ``"rowwise-int4"``: the item table in PyTorch, one scale and
            offset per row (returns a model); ``"dynamic"`` / ``"static"`` INT8 or ``"fp16"``:
            ONNX Runtime's quantizer on the exported graph (writes ``out``, an ``.onnx``).
        out: Model directory (row-wise) or ``.onnx`` file (ONNX modes; required).
        data: The data set: calibration (static), and the quality before and after on both
            splits for ONNX modes.
        split: Its leave-one-out split (default: built from ``data``).
        config: :class:`recshrink.compress.quantize.OnnxQuantConfig` (calibration, per-channel,
            operators); its ``mode`` is ``mode``.
        eval_kwargs: The evaluation protocol (``ks``, ``mask_history``, ``mask_scope``,
            ``ties``) for ONNX modes.
        threads: ONNX Runtime threads for that evaluation.

    Returns:
        Row-wise: a :class:`Result` (the quantized model, its ``step``). ONNX modes: the dict
        report.json's ``export.quantized`` entries are made from (``size_ratio``,
        ``agreement@10``, ``before``/``after`` bytes and metrics on both splits).

    Example:
        >>> q = recshrink.quantize(student, "rowwise-int8").model
        >>> info = recshrink.quantize("out/student.onnx", "dynamic", out="out/student.int8.onnx",
        ...                           data=data)
    """
    if mode in ROWWISE:
        if not isinstance(model, SeqRecModel) and Path(model).suffix == ".onnx":
            raise RecshrinkError(f"{model}: row-wise modes take a model directory")
        m, meta = as_model(model)
        cfg = RowwiseConfig(bits=ROWWISE[mode])
        q = quantize_item_table(copy.deepcopy(m), cfg)
        steps = [*(meta.steps if meta else []), cfg.step()]
        if out is not None:
            if data is not None:
                check_compatible(m, data, str(model))
                save_trained(q, Path(out), data, as_split(data, split, m.max_len), steps,
                             {"parent": str(model)})  # fmt: skip
            elif meta is not None:
                save_model(q, out, item_ids=meta.item_ids, data_fingerprint=meta.data_fingerprint,
                           steps=steps, extra={**meta.extra, "parent": str(model)})  # fmt: skip
            else:
                raise RecshrinkError("quantize: writing a model object needs data= (its item ids)")
        return Result(q, Path(out) if out is not None else None, {"step": cfg.step()}, steps)
    if mode not in ONNX_MODES:
        raise RecshrinkError(f"quantize: unknown mode {mode!r} "
                             f"({', '.join([*ROWWISE, *ONNX_MODES])})")  # fmt: skip
    if out is None or Path(out).suffix != ".onnx":
        raise RecshrinkError(f"{out}: ONNX quantization writes an .onnx file (give out=)")
    if data is None and split is None:
        raise RecshrinkError("quantize: ONNX modes calibrate and measure on data= ")
    cfg = configured(config, OnnxQuantConfig(), {"mode": mode})
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="recshrink-q-") as tmp:
        src = model
        if isinstance(model, SeqRecModel) or Path(model).suffix != ".onnx":
            m, meta = as_model(model)
            check_compatible(m, data, str(model) if meta else "model")
            src = Path(tmp) / "fp32.onnx"
            export_checked(m, src, as_split(data, split, m.max_len),
                           steps=meta.steps if meta else [],
                           item_ids=(meta.item_ids if meta else None) or data.item_ids,
                           popular=(meta.extra.get("popular", []) if meta else []))  # fmt: skip
        src = Path(src)
        sp = split if split is not None else as_split(data, None, int(onnx_metadata(src).get("max_len", 50)))
        res = quantize_file(src, out, cfg, data, sp, eval_kwargs or {}, threads)
        if sidecar_path(src).is_file():
            shutil.copyfile(sidecar_path(src), sidecar_path(out))
    return res


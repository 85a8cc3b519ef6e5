"""The export stage's entry function: ONNX (validated on validation histories), an AOTInductor
package, a TensorRT engine, or a retrieval artifact (user encoder plus item index)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from recshrink.api._common import PathLike, as_model, as_split, popular_items
from recshrink.data.dataset import InteractionData
from recshrink.data.split import Split
from recshrink.errors import RecshrinkError
from recshrink.export.compat import trt_compatibility
from recshrink.export.onnx import OnnxExportConfig, export_onnx, validate_onnx
from recshrink.export.retrieval import RetrievalConfig, export_retrieval
from recshrink.export.runtime import export_aoti, id_map_fingerprint, write_sidecar
from recshrink.export.tensorrt import TensorRTConfig, build_engine, opt_length
from recshrink.models.base import SeqRecModel


def export_checked(
    model: SeqRecModel,
    path: Path,
    split: Split,
    *,
    steps: list[dict],
    item_ids: list[str],
    popular: list[int],
    cfg: OnnxExportConfig | None = None,
) -> dict:
    """Export ``model`` to ONNX, validate it on validation histories, and gate on agreement.

    The file is written under a temporary name; if top-10 agreement with PyTorch is below
    ``cfg.min_agreement`` (or the graph gives NaN/inf) it is removed and the export fails.

    Returns:
        The ``export`` block of report.json.

    Raises:
        RecshrinkError: The exporter failed or agreement is below the threshold.
    """
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
    return {"format": "onnx", "path": str(path), "bytes": path.stat().st_size,
            "export_agreement@10": check.get("agreement@10"),
            "max_abs_diff": check.get("max_abs_diff"),
            "trt_compatible": trt_compatibility(path)["compatible"]}  # fmt: skip


def export(
    model: SeqRecModel | PathLike,
    path: PathLike,
    format: Literal["onnx", "aoti", "tensorrt", "ann"] = "onnx",
    *,
    data: InteractionData | None = None,
    split: Split | None = None,
    config: OnnxExportConfig | TensorRTConfig | RetrievalConfig | None = None,
    item_ids: list[str] | None = None,
    popular: list[int] | None = None,
    steps: list[dict] | None = None,
    device: str = "cpu",
    k: int = 10,
) -> dict:
    """Export a model to a serving artifact that :class:`recshrink.Predictor` and the benchmark
    load.

    Args:
        model: A model or a model directory; for ``"tensorrt"``, an exported ``.onnx`` file.
        path: The file to write (``.onnx``, ``.pt2``, ``.engine``; a directory for ``"ann"``);
            written under a temporary name and renamed when complete.
        format: ``"onnx"`` (validated against PyTorch on validation histories: top-10 agreement
            and finite scores), ``"aoti"`` (AOTInductor package), ``"tensorrt"`` (an engine
            built from the ONNX file; needs the ``tensorrt`` extra and a GPU) or ``"ann"`` (a
            retrieval artifact: the user encoder as ONNX plus a FAISS index of the item table,
            its recall against exact scoring measured on validation users; needs the ``ann``
            extra; :mod:`recshrink.export.retrieval`).
        data: The data set: its validation histories validate the ONNX graph and set the
            TensorRT optimisation length; its item ids and popular items go into the sidecar.
        split: Its leave-one-out split (default: built from ``data``).
        config: :class:`recshrink.export.onnx.OnnxExportConfig` (onnx),
            :class:`recshrink.export.tensorrt.TensorRTConfig` (tensorrt) or
            :class:`recshrink.export.retrieval.RetrievalConfig` (ann; default: the index for
            the catalogue's size).
        item_ids, popular, steps: Override what is read from the model directory or ``data``.
        device: AOTInductor target device.
        k: Items per user in an AOTInductor graph.

    Returns:
        The ``export`` block of report.json (path, bytes, agreement, TensorRT compatibility).

    Example:
        >>> info = recshrink.export(student, "out/student.onnx", data=data)
        >>> info["export_agreement@10"]   # the graph's top-10 against PyTorch's
        1.0
    """
    path = Path(path)
    if format == "tensorrt":
        src = Path(model) if not isinstance(model, SeqRecModel) else None
        if src is None or src.suffix != ".onnx":
            raise RecshrinkError("format tensorrt takes an exported .onnx (export it first)")
        if isinstance(config, TensorRTConfig):
            cfg = config
        elif data is not None or split is not None:  # the profile's length from the histories
            cfg = TensorRTConfig(opt_len=opt_length(as_split(data, split, 50).test.histories))
        else:
            cfg = TensorRTConfig()
        build_engine(src, path, cfg)
        return {"format": "tensorrt", "path": str(path), "bytes": path.stat().st_size,
                "precision": cfg.precision}  # fmt: skip
    m, meta = as_model(model)
    ids = item_ids or (meta.item_ids if meta else None) or (data.item_ids if data else None)
    if not ids:
        raise RecshrinkError("export: no item ids (give data= or a model directory)")
    if popular is None:  # the model directory's, else the data's most popular items
        popular = (meta.extra.get("popular", []) if meta is not None else
                   popular_items(as_split(data, split, m.max_len), data.num_items) if data
                   else [])  # fmt: skip
    steps = steps if steps is not None else (meta.steps if meta else [])
    if format == "aoti":
        export_aoti(m, path, k=k, device=device, item_ids=ids, popular=popular)
        return {"format": "aoti", "path": str(path), "bytes": path.stat().st_size}
    if format not in ("onnx", "ann"):
        raise RecshrinkError(f"export: unknown format {format!r} (onnx, aoti, tensorrt, ann)")
    if data is None and split is None:
        raise RecshrinkError("export: ONNX export is validated on the data's validation "
                             "histories: give data=")  # fmt: skip
    if format == "ann":
        rcfg = config if isinstance(config, RetrievalConfig) else RetrievalConfig()
        hist = as_split(data, split, m.max_len).valid.histories
        return export_retrieval(m, path, histories=hist, item_ids=ids, popular=popular,
                                steps=steps, config=rcfg)  # fmt: skip
    cfg = config if isinstance(config, OnnxExportConfig) else OnnxExportConfig(full_scores=True)
    return export_checked(m, path, as_split(data, split, m.max_len), steps=steps, item_ids=ids,
                          popular=popular, cfg=cfg)  # fmt: skip

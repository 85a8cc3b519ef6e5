"""Quantization: the item table row-wise (INT8 / INT4), exported ONNX graphs through ONNX Runtime.

The item table is the largest tensor of a sequential recommender (12k x 256 floats = 12 MB for
Beauty's teacher, over 90% of a d64 student). :func:`quantize_item_table` swaps it for a
:class:`recshrink.models.quantized.QuantizedEmbedding` (codes plus per-row scales, dequantized
where rows are used); that survives ONNX export, so the exported file shrinks too.
:func:`quantize_onnx` quantizes (or casts to FP16) an exported graph instead.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from recshrink.data.split import trim_padding
from recshrink.errors import RecshrinkError
from recshrink.fsutil import atomic_path
from recshrink.models.base import SeqRecModel
from recshrink.models.quantized import QuantizedEmbedding, rowwise_step


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RowwiseConfig:
    """Row-wise item-table quantization.

    Attributes:
        bits: 8 or 4 bits per weight.
    """

    bits: Literal[8, 4] = 8

    def step(self) -> dict:
        """The step record stored with the model."""
        return rowwise_step(self.bits)


def quantize_item_table(model: SeqRecModel, config: RowwiseConfig | None = None) -> SeqRecModel:
    """Replace the model's item table by a row-wise quantized one (in place; returns the model)."""
    cfg = config or RowwiseConfig()
    if isinstance(model.item_emb, QuantizedEmbedding):
        raise ValueError("the item table is already quantized")
    model.item_emb = QuantizedEmbedding.from_embedding(model.item_emb, cfg.bits)
    return model


# -- ONNX Runtime quantization and FP16 of an exported graph ------------------------------------
@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class OnnxQuantConfig:
    """Quantization of an exported ONNX graph (validated on construction).

    Attributes:
        mode: ``"dynamic"`` INT8 (weights int8, activations quantized at run time; the
            graph is pre-processed by ONNX Runtime first so the scoring MatMul over the item
            table is quantized too, which stores the table a second time, transposed, in int8),
            ``"static"`` INT8 in QDQ format (activations calibrated on real histories; the
            format TensorRT consumes), ``"fp16"`` or ``"bf16"`` weights and compute.
        calibration: Static calibration method: ``"minmax"``, ``"entropy"``, ``"percentile"``.
        per_channel: Per-output-channel weight scales.
        op_types: Operators to quantize. MatMul only by default: quantizing LayerNorm/Softmax
            cost 15% top-20 agreement on SASRec (shared/notes/stack-pitfalls.md).
        calibration_users: Training histories used for static calibration.
        calibration_batch: Histories per calibration batch.
    """

    mode: Literal["dynamic", "static", "fp16", "bf16"] = "dynamic"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = False
    op_types: tuple[str, ...] = ("MatMul",)
    calibration_users: int = Field(512, ge=1)
    calibration_batch: int = Field(64, ge=1)

    def step(self) -> dict:
        """The step record stored in the file's metadata and in report.json."""
        if self.mode in ("fp16", "bf16"):
            return {"type": "quantize", "mode": self.mode}
        rec = {"type": "quantize", "mode": "int8-dynamic" if self.mode == "dynamic" else "int8-qdq",
               "per_channel": self.per_channel, "op_types": list(self.op_types)}  # fmt: skip
        if self.mode == "static":
            rec["calibration"] = self.calibration
        return rec


def _calibration_reader(histories, batch: int, max_len: int):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            h = np.asarray(histories)[:, -max_len:]
            self.batches = [trim_padding(h[i : i + batch], min_len=2).astype(np.int64)
                            for i in range(0, len(h), batch)]  # fmt: skip
            self.pos = 0

        def get_next(self):
            if self.pos >= len(self.batches):
                return None
            self.pos += 1
            return {"seq": self.batches[self.pos - 1]}

        def rewind(self) -> None:
            self.pos = 0

    return _Reader()


def quantize_onnx(src, dst, cfg: OnnxQuantConfig | None = None, histories=None):
    """Quantize (or cast to FP16/BF16) an exported recshrink ONNX file; written atomically.

    Args:
        src: The fp32 ``.onnx`` file from :func:`recshrink.export.onnx.export_onnx`.
        dst: Output file.
        cfg: What to do.
        histories: Left-padded training histories ``[U, L]`` for static calibration.

    Returns:
        The output path. Its ``metadata_props`` keep the source's, with ``steps`` extended.

    Raises:
        RecshrinkError: Static quantization without histories, or ONNX Runtime failed.
    """
    import onnx

    cfg = cfg or OnnxQuantConfig()
    src, dst = Path(src), Path(dst)
    proto = onnx.load(str(src))
    meta = {p.key: p.value for p in proto.metadata_props}
    steps = json.loads(meta.get("steps", "[]")) + [cfg.step()]
    max_len = int(meta.get("max_len", "50"))
    with tempfile.TemporaryDirectory(prefix="recshrink-quant-") as tmp:
        out = Path(tmp) / "q.onnx"
        try:
            if cfg.mode == "dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic
                from onnxruntime.quantization.shape_inference import quant_pre_process

                # ONNX Runtime's pre-processing (its constant folding) first: the scoring
                # MatMul's item table reaches it through a Transpose, and only once folded is
                # it a weight that dynamic quantization turns into int8
                pre = Path(tmp) / "pre.onnx"
                quant_pre_process(src, pre, skip_symbolic_shape=True)
                quantize_dynamic(pre, out, op_types_to_quantize=list(cfg.op_types),
                                 per_channel=cfg.per_channel, weight_type=QuantType.QInt8)  # fmt: skip
            elif cfg.mode == "static":
                from onnxruntime.quantization import (
                    CalibrationMethod, QuantFormat, QuantType, quantize_static,
                )  # fmt: skip

                if histories is None or len(histories) == 0:
                    raise RecshrinkError("static quantization needs calibration histories")
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[cfg.calibration]  # fmt: skip
                reader = _calibration_reader(histories[: cfg.calibration_users],
                                             cfg.calibration_batch, max_len)  # fmt: skip
                quantize_static(src, out, reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(cfg.op_types),
                                per_channel=cfg.per_channel, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, calibrate_method=method,
                                extra_options={"ActivationSymmetric": True,
                                               "CalibTensorRangeSymmetric": True})  # fmt: skip
            else:
                from onnxruntime.transformers.float16 import convert_float_to_float16

                if cfg.mode == "bf16":
                    raise RecshrinkError("bf16 ONNX graphs are not supported by ONNX Runtime's "
                                         "CPU provider; use fp16 or a bf16 PyTorch/TensorRT path")
                model = convert_float_to_float16(
                    onnx.load(str(src)), keep_io_types=True, disable_shape_infer=True,
                    op_block_list=["TopK", "ScatterElements", "Range", "CumSum"],
                )  # fmt: skip
                onnx.save(model, str(out))
        except RecshrinkError:
            raise
        except Exception as exc:  # ORT raises many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RecshrinkError(f"{src}: {cfg.step()['mode']} quantization failed: {first[:300]}") from None
        q = onnx.load(str(out))
        del q.metadata_props[:]
        for k, v in {**meta, "steps": json.dumps(steps)}.items():
            q.metadata_props.add(key=k, value=v)
        with atomic_path(dst) as tmp_dst:
            onnx.save(q, str(tmp_dst))
    return dst

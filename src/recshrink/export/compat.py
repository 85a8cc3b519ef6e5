"""Will TensorRT's ONNX parser take this graph? A check that needs no GPU and no TensorRT.

The rules follow the ONNX-TensorRT operator support matrix (``onnx-tensorrt/docs/operators.md``)
for TensorRT 10: the operator must be a standard ``ai.onnx`` operator the parser imports, and a
few operators carry restrictions that matter for recommenders (TopK's K must be a constant of
at most 3840; integer-quantized weights must reach the network through ``DequantizeLinear`` with a
zero zero-point, because TensorRT treats INT8/INT4 as quantized types only; ONNX Runtime's own
``com.microsoft`` operators and ``MatMulInteger``/``DynamicQuantizeLinear`` (ORT dynamic
quantization) are not importable at all).
"""

from __future__ import annotations

from pathlib import Path

# Standard operators the ONNX-TensorRT parser imports (TensorRT 10.x).
TRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos
Cosh CumSum DFT DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM
MatMul Max MaxPool Mean Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze STFT Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

TOPK_MAX = 3840  # TensorRT's largest K for ITopKLayer
_QUANTIZED = {2, 3, 22}  # uint8, int8, int4 (onnx.TensorProto)


def trt_compatibility(path: str | Path) -> dict:
    """Check every node of an ONNX file against what TensorRT's ONNX parser supports.

    Returns:
        ``{"compatible": bool, "problems": ["node_name (OpType): reason", ...], "ops": [...]}``.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    consts = dict(inits)
    for node in graph.node:  # Constant nodes count as initializers
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    problems: list[str] = []
    for node in graph.node:
        where = f"{node.name or node.output[0]} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: operator of domain {node.domain!r} (ONNX Runtime only)")
            continue
        if node.op_type not in TRT_OPS:
            problems.append(f"{where}: not supported by the ONNX-TensorRT parser")
            continue
        if node.op_type == "TopK":
            k = consts.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                problems.append(f"{where}: K must be a constant")
            elif int(numpy_helper.to_array(k).reshape(-1)[0]) > TOPK_MAX:
                problems.append(f"{where}: K above TensorRT's limit of {TOPK_MAX}")
        if node.op_type in ("DequantizeLinear", "QuantizeLinear") and len(node.input) > 2:
            zp = consts.get(node.input[2])
            if zp is not None and numpy_helper.to_array(zp).any():
                problems.append(f"{where}: zero point must be 0 for TensorRT")
        if node.op_type != "DequantizeLinear":
            for name in node.input:
                t = inits.get(name)
                if t is not None and t.data_type in _QUANTIZED and len(t.dims) >= 2:
                    problems.append(f"{where}: integer weights {name!r} must go through "
                                    "DequantizeLinear (TensorRT treats INT8/INT4 as quantized types)")  # fmt: skip
    return {"compatible": not problems, "problems": problems,
            "ops": sorted({n.op_type for n in graph.node})}  # fmt: skip

"""ONNX operators that TensorRT 10's ONNX parser (onnx-tensorrt) can import.

Source: onnx/onnx-tensorrt, ``docs/operators.md`` ("Supported ONNX Operators", the operator
support matrix; rows marked ``Y``), release 10.15 (opset 9..24), cross-checked against
``docs/Changelog.md`` of the same repository to remove the operators added after TensorRT 10.0.
``TENSORRT10_ONNX_OPS`` is therefore the set any TensorRT 10.x (10.0 GA onward, opset 9..20)
parses; ``TENSORRT10_LATER_OPS`` records operators that need a newer 10.x, with the release
that added them. Restrictions noted in the matrix that we check elsewhere: TopK ``K`` must be a
build-time constant no larger than 3840 and ``sorted`` must be 1; UINT8 only as network I/O.

Pure data: no imports of torch, onnx or tensorrt.
"""

from __future__ import annotations

#: Opset range documented for TensorRT 10.0 ("inclusive range of opset 9 to opset 20").
TENSORRT10_MIN_OPSET = 9
TENSORRT10_MAX_OPSET = 20

#: TensorRT's limit on TopK's K (docs/operators.md: "`K` input must be less than 3840";
#: the ITopKLayer documentation states K <= 3840, which we use as the bound).
TENSORRT_MAX_TOPK = 3840

TENSORRT10_ONNX_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
        "Atanh", "AveragePool",
        "BatchNormalization",
        "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape",
        "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
        "DepthToSpace", "DequantizeLinear", "Div", "Dropout",
        "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike",
        "Flatten", "Floor",
        "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
        "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
        "GroupNormalization", "GRU",
        "HardSigmoid", "HardSwish", "Hardmax",
        "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN",
        "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
        "LRN", "LSTM", "LpNormalization", "LpPool",
        "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod",
        "Mul",
        "Neg", "NonMaxSuppression", "NonZero", "Not",
        "OneHot", "Or",
        "Pad", "ParametricSoftplus", "Pow", "PRelu",
        "QuantizeLinear",
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
        "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
        "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu",
        "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round",
        "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
        "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus",
        "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum",
        "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
        "Unsqueeze", "Upsample",
        "Where",
        "Xor",
    }
)

#: Operators supported only from a later TensorRT 10.x release (docs/Changelog.md).
TENSORRT10_LATER_OPS: dict[str, str] = {
    "DeformConv": "10.1",
    "BlackmanWindow": "10.4",
    "HammingWindow": "10.4",
    "HannWindow": "10.4",
    "STFT": "10.5",
    "Attention": "10.14",
    "RMSNormalization": "10.15",
    "RotaryEmbedding": "10.15",
    "TensorScatter": "10.15",
}

#: ONNX domains the parser treats as the standard operator set.
DEFAULT_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx"})


def is_supported_op(op_type: str, domain: str = "") -> bool:
    """True when ``op_type`` in ``domain`` is importable by every TensorRT 10.x parser."""
    return domain in DEFAULT_DOMAINS and op_type in TENSORRT10_ONNX_OPS


__all__ = [
    "DEFAULT_DOMAINS",
    "TENSORRT10_LATER_OPS",
    "TENSORRT10_MAX_OPSET",
    "TENSORRT10_MIN_OPSET",
    "TENSORRT10_ONNX_OPS",
    "TENSORRT_MAX_TOPK",
    "is_supported_op",
]

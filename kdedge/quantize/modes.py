"""Quantization modes and hardware presets: dynamic int8, static int8 (QDQ), fp16.

A preset picks the integer types the way optimum's AutoQuantizationConfig does for that CPU
family (u8 activations; s8 weights except u8/u8 on AVX2 and AVX-512 without VNNI). The
quantizing itself runs through onnxruntime's quantize_dynamic / quantize_static, so static
calibration can stream batches from a reader and keep its memory bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.environment import cpu_info
from kdedge.errors import KdedgeError

log = logging.getLogger("kdedge")

# (activation type, weight type) per preset, as optimum's AutoQuantizationConfig sets them
PRESET_TYPES = {"arm64": ("uint8", "int8"), "avx2": ("uint8", "uint8"),
                "avx512": ("uint8", "uint8"), "avx512_vnni": ("uint8", "int8")}
# Static QDQ quantizes the ops that carry the weights (and Q K^T, attention x V); calibrating
# only their tensors also skips the attention-mask tensors (-3.4e38) that break histograms.
STATIC_OPS = ("MatMul", "Gemm", "Gather")


def resolve_preset(preset: str) -> str:
    """"auto" picks the best int8 kernel family this CPU has (VNNI decides int8 speed)."""
    if preset != "auto":
        return preset
    info = cpu_info()
    if info["arch"] in ("aarch64", "arm64"):
        return "arm64"
    isa = info["isa"]
    if isa["avx512_vnni"]:
        return "avx512_vnni"
    return "avx512" if isa["avx512f"] else "avx2"


@dataclass(frozen=True)
class QuantSpec:
    """One way to quantize a graph: everything that changes the artifact, and nothing else."""

    mode: str = "dynamic"  # dynamic | static | fp16
    preset: str = "avx512_vnni"
    per_channel: bool = False
    reduce_range: bool = False
    activation_type: str = "uint8"  # int8 | uint8 (static only; dynamic picks uint8 itself)
    weight_type: str = "int8"
    calibration_method: str = "minmax"
    exclude: tuple[str, ...] = field(default=())  # node names kept in float

    def label(self) -> str:
        if self.mode == "fp16":
            return "fp16"
        short = {"int8": "s8", "uint8": "u8"}
        activation = short[self.activation_type] if self.mode == "static" else "u8"
        parts = [self.mode, *([self.calibration_method] if self.mode == "static" else []),
                 f"{activation}/{short[self.weight_type]}"]
        if self.per_channel:
            parts.append("per-channel")
        if self.reduce_range:
            parts.append("reduce-range")
        if self.exclude:
            parts.append(f"{len(self.exclude)} nodes excluded")
        return " ".join(parts)

    def replace(self, **changes: Any) -> QuantSpec:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "exclude": list(self.exclude), "label": self.label()}


def spec_from_config(cfg: Any, preset: str) -> QuantSpec:
    """The QuantSpec a QuantizeConfig asks for; types default to the preset's."""
    activation, weight = PRESET_TYPES[preset]
    return QuantSpec(mode=cfg.mode, preset=preset, per_channel=cfg.per_channel,
                     reduce_range=cfg.reduce_range,
                     activation_type=cfg.activation_type or activation,
                     weight_type=cfg.weight_type or weight,
                     calibration_method=cfg.calibration.method,
                     exclude=tuple(cfg.exclude_nodes))


class TextCalibrationReader:
    """Streams tokenized calibration batches to onnxruntime's calibrator.

    Only one batch is tokenized at a time (and at most one is held ahead): the texts stay
    texts until get_next asks for the next batch, so memory does not grow with the number of
    calibration examples. `window(n)` limits the reader to the next n batches of one shape,
    so the calibrator folds its ranges or histograms in chunks instead of keeping every
    batch's activations (a short last batch gets a window of its own: histogram calibrators
    stack a window's outputs).
    """

    def __init__(self, texts: Sequence[Any], tokenizer: Any, max_length: int, batch_size: int,
                 input_names: Sequence[str]) -> None:
        self.texts, self.tokenizer = texts, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.input_names = set(input_names)
        self.batches_served = 0
        self.max_batch_rows = 0
        self._iter: Iterator[dict[str, np.ndarray]] = self._batches()
        self._pending: dict[str, np.ndarray] | None = None
        self._left: int | None = None
        self._window_rows: int | None = None
        self.exhausted = False

    def __len__(self) -> int:
        return -(-len(self.texts) // self.batch_size)

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from kdedge.evaluate import batches, encode

        for chunk in batches(self.texts, self.batch_size):
            # padded to max_length: histogram calibrators stack a window's batches
            enc = encode(self.tokenizer, chunk, self.max_length, "np", padding="max_length")
            yield {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
                   if k in self.input_names}

    def _peek(self) -> dict[str, np.ndarray] | None:
        if self._pending is None and not self.exhausted:
            self._pending = next(self._iter, None)
            self.exhausted = self._pending is None
        return self._pending

    def has_next(self) -> bool:
        return self._peek() is not None

    def window(self, count: int) -> TextCalibrationReader:
        self._left, self._window_rows = count, None
        return self

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left is not None and self._left <= 0:
            return None
        batch = self._peek()
        if batch is None:
            return None
        rows = len(next(iter(batch.values())))
        if self._left is not None:
            if self._window_rows is not None and rows != self._window_rows:
                return None  # a batch of another shape starts the next window
            self._window_rows = rows
            self._left -= 1
        self._pending = None
        self.batches_served += 1
        self.max_batch_rows = max(self.max_batch_rows, rows)
        return batch


def calibrate(model: Path, reader: TextCalibrationReader, method: str, window: int,
              op_types: Sequence[str] | None = None):
    """Activation ranges from the reader's batches, folded every `window` batches.

    At most `window` batches of intermediate outputs are held at once.
    """
    from onnxruntime.quantization.calibrate import create_calibrator

    # Each collect_data call ends by folding what it holds into the ranges (MinMax) or the
    # histograms (Entropy, Percentile) and clearing it; the reader's window ends each call.
    # (MinMax's own max_intermediate_outputs clears without folding in onnxruntime 1.31.)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kdedge-calib-") as tmp:
        calibrator = create_calibrator(model, op_types, str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_method(method), extra_options=extra)
        while reader.has_next():
            calibrator.collect_data(reader.window(window))
        ranges = calibrator.compute_data()
        del calibrator
    return ranges


class _DropPreprocessHint(logging.Filter):
    """onnxruntime's quantizers warn on the root logger whenever a graph lacks its
    pre-processing metadata; kdedge records whether it pre-processed (quantize.preprocess)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _no_preprocess_hint() -> Iterator[None]:
    root, hint = logging.getLogger(), _DropPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantize_model(source: Path, out: Path, spec: QuantSpec,
                   reader_factory: Any = None, calibration_window: int = 4) -> None:
    """Write `out` (an .onnx file) from the float graph `source` as `spec` says."""
    with _no_preprocess_hint():
        _quantize(source, out, spec, reader_factory, calibration_window)


def _quantize(source: Path, out: Path, spec: QuantSpec, reader_factory: Any,
              calibration_window: int) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if spec.mode == "fp16":
        convert_fp16(source, out)
        return
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    # An ORTOptimizer-fused graph has com.microsoft ops shape inference cannot type; their
    # weights are float (onnxruntime: "Unable to find data type for weight_name ...").
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    try:
        if spec.mode == "dynamic":
            # as optimum's ORTQuantizer: activation x activation MatMuls (QK^T) go int8 too
            quantize_dynamic(source, out, per_channel=spec.per_channel,
                             reduce_range=spec.reduce_range, weight_type=qtype[spec.weight_type],
                             nodes_to_exclude=list(spec.exclude),
                             extra_options={**extra, "MatMulConstBOnly": False,
                                            "WeightSymmetric": True,
                                            "ActivationSymmetric": False})
            return
        if reader_factory is None:
            raise KdedgeError("Static quantization needs calibration texts; set "
                              "quantize.calibration.samples to at least 1.")
        with tempfile.TemporaryDirectory(prefix="kdedge-quant-") as tmp:
            source = typed_graph(source, Path(tmp) / "typed.onnx")
            ranges = calibrate(source, reader_factory(), spec.calibration_method,
                               calibration_window, STATIC_OPS)
            cache = Path(tmp) / "ranges.json"
            save_tensors_data(ranges, cache)
            quantize_static(source, out, calibration_data_reader=None,
                            quant_format=QuantFormat.QDQ, per_channel=spec.per_channel,
                            reduce_range=spec.reduce_range,
                            activation_type=qtype[spec.activation_type],
                            weight_type=qtype[spec.weight_type],
                            nodes_to_exclude=list(spec.exclude),
                            op_types_to_quantize=list(STATIC_OPS),
                            calibrate_method=_method(spec.calibration_method),
                            calibration_cache_path=cache, extra_options=extra)
    except (ValueError, RuntimeError) as err:
        raise KdedgeError(f"onnxruntime could not quantize {source.name} as {spec.label()} "
                          f"({str(err).splitlines()[0][:200]}); try quantize.mode=dynamic or "
                          "quantize.optimization=none.") from None


def typed_graph(source: Path, out: Path) -> Path:
    """A fused graph (com.microsoft ops) with every tensor typed by symbolic shape inference,
    so the calibrator records the tensors behind fused ops too; other graphs as they are."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from kdedge.quantize.graph import working_dir

    model = onnx.load(str(source))
    if not any(node.domain == "com.microsoft" for node in model.graph.node):
        return source
    with working_dir(out.resolve().parent / ".shape-inference"):
        typed = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    onnx.save(typed, str(out))
    return out


def _method(name: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def convert_fp16(source: Path, out: Path) -> None:
    """Float16 weights and math for GPU targets; inputs and outputs stay as they were."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(out))

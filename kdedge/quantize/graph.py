"""Graph work around quantization: optimum's ORTOptimizer, onnxruntime's pre-processing, and
the facts the manifest records about a quantized graph (what became int8, sizes, opset)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE

log = logging.getLogger("kdedge")

LEVELS = ("none", "O1", "O2", "O3", "O4")
# Operators that carry an int8 MatMul in the QOperator format (dynamic quantization)
INT8_MATMUL_OPS = ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
                   "MatMulIntegerToFloat", "QGemm", "QAttention")
DEQUANTIZE = "DequantizeLinear"


def optimize(source_dir: Path, out_dir: Path, level: str) -> Path:
    """optimum's ORTOptimizer at `level` (O1 basic, O2 + transformer fusions, O3 + GELU
    approximation, O4 + fp16 mixed precision for GPUs); returns the optimized .onnx file."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    from kdedge.models import register_auto_classes

    register_auto_classes()  # config.json of a BiRNN student loads too

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=level == "O4")
        ORTOptimizer.from_pretrained(source_dir, file_names=[ONNX_FILE]).optimize(
            optimization_config=config, save_dir=out_dir, file_suffix=None)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise KdedgeError(f"optimum cannot optimize {source_dir} at level {level} "
                          f"({str(err).splitlines()[0][:200]}); set quantize.optimization=none."
                          ) from None
    return out_dir / ONNX_FILE


@contextlib.contextmanager
def working_dir(folder: Path) -> Iterator[None]:
    """Run inside `folder`: onnxruntime's symbolic shape inference saves a partial graph
    (sym_shape_infer_temp.onnx plus its weights) into the current directory when it cannot
    type every tensor, and would leave it wherever the user ran kdedge."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(source: Path, out: Path) -> Path:
    """onnxruntime's quantization pre-processing: symbolic shape inference, graph
    optimization and ONNX shape inference, so the quantizer sees every tensor's type."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with working_dir(out.resolve().parent / ".shape-inference"):
            quant_pre_process(str(source.resolve()), str(out.resolve()), skip_symbolic_shape=False)
    except Exception as err:  # shape inference raises its own untyped errors
        log.warning("  quantization pre-processing failed (%s); quantizing without it",
                    str(err).splitlines()[0][:120])
        shutil.copyfile(source, out)
    return out


def copy_companions(source_dir: Path, out_dir: Path) -> None:
    """Tokenizer and config travel with the model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in source_dir.iterdir():
        if item.is_file() and item.name != ONNX_FILE and not item.name.endswith(".onnx_data") \
                and not (out_dir / item.name).exists():
            shutil.copy2(item, out_dir / item.name)


def op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _load(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def quantized_nodes(model: Any) -> dict[str, int]:
    """How many MatMul / Gemm / Gather nodes compute from int8 data.

    QOperator graphs (dynamic) replace MatMul with integer ops; QDQ graphs (static) keep
    MatMul / Gemm / Gather and feed them from DequantizeLinear nodes. A Gather counts when its
    table is an 8-bit initializer or comes from a DequantizeLinear.
    """
    import onnx

    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    int8_inits = {t.name for t in model.graph.initializer
                  if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    counts = {"matmul": 0, "gemm": 0, "gather": 0, "attention": 0, "float_matmul": 0}
    for node in model.graph.node:
        fed = [producers.get(name) == DEQUANTIZE for name in node.input]
        if node.op_type in INT8_MATMUL_OPS:
            key = {"QGemm": "gemm", "QAttention": "attention"}.get(node.op_type, "matmul")
            counts[key] += 1
        elif node.op_type in ("MatMul", "Gemm"):
            counts[node.op_type.lower() if any(fed) else "float_matmul"] += 1
        elif node.op_type == "Gather" and node.input and (
                node.input[0] in int8_inits or fed[0]):
            counts["gather"] += 1
    return counts


def graph_facts(fp32: Path, quantized: Path, *, optimization: str = "none",
                preprocessed: bool = False, prepared: Path | None = None) -> dict[str, Any]:
    """Counts before and after, sizes and opset, for the manifest and the report.

    Node totals come from `prepared`, the graph that was quantized (fused by the optimizer,
    when there was one), so "11 of 14 MatMuls" compares like with like; bytes_before is the
    exported fp32 file, what the int8 file replaces.
    """
    before_model, after_model = _load(prepared or fp32), _load(quantized)
    before, after = op_counts(before_model), op_counts(after_model)
    done = quantized_nodes(after_model)
    return {
        "matmul_total": before.get("MatMul", 0) + before.get("Gemm", 0)
        + before.get("Attention", 0),
        "matmul_int8": done["matmul"] + done["gemm"] + done["attention"],
        "matmul_fp32_left": done.pop("float_matmul") + after.get("Attention", 0),
        "quantized": done,
        "gather_total": before.get("Gather", 0),
        "rnn_int8": after.get("DynamicQuantizeLSTM", 0),  # a BiLSTM keeps most weights here
        "rnn_fp32_left": after.get("LSTM", 0) + after.get("GRU", 0),  # no int8 GRU kernel
        "bytes_before": fp32.stat().st_size,
        "bytes_after": quantized.stat().st_size,
        "opset": next((o.version for o in after_model.opset_import if o.domain in ("", "ai.onnx")),
                      None),
        "optimization": optimization,
        "preprocessed": preprocessed,
        "op_counts": dict(sorted(after.items())),
    }


def sensitive_nodes(path: Path) -> list[str]:
    """Nodes whose precision matters most: the embedding lookups, the pooler and the
    classifier (the last MatMul / Gemm before the logits)."""
    model = _load(path)
    names = [n.name for n in model.graph.node if n.name and (
        (n.op_type in ("Gather", "EmbedLayerNormalization") and "embed" in n.name.lower())
        or (n.op_type in ("MatMul", "Gemm") and any(k in n.name.lower()
                                                   for k in ("classifier", "pooler"))))]
    last = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name]
    if last and last[-1] not in names:
        names.append(last[-1])
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    # onnxruntime's quantizer first rewrites Gemm as MatMul + Add, naming the MatMul so
    return [*names, *(f"{name}_MatMul" for name in names if name in gemms)]

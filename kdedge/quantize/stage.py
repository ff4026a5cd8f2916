"""Quantize stage: dynamic int8 of the student through optimum's ORTQuantizer.

Records graph facts (how many MatMuls became int8), the size change, and the task metrics
(accuracy, or Pearson for regression) of the int8 model measured through onnxruntime on the
same splits as the fp32 model.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from kdedge.config import QuantizeConfig
from kdedge.data.dataset import load_task
from kdedge.environment import cpu_info
from kdedge.export.stage import onnx_metrics
from kdedge.runtime import ONNX_FILE

log = logging.getLogger("kdedge")

INT8_OPS = ("MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def run(ctx) -> dict[str, Any]:
    cfg: QuantizeConfig = ctx.cfg.quantize
    task = load_task(ctx.input("data"))
    source = ctx.input("export") / "student"
    out = ctx.work / "student-int8"
    preset = resolve_preset(cfg.preset)
    quantize_dynamic(source, out, preset, cfg.per_channel)
    fp32_bytes = (source / ONNX_FILE).stat().st_size
    int8_bytes = (out / ONNX_FILE).stat().st_size
    graph = graph_facts(source / ONNX_FILE, out / ONNX_FILE)
    log.info("  student-int8: %s preset, %d/%d MatMuls int8, %.1f MB -> %.1f MB", preset,
             graph["matmul_int8"], graph["matmul_total"], fp32_bytes / 1e6, int8_bytes / 1e6)
    return {"models": {"student-int8": {
        "path": "student-int8", "source": "student", "mode": cfg.mode, "preset": preset,
        "per_channel": cfg.per_channel, "bytes": int8_bytes, "fp32_bytes": fp32_bytes,
        "graph": graph, **onnx_metrics(out, task, ctx.cfg.data.max_length, ctx.cfg.run.threads),
    }}}


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


def quantize_dynamic(source: Path, out: Path, preset: str, per_channel: bool) -> None:
    """Weights to int8 offline, activations quantized on the fly: no calibration data needed."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    import kdedge.distill.bilstm  # noqa: F401  (ORTQuantizer reads config.json of a BiRNN too)

    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=per_channel)
    quantizer = ORTQuantizer.from_pretrained(source, file_name=ONNX_FILE)
    quantizer.quantize(save_dir=out, quantization_config=qconfig)
    (out / "model_quantized.onnx").replace(out / ONNX_FILE)
    for item in source.iterdir():  # tokenizer and config travel with the model
        if item.is_file() and item.name != ONNX_FILE and not (out / item.name).exists():
            shutil.copy2(item, out / item.name)


def graph_facts(fp32: Path, int8: Path) -> dict[str, Any]:
    import onnx

    def ops(path: Path) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in onnx.load(str(path), load_external_data=False).graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return counts

    before, after = ops(fp32), ops(int8)
    return {
        "matmul_total": before.get("MatMul", 0) + before.get("Gemm", 0),
        "matmul_int8": sum(after.get(op, 0) for op in INT8_OPS),
        "matmul_fp32_left": after.get("MatMul", 0) + after.get("Gemm", 0),
        "rnn_int8": after.get("DynamicQuantizeLSTM", 0),  # a BiLSTM keeps most weights here
        "rnn_fp32_left": after.get("LSTM", 0) + after.get("GRU", 0),  # no int8 GRU kernel
        "op_counts": dict(sorted(after.items())),
    }

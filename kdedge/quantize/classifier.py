"""Quantizing a classifier or regressor: optional graph optimization, then int8 (dynamic, or static QDQ with
calibration) of the student, gated on validation accuracy.

Order: optimum's ORTOptimizer (quantize.optimization), onnxruntime's quantization
pre-processing (quantize.preprocess), then the mode; the accuracy gate (quantize.max_drop)
tries fallbacks when the mode loses too much (see gate.py). Records the graph facts (how many
MatMul / Gemm / Gather nodes became int8, sizes, opset), every attempt, and the task metrics of
the result measured through onnxruntime on the same splits as the fp32 model.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdedge.config import QuantizeConfig
from kdedge.data.dataset import TaskData
from kdedge.environment import cpu_info
from kdedge.evaluate import encode, onnx_quality, shipping_score
from kdedge.export.classifier import onnx_metrics
from kdedge.quantize import gate, graph
from kdedge.quantize.modes import (
    QuantSpec,
    TextCalibrationReader,
    quantize_model,
    resolve_preset,
    spec_from_config,
)
from kdedge.runtime import ONNX_FILE, ort_session

log = logging.getLogger("kdedge")


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The quantize stage for a labelled task: int8 (and fp16 when asked) of the student."""
    cfg: QuantizeConfig = ctx.cfg.quantize
    source = ctx.input("export") / "student"
    max_length = ctx.cfg.data.max_length
    threads = ctx.cfg.bench.threads[0] if ctx.cfg.bench.threads else ctx.cfg.run.threads
    out = ctx.work / "student-int8"
    scratch = ctx.work / ".scratch"
    try:
        entry = quantize_student(source, out, scratch, cfg, task, max_length, threads)
        models = {"student-int8": entry}
        if cfg.fp16:
            models["student-fp16"] = fp16_student(source, ctx.work / "student-fp16", task,
                                                  max_length, threads)
    finally:
        gate.cleanup(scratch)
    gate.enforce(entry["gate"], cfg.strict)
    return {"models": models}


def quantize_student(source: Path, out: Path, scratch: Path, cfg: QuantizeConfig,
                     task: TaskData, max_length: int, threads: int | None,
                     score: Callable[[Path], float] | None = None,
                     measure: Callable[[Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Optimize, quantize and gate the ONNX model in `source`; the result goes to `out`.

    `score` is what the gate compares (a graph's validation primary metric; for the labelled
    kinds the worse of one text per call and batched), `measure` the result's split metrics
    (for the labelled kinds one text per call, the batched figure beside them)."""
    from transformers import AutoTokenizer

    scratch.mkdir(parents=True, exist_ok=True)
    preset = resolve_preset(cfg.preset)
    spec = spec_from_config(cfg, preset)
    fp32 = source / ONNX_FILE
    prepared = prepare_graph(source, scratch, cfg.optimization, cfg.preprocess)
    tokenizer = AutoTokenizer.from_pretrained(source)
    metric = task.primary_metric
    validation = task.splits["validation"]
    score = score or (lambda path: shipping_score(path, tokenizer, task, "validation", max_length,
                                                  threads))
    measure = measure or (lambda path: onnx_quality(path, tokenizer, task, max_length, threads)[0])

    feed = dict(encode(tokenizer, validation.texts[:1], max_length, "np", padding="max_length"))
    calibration_texts = task.splits["train"].texts[:cfg.calibration.samples]
    input_names = [i.name for i in ort_session(prepared).get_inputs()]

    def reader() -> TextCalibrationReader:
        return TextCalibrationReader(calibration_texts, tokenizer, max_length,
                                     cfg.calibration.batch_size, input_names)

    def build(candidate: QuantSpec, path: Path) -> None:
        quantize_model(prepared, path, candidate, reader, cfg.calibration.window)

    fp32_score = score(fp32)
    specs = gate.fallback_specs(spec, graph.sensitive_nodes(prepared))
    result, chosen = gate.run_gate(build, score, lambda p: gate.batch1_latency_ms(p, feed, threads),
                                   specs, fp32_score, cfg.max_drop, metric, scratch)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen, out / ONNX_FILE)
    graph.copy_companions(source, out)
    facts = graph.graph_facts(fp32, out / ONNX_FILE, optimization=cfg.optimization,
                              preprocessed=cfg.preprocess, prepared=prepared)
    int8_bytes, fp32_bytes = facts["bytes_after"], facts["bytes_before"]
    chosen_spec = result.chosen
    log.info("  student-int8: %s, %s preset, %d/%d MatMuls int8, %.1f MB -> %.1f MB%s",
             chosen_spec["label"], preset, facts["matmul_int8"], facts["matmul_total"],
             fp32_bytes / 1e6, int8_bytes / 1e6,
             "" if result.passed is not False else " (accuracy gate FAILED: ships fp32)")
    return {
        "path": "student-int8", "source": "student", "mode": chosen_spec["mode"],
        "preset": preset, "preset_asked": cfg.preset, "isa": cpu_info()["isa"],
        "per_channel": chosen_spec["per_channel"], "reduce_range": chosen_spec["reduce_range"],
        "spec": chosen_spec, "optimization": cfg.optimization, "preprocess": cfg.preprocess,
        "calibration": cfg.calibration.model_dump(mode="json") if chosen_spec["mode"] == "static"
        else None,
        "bytes": int8_bytes, "fp32_bytes": fp32_bytes, "graph": facts,
        "gate": {"passed": result.passed, "metric": metric, "max_drop": cfg.max_drop,
                 "allowed_drop": result.allowed_drop, f"fp32_validation_{metric}": fp32_score,
                 "reason": result.reason, "fallback_used": chosen_spec["step"] != "asked",
                 "attempts": result.attempts},
        **measure(out / ONNX_FILE),
    }


def prepare_graph(source: Path, scratch: Path, optimization: str, preprocess: bool) -> Path:
    """The float graph the quantizer starts from: optimized and / or pre-processed."""
    path = source / ONNX_FILE
    if optimization != "none":
        path = graph.optimize(source, scratch / f"optimized-{optimization}", optimization)
    if preprocess:
        path = graph.preprocess(path, scratch / "preprocessed.onnx")
    return path


def fp16_student(source: Path, out: Path, task: TaskData, max_length: int,
                 threads: int | None) -> dict[str, Any]:
    """student-fp16/: float16 weights for GPU targets, scored here through onnxruntime (CPU)."""
    out.mkdir(parents=True, exist_ok=True)
    quantize_model(source / ONNX_FILE, out / ONNX_FILE, QuantSpec(mode="fp16"))
    graph.copy_companions(source, out)
    size = (out / ONNX_FILE).stat().st_size
    log.info("  student-fp16: %.1f MB", size / 1e6)
    return {"path": "student-fp16", "source": "student", "mode": "fp16", "bytes": size,
            "fp32_bytes": (source / ONNX_FILE).stat().st_size,
            **onnx_metrics(out, task, max_length, threads)}


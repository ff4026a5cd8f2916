"""int8 for generators: every component graph (encoder, decoder, decoder with the cache)
quantized dynamically on its own, then BLEU / ROUGE measured through onnxruntime generation.

The gate compares validation ROUGE-L on a 0-1 scale (so quantize.max_drop 0.01 is one ROUGE-L
point, as it is one accuracy point for a classifier). Static calibration and the fallback chain
are classification-only for now: a generator whose int8 fails the gate ships fp32.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from kdedge.config import DataConfig, QuantizeConfig
from kdedge.data.dataset import TaskData
from kdedge.environment import cpu_info
from kdedge.errors import KdedgeError
from kdedge.export.generation import folder_bytes, generation_scores, load_onnx_generator, onnx_files
from kdedge.quantize import gate, graph
from kdedge.quantize.modes import quantize_model, resolve_preset, spec_from_config

log = logging.getLogger("kdedge")


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The quantize stage for a generation task: int8 of every graph of the student."""
    cfg = ctx.cfg.quantize
    entry = quantize_generator(ctx.input("export") / "student", ctx.work / "student-int8", cfg,
                               task, ctx.cfg.data)
    gate.enforce(entry["gate"], cfg.strict)
    return {"models": {"student-int8": entry}}


def quantize_generator(source: Path, out: Path, cfg: QuantizeConfig, task: TaskData,
                       data: DataConfig) -> dict[str, Any]:
    """Quantize each ONNX graph in `source` into `out` and measure the int8 generator."""
    from transformers import AutoTokenizer

    if cfg.mode != "dynamic":
        raise KdedgeError(f"quantize.mode {cfg.mode} is not available for generation models "
                          "yet; use quantize.mode=dynamic.")
    preset = resolve_preset(cfg.preset)
    spec = spec_from_config(cfg, preset)
    out.mkdir(parents=True, exist_ok=True)
    components = {}
    for name in onnx_files(source):
        quantize_model(source / name, out / name, spec)
        facts = graph.graph_facts(source / name, out / name)
        components[name] = {key: facts[key] for key in
                            ("matmul_total", "matmul_int8", "bytes_before", "bytes_after")}
    for item in source.iterdir():  # config, generation config, tokenizer
        if item.is_file() and item.suffix != ".onnx":
            shutil.copy2(item, out / item.name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    fp32_scores, _ = generation_scores(load_onnx_generator(source, task.kind), tokenizer, task,
                                       data.max_length, data.max_target_length)
    scores, _ = generation_scores(load_onnx_generator(out, task.kind), tokenizer, task,
                                  data.max_length, data.max_target_length)
    fp32_score = fp32_scores["validation"]["rougeL"] / 100
    int8_score = scores["validation"]["rougeL"] / 100
    allowed = gate.allowed_drop(cfg.max_drop, fp32_score)
    passed = None if allowed is None else fp32_score - int8_score <= allowed + 1e-12
    reason = (None if passed is not False else
              f"validation ROUGE-L fell from {100 * fp32_score:.2f} to {100 * int8_score:.2f}, "
              f"more than quantize.max_drop {cfg.max_drop} allows")
    fp32_bytes, int8_bytes = folder_bytes(source), folder_bytes(out)
    log.info("  student-int8: dynamic %s, %s, %.1f MB -> %.1f MB, validation ROUGE-L %.2f -> "
             "%.2f%s", spec.label(), ", ".join(components), fp32_bytes / 1e6, int8_bytes / 1e6,
             100 * fp32_score, 100 * int8_score,
             "" if passed is not False else " (accuracy gate FAILED: ships fp32)")
    return {
        "path": out.name, "source": "student", "mode": "dynamic", "preset": preset,
        "preset_asked": cfg.preset, "isa": cpu_info()["isa"], "per_channel": spec.per_channel,
        "reduce_range": spec.reduce_range, "spec": {"label": spec.label(), "mode": "dynamic"},
        "bytes": int8_bytes, "fp32_bytes": fp32_bytes, "components": components,
        "gate": {"passed": passed, "metric": "rougeL", "max_drop": cfg.max_drop,
                 "allowed_drop": allowed, "fp32_validation_rougeL": 100 * fp32_score,
                 "reason": reason, "fallback_used": False, "attempts": []},
        **scores,
    }

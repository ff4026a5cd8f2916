"""The latency probe: every candidate student, untrained, at its real shapes (layers, widths,
vocabulary), exported, quantized and timed under the bench protocol, before any training.

Latency does not depend on the weights, so a candidate that cannot meet the latency budget is
never trained. Each candidate is one resumable unit: its result is written to
`out/NAME/probe.json` with the settings that made it, and a later probe with the same settings
reads it back instead of measuring again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdedge.artifacts import read_json, write_json
from kdedge.bench.measure import bench_model
from kdedge.bench.stats import latency_at
from kdedge.config import QuantizeConfig
from kdedge.runtime import ONNX_FILE

log = logging.getLogger("kdedge")
RESULT_FILE = "probe.json"
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class ProbeSettings:
    """How every candidate is timed: the bench protocol's settings at batch 1."""

    sequence_length: int
    threads: int
    warmup_runs: int = 10
    min_runs: int = 50
    min_duration_s: float = 5.0
    opset: int = 18
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)

    @classmethod
    def from_config(cls, cfg: Any) -> ProbeSettings:
        """The run's bench protocol (its headline thread count and length) and quantizer."""
        from kdedge.environment import physical_cores

        bench = cfg.bench
        return cls(sequence_length=(bench.sequence_lengths or (cfg.data.max_length,))[0],
                   threads=(bench.threads or (physical_cores(),))[0], warmup_runs=bench.warmup_runs,
                   min_runs=bench.min_runs, min_duration_s=bench.min_duration_s,
                   opset=cfg.export.opset, quantize=cfg.quantize)

    def key(self) -> dict[str, Any]:
        return {**asdict(self), "quantize": self.quantize.model_dump(mode="json")}


@dataclass(frozen=True)
class CandidateSpec:
    name: str  # a folder name
    student: str  # a distill.student spec
    vocabulary: str = "full"  # a distill.vocabulary setting
    precisions: tuple[str, ...] = PRECISIONS  # those it is timed at (the teacher: fp32 alone, as
    # the report compares with it)


def probe(candidates: Sequence[CandidateSpec], teacher_dir: Path, train_texts: Sequence[Any],
          bench_texts: Sequence[Any], out: Path, settings: ProbeSettings) -> dict[str, dict[str, Any]]:
    """Each candidate's parameters, and its batch-1 latency and size at every precision."""
    return {c.name: probe_candidate(c, teacher_dir, train_texts, bench_texts, out / c.name, settings)
            for c in candidates}


def probe_candidate(candidate: CandidateSpec, teacher_dir: Path, train_texts: Sequence[Any],
                    bench_texts: Sequence[Any], out: Path, settings: ProbeSettings) -> dict[str, Any]:
    """Build, export, quantize and time one candidate, or read its earlier result back."""
    key = {"candidate": {**asdict(candidate), "precisions": list(candidate.precisions)},
           "settings": settings.key()}  # as JSON reads it back
    saved = out / RESULT_FILE
    if saved.is_file() and read_json(saved).get("key") == key:
        return read_json(saved)["result"]
    if out.exists():
        shutil.rmtree(out)  # a half-finished or outdated unit starts again
    started = time.perf_counter()
    parameters = save_untrained(candidate, teacher_dir, train_texts, out / "pytorch")
    fp32 = export(out / "pytorch", out / "fp32", settings.opset)
    folders = {"fp32": fp32}
    if "int8" in candidate.precisions:
        folders["int8"] = quantize(fp32, out / "int8", settings.quantize, train_texts,
                                   settings.sequence_length)
    result = {"name": candidate.name, "student": candidate.student, "vocabulary": candidate.vocabulary,
              "parameters": parameters, "sequence_length": settings.sequence_length,
              "threads": settings.threads, "precisions": {}}
    for precision, folder in folders.items():
        row = bench_model(f"{candidate.name}-{precision}", "onnxruntime", folder, bench_texts, [1],
                          [settings.sequence_length], [settings.threads], settings.warmup_runs,
                          settings.min_runs, settings.min_duration_s)
        point = latency_at(row)["1"]
        result["precisions"][precision] = {"p50_ms": point["p50_ms"], "mean_ms": point["mean_ms"],
                                           "size_bytes": row["size_bytes"],
                                           # a shared machine's load says how far to trust the time
                                           "load_average_1m": os.getloadavg()[0]}
        log.info("  probe %s %s: %.2f ms p50, %.1f MB", candidate.name, precision, point["p50_ms"],
                 row["size_bytes"] / 1e6)
    result["seconds"] = round(time.perf_counter() - started, 2)  # what probing it cost
    write_json(saved, {"key": key, "result": result})
    return result


def save_untrained(candidate: CandidateSpec, teacher_dir: Path, train_texts: Sequence[Any],
                   folder: Path) -> int:
    """The candidate as distill would build it (vocabulary included), saved untrained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.models import vocabulary
    from kdedge.models.students import build_student

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    student, _ = build_student(candidate.student, teacher)
    tokenizer, _ = vocabulary.apply(candidate.vocabulary, student, tokenizer, train_texts)
    student.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in student.parameters())


def export(source: Path, out: Path, opset: int) -> Path:
    """The export stage's exporter for this kind of student."""
    from kdedge.export.classifier import export_onnx
    from kdedge.export.torch_export import export_torch_onnx, needs_torch_export

    (export_torch_onnx if needs_torch_export(source) else export_onnx)(source, out, opset)
    return out


def quantize(source: Path, out: Path, cfg: QuantizeConfig, calibration_texts: Sequence[Any],
             max_length: int) -> Path:
    """int8 as the quantize stage asks for it (its mode, preset, graph optimization), without
    the accuracy gate: an untrained model has no accuracy to keep."""
    from transformers import AutoTokenizer

    from kdedge.quantize import graph
    from kdedge.quantize.classifier import prepare_graph
    from kdedge.quantize.modes import (
        TextCalibrationReader,
        quantize_model,
        resolve_preset,
        spec_from_config,
    )
    from kdedge.runtime import ort_session

    scratch = out.parent / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    prepared = prepare_graph(source, scratch, cfg.optimization, cfg.preprocess)
    tokenizer = AutoTokenizer.from_pretrained(source)
    names = [i.name for i in ort_session(prepared).get_inputs()]
    texts = list(calibration_texts[:cfg.calibration.samples])

    def reader() -> TextCalibrationReader:
        return TextCalibrationReader(texts, tokenizer, max_length, cfg.calibration.batch_size, names)

    out.mkdir(parents=True, exist_ok=True)
    quantize_model(prepared, out / ONNX_FILE, spec_from_config(cfg, resolve_preset(cfg.preset)), reader,
                   cfg.calibration.window)
    graph.copy_companions(source, out)
    shutil.rmtree(scratch)
    return out

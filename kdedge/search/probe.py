"""The latency probe: every candidate student, untrained, at its real shapes (layers, widths,
vocabulary), exported, quantized and timed under the bench protocol, before any training.

Latency does not depend on the weights, so a candidate that cannot meet the latency budget is
never trained. Each candidate is one resumable unit: its result is written to
`out/NAME/probe.json` with the settings that made it, and a later probe with the same settings
reads it back instead of measuring again. Building a candidate (`build_candidate`, torch) and
timing its graphs (`time_graph`, onnxruntime only) are separate, so the graphs can be timed on
the target device instead (device.py).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
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
TEACHER = "teacher"  # the teacher's entry among the probed candidates
BENCH_TEXTS = 64  # validation texts the candidates are timed with


@dataclass(frozen=True)
class Timing:
    """How a graph is timed: the bench protocol at batch 1, at one length and thread count."""

    sequence_length: int
    threads: int
    warmup_runs: int = 10
    min_runs: int = 50
    min_duration_s: float = 5.0


@dataclass(frozen=True)
class ProbeSettings(Timing):
    """How every candidate is built (exporter opset, quantizer) and timed."""

    opset: int = 18
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)

    @classmethod
    def from_config(cls, cfg: Any, task: Any, teacher_dir: Path) -> ProbeSettings:
        """The run's bench protocol (its headline thread count and sequence length, which the
        task's texts may set) and quantizer."""
        from kdedge.bench.stage import sequence_lengths
        from kdedge.environment import physical_cores

        bench = cfg.bench
        return cls(sequence_length=sequence_lengths(cfg, task, teacher_dir)[0][0],
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
    precisions: tuple[str, ...] = PRECISIONS  # the graphs built and timed


def candidate_name(spec: str) -> str:
    """A folder and report name for a student spec: "3" -> "cut-3",
    "bilstm:hidden_size=256,..." -> "bilstm-hidden_size-256-...". """
    if spec.replace(",", "").isdigit():
        return "cut-" + spec.replace(",", "-")
    return re.sub(r"[^A-Za-z0-9_]+", "-", spec).strip("-")


def search_candidates(search: Any, teacher_layers: int) -> list[CandidateSpec]:
    """What the search times (a distill.search config): the teacher first, untrained at its own
    shapes and in fp32 (the ONNX model the report compares with), then every configured
    candidate with the search's vocabulary setting, in the configured order."""
    return [CandidateSpec(TEACHER, str(teacher_layers), "full", ("fp32",)),
            *(CandidateSpec(candidate_name(spec), spec, search.vocabulary)
              for spec in search.candidates)]


def probe(candidates: Sequence[CandidateSpec], teacher_dir: Path, train_texts: Sequence[Any],
          bench_texts: Sequence[Any], out: Path, settings: ProbeSettings) -> dict[str, dict[str, Any]]:
    """Each candidate's parameters, and its batch-1 latency and size at every precision."""
    return {c.name: probe_candidate(c, teacher_dir, train_texts, bench_texts, out / c.name, settings)
            for c in candidates}


def probe_candidate(candidate: CandidateSpec, teacher_dir: Path, train_texts: Sequence[Any],
                    bench_texts: Sequence[Any], out: Path, settings: ProbeSettings) -> dict[str, Any]:
    """Build, export, quantize and time one candidate here, or read its earlier result back."""
    key = {"candidate": {**asdict(candidate), "precisions": list(candidate.precisions)},
           "settings": settings.key()}  # as JSON reads it back
    saved = out / RESULT_FILE
    if saved.is_file() and read_json(saved).get("key") == key:
        return read_json(saved)["result"]
    if out.exists():
        shutil.rmtree(out)  # a half-finished or outdated unit starts again
    started = time.perf_counter()
    parameters, folders = build_candidate(candidate, teacher_dir, train_texts, out, settings)
    rows = {precision: time_graph(f"{candidate.name}-{precision}", folder, bench_texts, settings)
            for precision, folder in folders.items()}
    result = candidate_result(candidate, parameters, settings, rows)
    result["seconds"] = round(time.perf_counter() - started, 2)  # what probing it cost here
    write_json(saved, {"key": key, "result": result})
    return result


def build_candidate(candidate: CandidateSpec, teacher_dir: Path, train_texts: Sequence[Any],
                    out: Path, settings: ProbeSettings) -> tuple[int, dict[str, Path]]:
    """The candidate untrained, exported and quantized under `out`: (its parameters,
    {precision: folder holding model.onnx and its tokenizer}). Needs torch."""
    parameters = save_untrained(candidate, teacher_dir, train_texts, out / "pytorch")
    folders = {"fp32": export(out / "pytorch", out / "fp32", settings.opset)}
    if "int8" in candidate.precisions:
        folders["int8"] = quantize(folders["fp32"], out / "int8", settings.quantize, train_texts,
                                   settings.sequence_length)
    shutil.rmtree(out / "pytorch")  # the weights are random: only the graphs are timed
    return parameters, folders


def time_graph(name: str, folder: Path, texts: Sequence[Any], timing: Timing,
               on_step: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """One graph at batch 1 under the bench protocol (bench_model's row), with the machine's
    load while it ran: a shared machine's load says how far to trust the time. Needs no torch,
    so a target device runs it too."""
    row = bench_model(name, "onnxruntime", folder, texts, [1], [timing.sequence_length],
                      [timing.threads], timing.warmup_runs, timing.min_runs, timing.min_duration_s,
                      on_step=on_step)
    row["load_average_1m"] = os.getloadavg()[0]
    point = latency_at(row)["1"]
    log.info("  probe %s: %.2f ms p50, %.1f MB", name, point["p50_ms"], row["size_bytes"] / 1e6)
    return row


def candidate_result(candidate: CandidateSpec, parameters: int | None, timing: Timing,
                     rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A probed candidate as the search reads it, from its graphs' bench rows (timed here or on
    the target device): its batch-1 latency and size at every precision."""
    precisions = {}
    for precision, row in rows.items():
        point = latency_at(row)["1"]
        precisions[precision] = {"p50_ms": point["p50_ms"], "mean_ms": point["mean_ms"],
                                 "size_bytes": row["size_bytes"],
                                 "load_average_1m": row.get("load_average_1m")}
    return {"name": candidate.name, "student": candidate.student,
            "vocabulary": candidate.vocabulary, "parameters": parameters,
            "sequence_length": timing.sequence_length, "threads": timing.threads,
            "precisions": precisions}


def save_untrained(candidate: CandidateSpec, teacher_dir: Path, train_texts: Sequence[Any],
                   folder: Path) -> int:
    """The candidate as distill would build it (vocabulary included), saved untrained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.hf import save_tokenizer
    from kdedge.models import vocabulary
    from kdedge.models.students import build_student

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    student, _ = build_student(candidate.student, teacher)
    tokenizer, _ = vocabulary.apply(candidate.vocabulary, student, tokenizer, train_texts)
    student.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
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

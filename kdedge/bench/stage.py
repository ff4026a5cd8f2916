"""The bench stage: every configured model on every target, same threads, texts and shapes.

Each (model, target) entry is measured in its own spawned process per thread count, over the
grid of sequence lengths and batch sizes. An entry is named after its model on the CPU
(`student-int8`) and `model@target` elsewhere (`student-fp16@cuda`). Writes results.json
(everything, with the raw timings) and returns the same tree without the raw timings as the
manifest's metrics. The targets default to those this machine has; one asked for but absent
here is listed once under "skipped_targets" with the reason. An entry whose folder is missing
or whose process fails is listed under "skipped" with the reason; the others are still measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge.artifacts import write_json
from kdedge.bench.isolate import HWM_SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S
from kdedge.bench.measure import LENGTH_QUANTILE, bench_model, typical_length
from kdedge.bench.runners import (
    RUNTIMES,
    TOKENIZER_FILE,
    missing_files,
    runtime_for,
    split_targets,
)
from kdedge.bench.stats import without_timings
from kdedge.errors import KdedgeError
from kdedge.progress import progress_bar
from kdedge.registry import Registry

if TYPE_CHECKING:
    from kdedge.pipeline import StageContext

log = logging.getLogger("kdedge")

RESULTS_FILE = "results.json"
MAX_TEXTS = 2048  # enough distinct real batches to cycle; keeps the child's payload small
LENGTH_TEXTS = 4096  # evaluation texts the default sequence length is counted on


@dataclass(frozen=True)
class ModelSource:
    """Where a named model lives in a run directory, its framework and where it is worth timing."""

    framework: str  # pytorch | onnxruntime
    stage: str  # the upstream stage directory that holds it
    subdir: str
    # int8 only pays off on CPUs (onnxruntime's CUDA provider does not speed it up), fp16 only
    # on GPUs (a CPU computes it in float32 after casting)
    targets: tuple[str, ...] = ("cpu", "cuda", "tensorrt")
    how_to_make: str = ""  # the setting that writes this model, for a skip reason

    def missing(self, runtime: str, stage_dir: Callable[[str], Path]) -> str | None:
        reason = missing_files(runtime, self.folder(stage_dir))
        return f"{reason} ({self.how_to_make})" if reason and self.how_to_make else reason

    def folder(self, stage_dir: Callable[[str], Path]) -> Path:
        return stage_dir(self.stage) / self.subdir


MODELS: Registry[ModelSource] = Registry("bench model")
MODELS.register("teacher-pytorch")(ModelSource("pytorch", "teacher", "model"))
# distill is not among bench's declared inputs, but export depends on it, so a change there
# still re-runs bench; reading its folder is safe.
MODELS.register("student-pytorch")(ModelSource("pytorch", "distill", "student"))
MODELS.register("teacher-onnx")(ModelSource("onnxruntime", "export", "teacher"))
MODELS.register("student-onnx")(ModelSource("onnxruntime", "export", "student"))
MODELS.register("student-int8")(ModelSource("onnxruntime", "quantize", "student-int8",
                                            targets=("cpu",)))
MODELS.register("student-fp16")(ModelSource("onnxruntime", "quantize", "student-fp16",
                                            targets=("cuda", "tensorrt"),
                                            how_to_make="set quantize.fp16=true to write it"))


def sequence_lengths(run_cfg: Any, task: Any, teacher_dir: Path) -> tuple[list[int], str]:
    """The lengths every model is timed at, and why: bench.sequence_lengths when set, else the
    token count that 95% of the validation and test texts fit in with the teacher's tokenizer
    (what the user's texts cost; the bench and the student search's probe share it), else
    data.max_length when the teacher has no tokenizer.json."""
    cap = run_cfg.data.max_length
    if run_cfg.bench.sequence_lengths:
        return list(run_cfg.bench.sequence_lengths), "bench.sequence_lengths"
    if not (teacher_dir / TOKENIZER_FILE).is_file():
        return [cap], "data.max_length"
    texts = [*task.splits["validation"].texts, *task.splits["test"].texts][:LENGTH_TEXTS]
    length = typical_length(teacher_dir, texts, cap)
    return [length], (f"{LENGTH_QUANTILE:.0%} of the validation and test texts fit; "
                      f"data.max_length {cap}")


def entry_name(model: str, target: str) -> str:
    return model if target == "cpu" else f"{model}@{target}"


def plan(models: Sequence[str], targets: Sequence[str], generation: bool = False,
         ) -> list[tuple[str, ModelSource, str]]:
    """(entry, source, runtime) for every model on every target it is worth timing on; for a
    generation task, the runtimes that generate (a model with none there is left out)."""
    sources = {name: MODELS.get(name) for name in models}  # unknown names fail before work
    entries = []
    for target in targets:
        for name, source in sources.items():
            runtime = runtime_for(source.framework, target, generation)
            if runtime is not None and target in source.targets:
                entries.append((entry_name(name, target), source, runtime))
    return entries


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def run(ctx: StageContext) -> dict[str, Any]:
    """Bench every configured model on every target under one protocol; return the metrics."""
    from kdedge import tasks
    from kdedge.data.dataset import load_task
    from kdedge.environment import physical_cores

    cfg = ctx.cfg.bench
    for name in cfg.models:  # unknown names fail before any work
        MODELS.get(name)
    data = load_task(ctx.input("data"))
    kind = tasks.get(data.kind)
    targets, absent = split_targets(cfg.targets)
    entries = plan([m for m in cfg.models if m not in kind.unbenched], targets, kind.generates)
    threads = list(cfg.threads or (physical_cores(),))
    lengths, basis = sequence_lengths(ctx.cfg, data, MODELS.get("teacher-pytorch").folder(ctx.input))
    texts = list(data.splits["test"].texts[:MAX_TEXTS])
    if not texts:
        raise KdedgeError("The test split is empty, so there are no real texts to bench with; "
                          "raise data.test_fraction or data.max_eval_samples.")
    results = results_header(threads, lengths, cfg, len(texts))
    results["sequence_length_basis"] = basis
    results["targets"] = targets
    results["skipped_targets"] = absent
    for target, reason in absent.items():
        log.warning("bench: target %s skipped (%s)", target, reason)
    steps = len(threads) * len(lengths) * len(cfg.batch_sizes)
    done = 0
    with progress_bar("bench", len(entries) * steps) as progress:
        task = progress.task_ids[0]
        for entry, source, runtime in entries:
            progress.update(task, status=entry)
            folder = source.folder(ctx.input)
            reason = RUNTIMES.get(runtime).unavailable() or source.missing(runtime, ctx.input)
            try:
                if reason is not None:
                    raise KdedgeError(reason)
                row = bench_model(
                    entry, runtime, folder, texts, cfg.batch_sizes, lengths, threads,
                    cfg.warmup_runs, cfg.min_runs, cfg.min_duration_s,
                    on_step=lambda _name, _size: progress.advance(task),
                )
            except KdedgeError as err:
                results["skipped"][entry] = str(err) if reason is None else reason
                log.warning("bench: %s skipped (%s)", entry, results["skipped"][entry])
            else:
                row["path"] = _relative(folder, ctx.run_dir)
                row["target"] = entry.partition("@")[2] or "cpu"
                results["models"][entry] = row
            # a skipped or failed entry still moves the bar by all of its steps
            done += steps
            progress.update(task, completed=done)
    write_json(ctx.work / RESULTS_FILE, results)
    return without_timings(results)


def results_header(threads: Sequence[int], sequence_lengths: Sequence[int], cfg: Any,
                   texts: int) -> dict[str, Any]:
    """The grid and the protocol, shared by the bench stage and `kdedge bench` on a device."""
    return {
        "threads": list(threads),
        "sequence_lengths": list(sequence_lengths),
        "batch_sizes": list(cfg.batch_sizes),
        "texts": texts,
        "protocol": {
            "warmup_runs": cfg.warmup_runs,
            "min_runs": cfg.min_runs,
            "min_duration_s": cfg.min_duration_s,
            "timer": "perf_counter (CUDA targets synchronize before the clock stops)",
            "process_isolation": "spawn, one process per model and thread count",
            "ort_arena": "default",
            "io_binding": "on GPU targets",
            "rss_sample_interval_ms": {"with_kernel_high_water_mark": HWM_SAMPLE_INTERVAL_S * 1000,
                                       "without": SAMPLE_INTERVAL_S * 1000},
        },
        "models": {},
        "skipped": {},
    }

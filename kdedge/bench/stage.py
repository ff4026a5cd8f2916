"""The bench stage: every configured model, same threads, texts and shapes, one process each.

Writes results.json (everything, with the raw timings) and returns the same tree without the
raw timings as the manifest's metrics. A model whose folder is missing or whose process fails
is listed under "skipped" with the reason; the others are still measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge.artifacts import write_json
from kdedge.bench.isolate import SAMPLE_INTERVAL_S
from kdedge.bench.measure import bench_model
from kdedge.bench.runners import missing_files
from kdedge.bench.stats import without_timings
from kdedge.errors import KdedgeError
from kdedge.progress import progress_bar
from kdedge.registry import Registry

if TYPE_CHECKING:
    from kdedge.config import BenchConfig
    from kdedge.pipeline import StageContext

log = logging.getLogger("kdedge")

RESULTS_FILE = "results.json"
MAX_TEXTS = 2048  # enough distinct real batches to cycle; keeps the child's payload small


@dataclass(frozen=True)
class ModelSource:
    """Where a named model lives in a run directory and which runtime executes it."""

    runtime: str
    stage: str  # the upstream stage directory that holds it
    subdir: str

    def folder(self, stage_dir: Callable[[str], Path]) -> Path:
        return stage_dir(self.stage) / self.subdir


MODELS: Registry[ModelSource] = Registry("bench model")
MODELS.register("teacher-pytorch")(ModelSource("pytorch", "teacher", "model"))
# distill is not among bench's declared inputs, but export depends on it, so a change there
# still re-runs bench; reading its folder is safe.
MODELS.register("student-pytorch")(ModelSource("pytorch", "distill", "student"))
MODELS.register("teacher-onnx")(ModelSource("onnxruntime", "export", "teacher"))
MODELS.register("student-onnx")(ModelSource("onnxruntime", "export", "student"))
MODELS.register("student-int8")(ModelSource("onnxruntime", "quantize", "student-int8"))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def new_results(cfg: BenchConfig, threads: int, sequence_length: int, texts: int,
                ) -> dict[str, Any]:
    """The results layout, with no model measured yet: the stage and `kdedge bench FOLDER`
    both fill it, so a target device's file has the same keys as a run's results.json."""
    return {
        "threads": threads,
        "sequence_length": sequence_length,
        "batch_sizes": list(cfg.batch_sizes),
        "texts": texts,
        "protocol": {
            "warmup_runs": cfg.warmup_runs,
            "min_runs": cfg.min_runs,
            "min_duration_s": cfg.min_duration_s,
            "timer": "perf_counter",
            "process_isolation": "spawn",
            "ort_arena": "default",
            "rss_sample_interval_ms": SAMPLE_INTERVAL_S * 1000,
        },
        "models": {},
        "skipped": {},
    }


def run(ctx: StageContext) -> dict[str, Any]:
    """Bench every model in cfg.bench.models under one protocol; return the metrics."""
    from kdedge.data.dataset import load_task
    from kdedge.environment import physical_cores

    cfg = ctx.cfg.bench
    sources = {name: MODELS.get(name) for name in cfg.models}  # unknown names fail before work
    threads = cfg.threads or physical_cores()
    sequence_length = cfg.sequence_length or ctx.cfg.data.max_length
    texts = list(load_task(ctx.input("data")).splits["test"].texts[:MAX_TEXTS])
    if not texts:
        raise KdedgeError("The test split is empty, so there are no real texts to bench with; "
                          "raise data.test_fraction or data.max_eval_samples.")
    results = new_results(cfg, threads, sequence_length, len(texts))
    steps, done = len(cfg.batch_sizes), 0
    with progress_bar("bench", len(sources) * steps) as progress:
        task = progress.task_ids[0]
        for name, source in sources.items():
            progress.update(task, status=name)
            folder = source.folder(ctx.input)
            reason = missing_files(source.runtime, folder)
            try:
                if reason is not None:
                    raise KdedgeError(reason)
                row = bench_model(
                    name, source.runtime, folder, texts, cfg.batch_sizes, sequence_length,
                    threads, cfg.warmup_runs, cfg.min_runs, cfg.min_duration_s,
                    on_step=lambda _name, _size: progress.advance(task),
                )
            except KdedgeError as err:
                results["skipped"][name] = str(err) if reason is None else reason
                log.warning("bench: %s skipped (%s)", name, results["skipped"][name])
            else:
                row["path"] = _relative(folder, ctx.run_dir)
                results["models"][name] = row
            # a skipped or failed model still moves the bar by all of its steps
            done += steps
            progress.update(task, completed=done)
    write_json(ctx.work / RESULTS_FILE, results)
    return without_timings(results)

"""`kdedge bench PATH` on a target device: one ONNX model, no run directory, no torch.

PATH is a deployment bundle (bundle.json), a folder holding model.onnx and tokenizer.json, or a
.onnx file with tokenizer.json beside it. A generator's bundle is timed through its generate.py
(tokens per second and time to the first token, greedy, as the run measured it). The model is
measured by the bench stage's own code (`bench_model`: a spawned process, the same timing loop
and memory watch) and the results file has the stage's layout (threads, sequence_length,
batch_sizes, protocol, models, skipped) plus the `target` it ran on and the machine's
`environment`, so a report can add it as one more target. A bundle's defaults are the run's own
bench settings, so the numbers compare.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdedge.artifacts import read_json, sha256_file, write_json
from kdedge.bench.measure import bench_model
from kdedge.bench.runners import TOKENIZER_FILE
from kdedge.bench.stage import MAX_TEXTS, results_header
from kdedge.bundle.stage import BUNDLE_EXTRAS, BUNDLE_FILE, LABELS_FILE, SAMPLE_TEXTS_FILE
from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE

log = logging.getLogger("kdedge")

DEFAULT_OUTPUT = Path("bench-results.json")
RUNTIME = "onnxruntime"  # onnxruntime's CPU provider: what a runtime-only install runs
GENERATE_RUNTIME = "onnxruntime-generate"  # a generator bundle: generate.py over its graphs
EXECUTION_TARGET = "cpu"
OPTIONS = {"min_duration_s": "--min-duration"}  # config fields whose CLI option is named otherwise


@dataclass(frozen=True)
class Target:
    """What to bench: the model folder, its bundle metadata ({} for a bare model), its name."""

    folder: Path
    meta: dict[str, Any]
    name: str
    pairs: bool  # a sentence-pair model: text files hold "text<TAB>pair" lines

    @property
    def generator(self) -> bool:
        return bool(self.meta.get("generation"))

    @property
    def runtime(self) -> str:
        return GENERATE_RUNTIME if self.generator else RUNTIME

    @property
    def graphs(self) -> list[str]:
        return list(self.meta.get("graphs") or [ONNX_FILE])


def find_target(path: Path) -> Target:
    """Read PATH as a bundle, a model folder or a .onnx file; say what is wrong otherwise."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        folder = path.parent
    elif path.is_dir():
        folder = path
        generator = (read_json(folder / BUNDLE_FILE) if (folder / BUNDLE_FILE).is_file()
                     else {}).get("generation")
        if not generator and not (folder / ONNX_FILE).is_file():
            raise KdedgeError(f"{path} holds no {ONNX_FILE}; pass a bundle folder, a folder with "
                              f"{ONNX_FILE} and {TOKENIZER_FILE}, a .onnx file, or a run directory.")
    else:
        raise KdedgeError(f"{path} is neither a folder nor a .onnx file; pass a bundle folder, a "
                          "model folder, a .onnx file, or a run directory.")
    if not (folder / TOKENIZER_FILE).is_file():
        raise KdedgeError(f"{folder} lacks {TOKENIZER_FILE}; put the model's tokenizer.json "
                          "beside it (optimum's export writes one).")
    meta = read_json(folder / BUNDLE_FILE) if (folder / BUNDLE_FILE).is_file() else {}
    labels = read_json(folder / LABELS_FILE) if (folder / LABELS_FILE).is_file() else {}
    name = meta.get("artifact") or (path.stem if path.is_file() else folder.resolve().name)
    return Target(folder, meta, str(name), len(labels.get("text_columns", [])) == 2)


def read_texts(path: Path, pairs: bool, limit: int = MAX_TEXTS) -> list[Any]:
    """One text per line (blank lines skipped); "text<TAB>pair" for a sentence-pair model."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KdedgeError(f"Cannot read texts from {path} ({err}); pass a UTF-8 file with "
                          "--texts.") from None
    texts: list[Any] = []
    for line in filter(str.strip, lines):
        first, sep, second = line.partition("\t")
        texts.append((first, second) if pairs and sep else line)
    if not texts:
        raise KdedgeError(f"{path} holds no texts; give one text per line with --texts.")
    return texts[:limit]


def default_target() -> str:
    """A name for this machine in a results file: cpu-<hostname>."""
    return f"cpu-{socket.gethostname().split('.')[0] or 'unknown'}"


@contextmanager
def model_folder(path: Path, bundled: bool, graphs: Sequence[str] = ()) -> Iterator[Path]:
    """A folder holding just the model as model.onnx (or a generator's `graphs`) and its
    tokenizer files, so the measured size is the artifact's alone: PATH itself for a plain model
    folder, else links to the model and its files (a bundle's script, card and texts left out;
    an otherwise named .onnx linked as model.onnx)."""
    folder = path if path.is_dir() else path.parent
    model = folder / ONNX_FILE if path.is_dir() else path
    if not bundled and model.name == ONNX_FILE:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="kdedge-bench-") as tmp:
        for item in folder.iterdir():
            if item.is_file() and item.suffix != ".onnx" and item.name not in BUNDLE_EXTRAS:
                os.symlink(item.resolve(), Path(tmp) / item.name)
        for graph in graphs:
            os.symlink((folder / graph).resolve(), Path(tmp) / graph)
        if not graphs:
            os.symlink(model.resolve(), Path(tmp) / ONNX_FILE)
        yield Path(tmp)


def bench_path(path: Path, *, output: Path = DEFAULT_OUTPUT, target: str | None = None,
               batch_sizes: Sequence[int] | None = None,
               sequence_lengths: Sequence[int] | None = None, threads: Sequence[int] | None = None,
               texts_file: Path | None = None, warmup_runs: int | None = None,
               min_runs: int | None = None, min_duration_s: float | None = None) -> dict[str, Any]:
    """Bench one ONNX model under the stage's protocol; write and return the results."""
    from kdedge import environment
    from kdedge.progress import progress_bar

    found = find_target(path)
    cfg = settings(found.meta, batch_sizes, sequence_lengths, threads, warmup_runs, min_runs,
                   min_duration_s)
    if texts_file is None:
        texts_file = found.folder / SAMPLE_TEXTS_FILE
        if not texts_file.is_file():
            raise KdedgeError(f"{found.folder} has no {SAMPLE_TEXTS_FILE}; pass real texts with "
                              "--texts FILE (one per line).")
    texts = read_texts(texts_file, found.pairs)
    counts = list(cfg.threads or (environment.physical_cores(),))
    lengths = list(cfg.sequence_lengths)
    results = results_header(counts, lengths, cfg, len(texts))
    results["targets"] = [EXECUTION_TARGET]
    steps = len(counts) * len(lengths) * len(cfg.batch_sizes)
    graphs = found.graphs if found.generator else []
    with (model_folder(Path(path), bool(found.meta), graphs) as folder,
          progress_bar("bench", steps) as bar):
        row = bench_model(found.name, found.runtime, folder, texts, cfg.batch_sizes, lengths,
                          counts, cfg.warmup_runs, cfg.min_runs, cfg.min_duration_s,
                          on_step=lambda _name, _size: bar.advance(bar.task_ids[0]))
        digests = {graph: sha256_file(folder / graph) for graph in found.graphs}
    row["path"] = str(Path(path).resolve())
    row["target"] = EXECUTION_TARGET
    if found.generator:
        row["graphs_sha256"] = digests  # ties these numbers to these exact graphs
    else:
        row["model_sha256"] = digests[ONNX_FILE]  # ties these numbers to one exact graph
    results["models"][found.name] = row
    results["target"] = target or default_target()
    results["source"] = {key: found.meta.get(key)
                         for key in ("artifact", "precision", "task", "run", "kdedge_version")
                         if key in found.meta}
    results["texts_file"] = str(texts_file)
    results["environment"] = environment.capture()
    write_json(output, results)
    return results


def settings(meta: dict[str, Any], batch_sizes: Sequence[int] | None,
             sequence_lengths: Sequence[int] | None, threads: Sequence[int] | None,
             warmup_runs: int | None, min_runs: int | None, min_duration_s: float | None) -> Any:
    """The bench grid and floors (a BenchConfig): options first, then the bundle's run
    settings, then the defaults. Threads are not taken from the run: the target machine's
    own cores are the default."""
    from pydantic import ValidationError

    from kdedge.config import BenchConfig

    run = meta.get("bench") or {}
    protocol = run.get("protocol") or {}
    max_length = meta.get("max_length")
    chosen = {
        "batch_sizes": batch_sizes or run.get("batch_sizes"),
        "sequence_lengths": (sequence_lengths or run.get("sequence_lengths")
                             or ([max_length] if max_length else None)),
        "threads": threads or None,
        "warmup_runs": _first(warmup_runs, protocol.get("warmup_runs")),
        "min_runs": _first(min_runs, protocol.get("min_runs")),
        "min_duration_s": _first(min_duration_s, protocol.get("min_duration_s")),
    }
    if chosen["sequence_lengths"] is None:
        raise KdedgeError("No sequence length is known for a bare ONNX model; pass "
                          "--sequence-length (the max_length it was trained with).")
    try:
        return BenchConfig(**{k: v for k, v in chosen.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0])
        option = OPTIONS.get(field, "--" + field.replace("_", "-"))
        raise KdedgeError(f"{option} {json.dumps(first.get('input'))} is invalid: "
                          f"{first['msg'].lower()}.") from None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)

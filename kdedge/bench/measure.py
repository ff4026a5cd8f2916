"""Benchmark one model folder: the parent's `bench_model` and the child's `measure_child`.

`bench_model` needs no run directory, so `kdedge bench FOLDER` on a target device can call it
with only onnxruntime, tokenizers, numpy and psutil installed. The child tokenizes with the
`tokenizers` library straight from tokenizer.json (no transformers needed for ONNX), padding and
truncating to exactly the sequence length so every model sees the same shapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.artifacts import dir_bytes
from kdedge.bench.isolate import Reporter, run_watched
from kdedge.bench.runners import RUNTIMES, TOKENIZER_FILE, Batch, missing_files
from kdedge.bench.stats import summarize, timed_runs
from kdedge.errors import KdedgeError

DEFAULT_TIMEOUT_S = 1800.0  # per model: import + load + every batch size
MAX_DISTINCT_BATCHES = 64  # batches cycled per batch size; bounds the prepared inputs' memory
PHASES = ("load", "inference", "teardown")  # announced by the child; "startup" comes first


def _pad_token(folder: Path, tokenizer: Any) -> tuple[str, int]:
    """The pad token the model was trained with (tokenizer.json rarely stores padding)."""
    if tokenizer.padding:
        return tokenizer.padding["pad_token"], int(tokenizer.padding["pad_id"])
    candidates: list[str] = []
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            token = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str):
                candidates.append(token)
    for token in [*candidates, "[PAD]", "<pad>"]:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token, int(token_id)
    return "[PAD]", 0  # no pad token (GPT-2 style): id 0 under a zero attention mask


def encode_texts(folder: Path, texts: Sequence[Any], sequence_length: int) -> Batch:
    """Token arrays [len(texts), sequence_length] (int64) from the folder's tokenizer.json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    pad_token, pad_id = _pad_token(folder, tokenizer)
    tokenizer.enable_truncation(max_length=sequence_length)
    tokenizer.enable_padding(length=sequence_length, pad_id=pad_id, pad_token=pad_token)
    inputs = [tuple(t) if isinstance(t, tuple | list) else t for t in texts]
    encodings = tokenizer.encode_batch(inputs)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def make_batches(encoded: Batch, batch_size: int, limit: int = MAX_DISTINCT_BATCHES,
                 ) -> list[Batch]:
    """Consecutive real batches, wrapping around when there are fewer texts than one batch."""
    count = len(encoded["input_ids"])
    if count == 0:
        raise ValueError("no encoded texts to batch")
    batches = []
    for k in range(max(1, min(limit, math.ceil(count / batch_size)))):
        rows = np.arange(k * batch_size, (k + 1) * batch_size) % count
        batches.append({name: np.ascontiguousarray(arr[rows]) for name, arr in encoded.items()})
    return batches


def measure_child(payload: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    """Runs in the spawned process: import, tokenize, load, time each batch size."""
    folder = Path(payload["folder"])
    threads, seq = payload["threads"], payload["sequence_length"]
    runtime = RUNTIMES.get(payload["runtime"])
    runtime.setup(threads)
    encoded = encode_texts(folder, payload["texts"], seq)
    reporter.phase("load")  # baseline: imports done, inputs ready, no model yet
    model = runtime.load(folder, threads)
    reporter.phase("inference")
    latency = {}
    for batch_size in payload["batch_sizes"]:
        feeds = [model.prepare(b) for b in make_batches(encoded, batch_size)]
        timings = timed_runs(model.run, feeds, payload["warmup_runs"], payload["min_runs"],
                             payload["min_duration_s"])
        latency[str(batch_size)] = summarize(timings, batch_size, seq)
        del feeds
        reporter.event(batch_size)
    reporter.phase("teardown")  # counting parameters may load the graph again: not inference
    return {"latency": latency, "parameters": model.count_parameters(), "runtime_info": model.info}


def bench_model(name: str, runtime: str, folder: Path, texts: Sequence[Any],
                batch_sizes: Sequence[int], sequence_length: int, threads: int,
                warmup_runs: int, min_runs: int, min_duration_s: float, *,
                timeout_s: float = DEFAULT_TIMEOUT_S,
                on_step: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Latency, memory, size and parameters of one model folder, measured in its own process.

    Raises KdedgeError when the folder cannot be benched (missing files, no texts) and its
    subclass ChildFailed when the measuring process crashes or times out.
    """
    folder = Path(folder)
    reason = missing_files(runtime, folder)
    if reason is not None:
        raise KdedgeError(f"Cannot bench {name}: {reason}.")
    if not texts:
        raise KdedgeError(f"Cannot bench {name}: no input texts were given.")
    if not batch_sizes or min(batch_sizes) < 1:
        raise KdedgeError(f"Cannot bench {name}: batch sizes must be at least 1, got "
                          f"{list(batch_sizes)}.")
    payload = {
        "runtime": runtime, "folder": str(folder.resolve()),
        "texts": [tuple(t) if isinstance(t, tuple | list) else str(t) for t in texts],
        "batch_sizes": [int(b) for b in batch_sizes], "sequence_length": int(sequence_length),
        "threads": int(threads), "warmup_runs": int(warmup_runs), "min_runs": int(min_runs),
        "min_duration_s": float(min_duration_s),
    }
    step = None if on_step is None else (lambda batch_size: on_step(name, batch_size))
    watched = run_watched("kdedge.bench.measure:measure_child", payload, timeout_s=timeout_s,
                          on_event=step)
    result = watched.result
    return {
        "runtime": runtime,
        "path": str(folder),
        "size_bytes": dir_bytes(folder),
        "parameters": result["parameters"],
        "memory": {
            "baseline_rss_bytes": watched.boundary_rss.get("load"),
            "load_peak_rss_bytes": watched.peak_rss.get("load"),
            "inference_peak_rss_bytes": watched.peak_rss.get("inference"),
            "peak_source": "sampled+VmHWM" if watched.high_water_mark else "sampled",
            "samples": watched.samples,
        },
        "runtime_info": result["runtime_info"],
        "latency": result["latency"],
    }

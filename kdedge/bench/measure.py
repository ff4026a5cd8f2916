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


def pad_token_of(folder: Path, tokenizer: Any) -> tuple[str, int]:
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


def _encodable(texts: Sequence[Any]) -> list[Any]:
    """Texts as `tokenizers` takes them: a string, or a (text, pair) tuple."""
    return [tuple(t) if isinstance(t, tuple | list) else t for t in texts]


def encode_texts(folder: Path, texts: Sequence[Any], sequence_length: int) -> Batch:
    """Token arrays [len(texts), sequence_length] (int64) from the folder's tokenizer.json."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    pad_token, pad_id = pad_token_of(folder, tokenizer)
    tokenizer.enable_truncation(max_length=sequence_length)
    tokenizer.enable_padding(length=sequence_length, pad_id=pad_id, pad_token=pad_token)
    encodings = tokenizer.encode_batch(_encodable(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


LENGTH_QUANTILE = 0.95  # the default bench length covers this share of the data's texts
LENGTH_STEP = 8  # ... rounded up to a multiple of this


def typical_length(folder: Path, texts: Sequence[Any], cap: int) -> int:
    """The token count that 95% of the texts fit in, rounded up to a multiple of 8, at most cap.

    The bench's default sequence length: a deployed model pads a batch to its longest text (the
    bundle does), so this is what the user's texts cost at batch 1, where data.max_length is
    only the most that any text may cost."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    counts = [len(e.ids) for e in tokenizer.encode_batch(_encodable(texts))]
    if not counts:
        return cap
    quantile = float(np.quantile(counts, LENGTH_QUANTILE, method="higher"))
    return int(min(cap, max(LENGTH_STEP, math.ceil(quantile / LENGTH_STEP) * LENGTH_STEP)))


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
    """Runs in the spawned process: import, tokenize, load, time each (length, batch) point."""
    folder = Path(payload["folder"])
    threads = payload["threads"]
    runtime = RUNTIMES.get(payload["runtime"])
    runtime.setup(threads)
    encoded = {seq: encode_texts(folder, payload["texts"], seq)
               for seq in payload["sequence_lengths"]}
    reporter.phase("load")  # baseline: imports done, inputs ready, no model yet
    model = runtime.load(folder, threads)
    reporter.phase("inference")
    latency = []
    for seq, tokens in encoded.items():
        for batch_size in payload["batch_sizes"]:
            feeds = [model.prepare(b) for b in make_batches(tokens, batch_size)]
            floors = (payload["warmup_runs"], payload["min_runs"], payload["min_duration_s"])
            point = {**summarize(timings_of(model.run, feeds, floors), batch_size, seq),
                     "threads": threads}
            if model.first_token is not None:
                point |= generation_stats(point, timings_of(model.first_token, feeds, floors),
                                          model.new_tokens)
            latency.append(point)
            del feeds
            reporter.event(batch_size)
    reporter.phase("teardown")  # counting parameters may load the graph again: not inference
    return {"latency": latency, "parameters": model.count_parameters(),
            "runtime_info": model.info, "device_peak_bytes": model.device_peak_bytes()}


def timings_of(call: Callable[[Any], object], feeds: list[Any],
               floors: tuple[int, int, float]) -> list[float]:
    warmup_runs, min_runs, min_duration_s = floors
    return timed_runs(call, feeds, warmup_runs, min_runs, min_duration_s)


def generation_stats(point: dict[str, Any], first_token_ms: list[float], new_tokens: int,
                     ) -> dict[str, Any]:
    """Tokens per second of a whole generate call, and the time to its first token."""
    first = summarize(first_token_ms, point["batch_size"], point["sequence_length"])
    mean = point["mean_ms"]
    return {
        "new_tokens": new_tokens,
        "tokens_per_s": round(point["batch_size"] * new_tokens * 1000.0 / mean, 3)
        if mean > 0 else None,
        "time_to_first_token": {k: first[k] for k in
                                ("runs", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "timings_ms")},
    }


def bench_model(name: str, runtime: str, folder: Path, texts: Sequence[Any],
                batch_sizes: Sequence[int], sequence_lengths: Sequence[int],
                threads: Sequence[int], warmup_runs: int, min_runs: int, min_duration_s: float,
                *, timeout_s: float = DEFAULT_TIMEOUT_S,
                on_step: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Latency over the (threads x length x batch) grid, memory, size and parameters of one folder.

    Each thread count gets its own spawned process (a thread pool is fixed when it starts);
    memory is that of the first one, the headline configuration. Raises KdedgeError when the
    folder cannot be benched (missing files, no texts) and its subclass ChildFailed when a
    measuring process crashes or times out.
    """
    folder = Path(folder)
    reason = missing_files(runtime, folder)
    if reason is not None:
        raise KdedgeError(f"Cannot bench {name}: {reason}.")
    if not texts:
        raise KdedgeError(f"Cannot bench {name}: no input texts were given.")
    for label, values in (("batch sizes", batch_sizes), ("sequence lengths", sequence_lengths),
                          ("thread counts", threads)):
        if not values or min(values) < 1:
            raise KdedgeError(f"Cannot bench {name}: {label} must be at least 1, got "
                              f"{list(values)}.")
    payload = {
        "runtime": runtime, "folder": str(folder.resolve()),
        "texts": [tuple(t) if isinstance(t, tuple | list) else str(t) for t in texts],
        "batch_sizes": [int(b) for b in batch_sizes],
        "sequence_lengths": [int(s) for s in sequence_lengths],
        "warmup_runs": int(warmup_runs), "min_runs": int(min_runs),
        "min_duration_s": float(min_duration_s),
    }
    step = None if on_step is None else (lambda batch_size: on_step(name, batch_size))
    processes = [run_watched("kdedge.bench.measure:measure_child",
                             {**payload, "threads": int(count)}, timeout_s=timeout_s,
                             on_event=step)
                 for count in dict.fromkeys(threads)]
    first = processes[0]
    return {
        "runtime": runtime,
        "path": str(folder),
        "size_bytes": dir_bytes(folder),
        "parameters": first.result["parameters"],
        "memory": {
            "threads": int(threads[0]),
            "baseline_rss_bytes": first.boundary_rss.get("load"),
            "load_peak_rss_bytes": first.peak_rss.get("load"),
            "inference_peak_rss_bytes": first.peak_rss.get("inference"),
            "peak_source": "sampled+VmHWM" if first.high_water_mark else "sampled",
            "samples": first.samples,
            "sample_interval_ms": first.interval_s * 1000,
            "device_peak_bytes": first.result["device_peak_bytes"],
        },
        "runtime_info": first.result["runtime_info"],
        "latency": [point for watched in processes for point in watched.result["latency"]],
    }

"""Latency statistics and the timed-run loop: pure functions, so the numbers can be tested exactly.

Percentiles interpolate linearly between order statistics (numpy's default "linear" method), so
p50 of an even count is the mean of the two middle values, as readers expect.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

PERCENTILES = (50, 90, 95, 99)
DIGITS = 6  # ms rounded to the nanosecond: perf_counter's resolution, and shorter JSON


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values, linear between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(timings_ms: Sequence[float], batch_size: int, sequence_length: int,
              ) -> dict[str, Any]:
    """One (model, batch size) row: the distribution, throughput, and the raw timings."""
    if not timings_ms:
        raise ValueError("no timed runs to summarize")
    mean = statistics.fmean(timings_ms)
    row: dict[str, Any] = {
        "batch_size": batch_size,
        "sequence_length": sequence_length,
        "runs": len(timings_ms),
        "mean_ms": round(mean, DIGITS),
    }
    for q in PERCENTILES:
        row[f"p{q}_ms"] = round(percentile(timings_ms, q), DIGITS)
    row["stdev_ms"] = round(statistics.stdev(timings_ms), DIGITS) if len(timings_ms) > 1 else 0.0
    row["min_ms"] = round(min(timings_ms), DIGITS)
    row["max_ms"] = round(max(timings_ms), DIGITS)
    # samples per second while the model runs: batch size over the mean time of one call
    row["throughput_samples_per_s"] = round(batch_size * 1000.0 / mean, 3) if mean > 0 else None
    row["timings_ms"] = [round(t, DIGITS) for t in timings_ms]
    return row


def timed_runs(call: Callable[[Any], object], feeds: Sequence[Any], warmup_runs: int,
               min_runs: int, min_duration_s: float,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Warm up (discarded), then time calls until both floors hold; returns milliseconds.

    The clock brackets only the call, so preparing a feed never counts. Feeds are cycled so
    that consecutive runs see different real batches, not one cached input.
    """
    if not feeds:
        raise ValueError("no batches to run")
    index = 0
    for _ in range(warmup_runs):
        call(feeds[index % len(feeds)])
        index += 1
    timings: list[float] = []
    started = clock()
    while len(timings) < min_runs or clock() - started < min_duration_s:
        feed = feeds[index % len(feeds)]
        t0 = clock()
        call(feed)
        timings.append((clock() - t0) * 1000.0)
        index += 1
    return timings


def latency_at(row: dict[str, Any], sequence_length: int | None = None,
               threads: int | None = None) -> dict[str, dict[str, Any]]:
    """One model's latency points at one sequence length and thread count, keyed by batch size.

    None picks the first length / thread count of the sweep: the headline configuration.
    """
    points = row.get("latency") or []
    if not points:
        return {}
    seq = points[0]["sequence_length"] if sequence_length is None else sequence_length
    count = points[0].get("threads") if threads is None else threads
    return {str(p["batch_size"]): p for p in points
            if p["sequence_length"] == seq and p.get("threads") == count}


def without_timings(data: Any) -> Any:
    """A copy of a results tree without the raw `timings_ms` lists (for the manifest's metrics)."""
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k != "timings_ms"}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data

"""Benchmarking: latency, throughput, memory and size, each model in its own process.

`bench_model` measures one folder without a run directory (for `kdedge bench` on a target
device); `kdedge.bench.stage.run` is the pipeline stage. Runtimes register in `runners.py`.
"""

from kdedge.bench.measure import bench_model
from kdedge.bench.runners import RUNTIMES, guess_runtime

__all__ = ["RUNTIMES", "bench_model", "guess_runtime"]

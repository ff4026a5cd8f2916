"""Cross-check kdedge's latency numbers against a plain onnxruntime loop written here.

    python benchmarks/crosscheck.py --model RUN_DIR/05_quantize/student-int8 [--threads 2]

Times one ONNX model folder (model.onnx + tokenizer.json) at batch 1 two ways, in alternating
rounds so that background load moves both alike:

- kdedge: `kdedge.bench.measure.bench_model`, the bench stage's own path (spawned process,
  warm-up, at least 50 runs and 5 s, p50 from kdedge's statistics);
- plain: an InferenceSession in this process with the same thread budget, inputs tokenized
  here with the `tokenizers` library, a bare `perf_counter` loop and `statistics.median`;
  nothing of kdedge's timing, tokenization or statistics code is used.

Writes benchmarks/results/crosscheck.md. The claim it checks: kdedge's batch-1 p50 agrees with
the plain loop's within 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "crosscheck.md"
TOLERANCE = 0.10


def test_texts(model: Path, limit: int) -> list[str]:
    """Real texts: the run's test split when the model sits in a run directory."""
    import pandas as pd

    for parent in model.resolve().parents:
        split = parent / "01_data" / "test.parquet"
        if split.is_file():
            column = json.loads((split.parent / "labels.json").read_text())["text_columns"][0]
            return [str(t) for t in pd.read_parquet(split)[column].tolist()[:limit]]
    raise SystemExit(f"no 01_data/test.parquet above {model}; pass a model inside a run directory")


def plain_p50_ms(model: Path, texts: list[str], length: int, threads: int, runs: int,
                 seconds: float, warmup: int) -> float:
    """The independent loop: tokenize, pad, run batch 1 over the texts, median of the times."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    config = json.loads((model / "tokenizer_config.json").read_text()) \
        if (model / "tokenizer_config.json").is_file() else {}
    pad = config.get("pad_token", "[PAD]")
    pad = pad["content"] if isinstance(pad, dict) else pad
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=tokenizer.token_to_id(pad) or 0, pad_token=pad)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(model / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feeds = []
    for text in texts:
        enc = tokenizer.encode(text)
        arrays = {"input_ids": enc.ids, "attention_mask": enc.attention_mask,
                  "token_type_ids": enc.type_ids}
        feeds.append({k: np.array([v], dtype=np.int64) for k, v in arrays.items() if k in wanted})
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    times, start, i = [], time.perf_counter(), 0
    while len(times) < runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run(None, feeds[i % len(feeds)])
        times.append((time.perf_counter() - t0) * 1000)
        i += 1
    return statistics.median(times)


def kdedge_p50_ms(model: Path, texts: list[str], length: int, threads: int, runs: int,
                  seconds: float, warmup: int) -> float:
    from kdedge.bench.measure import bench_model
    from kdedge.bench.stats import latency_at

    row = bench_model("crosscheck", "onnxruntime", model, texts, [1], [length], [threads],
                      warmup, runs, seconds)
    return latency_at(row)["1"]["p50_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="an ONNX model folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    texts = test_texts(args.model, 512)
    common = (texts, args.sequence_length, args.threads, args.runs, args.seconds, args.warmup)
    rounds = []
    for _ in range(args.rounds):  # alternate, so a change in load touches both sides
        rounds.append((kdedge_p50_ms(args.model, *common), plain_p50_ms(args.model, *common)))
    kd = statistics.median(r[0] for r in rounds)
    plain = statistics.median(r[1] for r in rounds)
    gap = abs(kd - plain) / plain
    from kdedge.environment import cpu_info

    cpu = cpu_info()
    lines = [
        "# kdedge's latency against a plain onnxruntime loop",
        "",
        f"`python benchmarks/crosscheck.py --model {args.model} --threads {args.threads}` on "
        f"{cpu.get('model')} ({os.cpu_count()} logical cores), batch 1, sequence length "
        f"{args.sequence_length}, {args.threads} threads, {len(texts)} real test texts; each side "
        f"warm-up {args.warmup}, then at least {args.runs} runs and {args.seconds:g} s, "
        f"{args.rounds} alternating rounds. kdedge: `bench_model` (spawned process, its own "
        "tokenization and statistics). Plain: an InferenceSession in the script's process, "
        "`tokenizers` padding, a bare `perf_counter` loop, `statistics.median`.",
        "",
        "| round | kdedge p50 (ms) | plain loop p50 (ms) | kdedge / plain |",
        "|---|---|---|---|",
        *[f"| {i} | {k:.3f} | {p:.3f} | {k / p:.3f} |" for i, (k, p) in enumerate(rounds, 1)],
        f"| median | {kd:.3f} | {plain:.3f} | {kd / plain:.3f} |",
        "",
        f"Gap {gap:.1%} (limit {TOLERANCE:.0%}): "
        f"**{'agrees' if gap <= TOLERANCE else 'DISAGREES'}**.",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    raise SystemExit(0 if gap <= TOLERANCE else 1)


if __name__ == "__main__":
    main()

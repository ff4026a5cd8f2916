"""Lifelong learning on a stream of three tasks: forgetting, LAMOL, and L2KD on the pipeline's path.

    OMP_NUM_THREADS=1 python benchmarks/lifelong.py [--out runs/lifelong] [--only finetune,lamol]

One decoder-only model learns three small text-to-text tasks built offline from the demo data,
one after another (`distill.lifelong`, the run's own data last):

1. lead: a Rotten Tomatoes review -> its first three words (a copy task);
2. sentiment: another Rotten Tomatoes review -> "positive" or "negative" (fresh / rotten);
3. topic: a BBC News headline and first paragraph (`--data demo-news`) -> its topic word
   (business, entertainment, politics, sports, tech).

No pretrained decoder-only model is available offline, so the model is a small GPT-2 built
from a config and trained from scratch (as the unit tests do), with a WordPiece vocabulary
trained on the three tasks' texts: the stream's teachers (one per task, fine-tuned on that task
alone from the same random initialisation) and the lifelong model share that checkpoint. Each
method is the `lifelong` recipe of `kdedge compress --task causal-lm` with other settings:

- finetune: `kd none`, `replay none`: the same model trained on each task in turn (forgetting);
- lamol: `kd none`, `replay generated`: LAMOL, the model's own pseudo-samples replayed;
- l2kd-word / l2kd-seq: `kd word` / `kd seq` with the same replay: L2KD.

One data + teacher run (the topic task's teacher) is shared; each method runs the distill stage,
whose metrics hold every task's test ROUGE-L after every step. The earlier tasks' teachers are
fine-tuned by the first method and found in the teacher cache by the others. Writes
benchmarks/results/lifelong.md.
"""

from __future__ import annotations

import argparse
import bz2
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "lifelong.md"

ROWS = 2000  # rows written for each review task (train is capped below, evaluation too)
TRAIN = 1000  # training rows per task
EVAL = 200  # validation and test rows per task
PROMPT_TOKENS = 32  # data.max_length
TARGET_TOKENS = 8  # data.max_target_length: three words of the lead task fit
VOCAB = 4000  # the WordPiece vocabulary trained on the tasks' texts
MODEL = {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 64}
EPOCHS = 6  # per task, for the lifelong model and for each task's teacher
LEARNING_RATE = 2e-3  # a model trained from scratch
BATCH = 16
SEED = 42

LIFELONG = {"lm_weight": 0.25, "temperature": 2.0, "replay_ratio": 0.2, "replay_top_k": 20}
VARIANTS: dict[str, dict[str, Any]] = {
    "finetune": {"kd": "none", "replay": "none", "multitask_baseline": True},
    "lamol": {"kd": "none", "replay": "generated"},
    "l2kd-word": {"kd": "word", "replay": "generated"},
    "l2kd-seq": {"kd": "seq", "replay": "generated"},
}
LABELS = {"finetune": "fine-tuning in sequence (no replay, no KD)",
          "lamol": "LAMOL (pseudo-sample replay, no KD)",
          "l2kd-word": "L2KD word-level (LAMOL + word-level KD)",
          "l2kd-seq": "L2KD sequence-level (LAMOL + sequence-level KD)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/lifelong"))
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated methods")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from --out")
    args = parser.parse_args()
    if not args.table_only:
        run_all(args.out, args.only.split(","))
    write(args.out)
    print(RESULTS.read_text())


def build_assets(folder: Path) -> dict[str, Path]:
    """The review tasks' CSVs and the from-scratch GPT-2 (config, random weights, a WordPiece
    tokenizer trained on every task's texts), kept in `folder` so a rerun reuses them (and
    finds its teachers in the cache)."""
    import pandas as pd

    from kdedge import demo
    from kdedge.config import DataConfig
    from kdedge.data.loaders import load_tables

    out = {"lead": folder / "lead.csv", "sentiment": folder / "sentiment.csv",
           "model": folder / "gpt2"}
    if (out["model"] / "config.json").is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    with bz2.open(demo.dataset_file(), "rt") as handle:
        reviews = pd.read_csv(handle)
    reviews = reviews[reviews["category"].isin(["fresh", "rotten"])]
    reviews = reviews[reviews["text"].astype(str).str.split().str.len() >= 6]
    reviews = reviews.drop_duplicates("text").sample(frac=1.0, random_state=SEED)
    lead, sentiment = reviews.iloc[:ROWS], reviews.iloc[ROWS:2 * ROWS]
    pd.DataFrame({"text": lead["text"].astype(str),
                  "label": [" ".join(t.split()[:3]) for t in lead["text"].astype(str)]}
                 ).to_csv(out["lead"], index=False)
    pd.DataFrame({"text": sentiment["text"].astype(str),
                  "label": sentiment["category"].map({"fresh": "positive", "rotten": "negative"})}
                 ).to_csv(out["sentiment"], index=False)
    news = pd.concat(load_tables(DataConfig(source="demo-news"))[0].values())
    texts = [*lead["text"].astype(str), *sentiment["text"].astype(str), *news["text"].astype(str)]
    build_model(texts, out["model"])
    return out


def build_model(texts: list[str], folder: Path) -> None:
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast, GPT2Config, GPT2LMHeadModel

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=VOCAB, min_frequency=2,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(folder))  # vocab.txt
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True,
                                  model_max_length=MODEL["n_positions"])
    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.cls_token_id,
                        eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                        **MODEL)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def overrides(assets: dict[str, Path], run_dir: Path, name: str | None) -> dict[str, Any]:
    data = {"task": "causal-lm", "max_length": PROMPT_TOKENS,
            "max_target_length": TARGET_TOKENS, "max_train_samples": TRAIN,
            "max_eval_samples": EVAL}
    training = {"epochs": EPOCHS, "batch_size": BATCH, "learning_rate": LEARNING_RATE,
                "eval_batch_size": 100}
    teacher = {"model": str(assets["model"]), "training": {**training, "patience": None}}
    tasks = [{"name": task, "teacher": teacher,
              "data": {"source": str(assets[task]), **data}} for task in ("lead", "sentiment")]
    out: dict[str, Any] = {
        "run.out": str(run_dir), "run.seed": SEED, "run.threads": 1,
        "data.source": "demo-news", **{f"data.{k}": v for k, v in data.items()},
        "teacher.model": str(assets["model"]), "teacher.training": teacher["training"],
        "distill.recipe": "lifelong", "distill.student": str(MODEL["n_layer"]),
        "distill.training": training,
        "distill.lifelong": {**LIFELONG, "tasks": tasks, "multitask_baseline": False},
    }
    if name is not None:
        out["distill.lifelong"] = {**out["distill.lifelong"], **VARIANTS[name]}
    return out


def run_all(out: Path, names: list[str]) -> None:
    import torch

    from kdedge import pipeline
    from kdedge.config import build_config
    from kdedge_cli.main import _setup_logging

    torch.set_num_threads(1)
    _setup_logging(logging.INFO)
    started = time.perf_counter()
    assets = build_assets(out / "assets")
    base_dir = out / "base"
    base = build_config(overrides=overrides(assets, base_dir, None))
    pipeline.prepare_run(base, base_dir, resume=True, force=False)
    pipeline.run(base, base_dir, resume=True, only=("data", "teacher"))
    kept = out / "timings.json"  # methods run by an earlier invocation keep their times
    timings = json.loads(kept.read_text()) if kept.is_file() else {}
    timings["assets_and_base_s"] = timings.get("assets_and_base_s", 0.0) + (
        time.perf_counter() - started)
    for name in names:
        begun = time.perf_counter()
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(base_dir, run_dir)
        cfg = build_config(overrides=overrides(assets, run_dir, name))
        pipeline.prepare_run(cfg, run_dir, resume=True, force=False)
        pipeline.run(cfg, run_dir, only=("distill",))
        timings[f"{name}_s"] = time.perf_counter() - begun
        write(out)
        kept.write_text(json.dumps(timings, indent=1))
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s")
    kept.write_text(json.dumps(timings, indent=1))


def _distill(run_dir: Path) -> dict[str, Any] | None:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    folder = run_dir / stage_dirname("distill")
    return Manifest.load(folder).metrics if (folder / "manifest.json").is_file() else None


def machine() -> str:
    """The CPU model and the ISA flags that matter for these kernels, from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    return (f"{model}, {os.cpu_count()} logical cores; ISA flags: "
            f"{', '.join(f for f in wanted if f in flags) or 'none of the listed'}")


def write(out: Path) -> None:
    runs = {name: m for name in VARIANTS if (m := _distill(out / name)) is not None}
    if not runs:
        return
    first = next(iter(runs.values()))["lifelong"]
    stream = first["stream"]
    names = {"target": "topic"}
    header = [names.get(t, t) for t in stream]
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    lines = [
        "# Lifelong learning: a stream of three tasks, forgetting and L2KD",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/lifelong.py --out {out}` (one thread: "
        "`run.threads 1` and `torch.set_num_threads(1)`).",
        "",
        f"Machine: {machine()}.",
        "",
        "The stream, in order (the `lifelong` recipe of `kdedge compress --task causal-lm`, "
        "its earlier tasks in `distill.lifelong.tasks`, the run's own data last):",
        "",
        "1. **lead**: a Rotten Tomatoes review -> its first three words (a copy task);",
        "2. **sentiment**: another review (a disjoint set) -> `positive` / `negative`;",
        "3. **topic**: a BBC News headline and first paragraph (`--data demo-news`) -> "
        "`business` / `entertainment` / `politics` / `sports` / `tech`.",
        "",
        f"Sizes: {TRAIN} training rows per task, {EVAL} validation and {EVAL} test rows per task "
        f"(test scores below), prompts cut to {PROMPT_TOKENS} tokens, targets to "
        f"{TARGET_TOKENS}. The model: GPT-2 with {MODEL['n_layer']} layers, width "
        f"{MODEL['n_embd']}, {MODEL['n_head']} heads, a {VOCAB}-piece WordPiece vocabulary "
        "trained on the three tasks' texts, randomly initialised and trained from scratch (no "
        "pretrained decoder-only model is available offline); "
        f"{_parameters(next(iter(runs.values())))} parameters. Every task's teacher is that "
        f"checkpoint fine-tuned on its task alone ({EPOCHS} epochs); the lifelong model starts from the same "
        f"checkpoint and trains {EPOCHS} epochs per task, batch {BATCH}, learning rate "
        f"{LEARNING_RATE:g} (linear warm-up and decay), keeping the epoch with the best mean "
        "validation ROUGE-L over the tasks seen so far. L2KD / LAMOL settings: lambda "
        f"{LIFELONG['lm_weight']}, tau {LIFELONG['temperature']:g}, gamma "
        f"{LIFELONG['replay_ratio']} (replayed rows per new row, split between the earlier "
        f"tasks), top-{LIFELONG['replay_top_k']} sampling. Seed {SEED}, one run per method.",
        "",
        "Score: test ROUGE-L F1 (0-100) of greedy generations, each task behind its own "
        "generation token. For the one-word answers of sentiment and topic it is the share of "
        "exact answers (accuracy); for lead it gives partial credit per word. Chance is about "
        "50 for sentiment and about 20 for topic; a model that answers in another task's format "
        "scores 0.",
        "",
        "| method | after task | replayed rows | " + " | ".join(header) + " | average over "
        "tasks seen |",
        "|---|---|---|" + "---|" * len(header) + "---|",
    ]
    for name, metrics in runs.items():
        life = metrics["lifelong"]
        for step in life["after_step"]:
            seen = stream[:step["step"]]
            scores = step["test_rougeL"]
            cells = [f"{scores[t]:.1f}" if t in seen else f"({scores[t]:.1f})" for t in stream]
            average = sum(scores[t] for t in seen) / len(seen)
            lines.append(f"| {name} | {step['step']} ({names.get(step['task'], step['task'])}) "
                         f"| {step['replayed']} | " + " | ".join(cells) + f" | {average:.1f} |")
    teachers = first["teachers_test_rougeL"]
    lines.append("| each task's teacher (that task alone) | - | - | "
                 + " | ".join(f"{teachers[t]:.1f}" for t in stream)
                 + f" | {sum(teachers.values()) / len(teachers):.1f} |")
    multi = next((m["lifelong"]["multitask_test_rougeL"] for m in runs.values()
                  if m["lifelong"].get("multitask_test_rougeL")), None)
    if multi:
        lines.append("| multitask (every task at once, gold) | - | - | "
                     + " | ".join(f"{multi[t]:.1f}" for t in stream)
                     + f" | {sum(multi.values()) / len(multi):.1f} |")
    lines += ["", "Scores in parentheses are tasks not yet trained (the model has seen their "
              "generation token only as an untrained embedding).", ""]
    forgetting = _forgetting(runs, stream)
    if forgetting:
        lines += ["Forgetting: each earlier task's score right after it was learnt, minus its "
                  "score after the last task (positive = forgotten).", "",
                  "| method | " + " | ".join(names.get(t, t) for t in stream[:-1])
                  + " | mean forgetting | final average |",
                  "|---|" + "---|" * (len(stream) + 1), *forgetting, ""]
    if timings:
        per = ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in timings.items()
                        if k not in ("total_s",))
        lines += [f"Wall time: {timings.get('total_s', 0) / 60:.1f} min in all on one thread "
                  f"({per}; the earlier tasks' teachers are fine-tuned inside the first "
                  "method's distill stage).", ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n" + _reading())


def _parameters(metrics: dict[str, Any]) -> str:
    info = metrics.get("student") or {}
    return f"{info['parameters'] / 1e6:.2f}M" if "parameters" in info else "?"


def _forgetting(runs: dict[str, dict[str, Any]], stream: list[str]) -> list[str]:
    rows = []
    for name, metrics in runs.items():
        steps = metrics["lifelong"]["after_step"]
        if len(steps) < len(stream):
            continue
        drops = [steps[i]["test_rougeL"][t] - steps[-1]["test_rougeL"][t]
                 for i, t in enumerate(stream[:-1])]
        final = sum(steps[-1]["test_rougeL"].values()) / len(stream)
        rows.append(f"| {name} | " + " | ".join(f"{d:+.1f}" for d in drops)
                    + f" | {sum(drops) / len(drops):+.1f} | {final:.1f} |")
    return rows


READING = "## Reading"


def _reading() -> str:
    """The reading of the run, written by hand under its heading in the results file: kept when
    the table is rewritten."""
    if not RESULTS.is_file():
        return ""
    text = RESULTS.read_text()
    return text[text.index(READING):] if READING in text else ""


if __name__ == "__main__":
    main()

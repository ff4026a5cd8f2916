"""Tiny in-process models and data: a random 2-layer BERT (hidden 32) and a toy sentiment set."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "warm", "smart"]
NEGATIVE = ["bad", "awful", "dull", "boring", "weak", "poor", "flat", "messy"]
FILLER = ["the", "movie", "film", "plot", "story", "was", "a", "very", "and", "cast", "is", "it"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER]


def toy_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Sentences whose label is told by one sentiment word among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append({"sentence": " ".join(words), "sentiment": label})
    return rows


def write_tiny_model(folder: Path, layers: int = 2, seed: int = 0, words: list[str] | None = None,
                     ) -> Path:
    """A random BertForSequenceClassification with a real WordPiece tokenizer, saved to folder.

    `words` reorders the vocabulary after the special tokens: another tokenizer, same texts.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB[:5] + (words or VOCAB[5:])) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_encoder(folder: Path, layers: int = 4) -> Path:
    """A random BertModel (no task head), like the demo's sentence encoder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        architectures=["BertModel"])
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    path = tmp_path_factory.mktemp("data") / "toy.csv"
    pd.DataFrame(toy_rows(400)).to_csv(path, index=False)
    return path


USER_CACHE = os.environ.get("KDEDGE_CACHE")  # integration tests reuse the real demo cache


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never touch the user's cache (session-wide, so module fixtures see it too)."""
    saved = os.environ.get("KDEDGE_CACHE")
    os.environ["KDEDGE_CACHE"] = str(tmp_path_factory.getbasetemp() / "kdedge-cache")
    yield
    if saved is None:
        os.environ.pop("KDEDGE_CACHE", None)
    else:
        os.environ["KDEDGE_CACHE"] = saved


@pytest.fixture(scope="session")
def runtime_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtual environment holding only `kdedge[runtime]` (no torch,
    no transformers), as on a target device: python -m venv, then pip install -e REPO[runtime]
    (pip's cache makes it quick)."""
    repo = Path(__file__).resolve().parents[1]
    folder = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "-e",
                    f"{repo}[runtime]"], check=True, timeout=600, env=env)
    return folder / "bin"


@pytest.fixture
def demo_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's cache, where the two demo wheels are fetched once and kept."""
    path = Path(USER_CACHE).expanduser() if USER_CACHE else Path.home() / ".cache" / "kdedge"
    monkeypatch.setenv("KDEDGE_CACHE", str(path))
    return path


# --- the command line, run in-process -----------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            ) -> tuple[int, str, str]:
    """`kdedge ARGS` in this process: exit status, stdout, stderr (no --debug)."""
    import sys

    from kdedge_cli import main as cli_main

    monkeypatch.setattr(sys, "argv", ["kdedge", *args])
    monkeypatch.setitem(cli_main._state, "debug", False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def error_line(stderr: str) -> str:
    """The one error line (progress lines may come before it), and no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


# --- the student search on a target device ---------------------------------------------


def probe_results(path: Path, times: dict[str, dict[str, float]], candidates: list[Any], *,
                  target: str = "edge", sequence_length: int = 32, threads: int = 4) -> Path:
    """A results file as `kdedge bench PROBE_BUNDLE` writes it (the fields the search reads),
    with the given batch-1 p50 per candidate and precision (the mean 10% above it)."""
    specs = {c.name: c for c in candidates}  # probe.CandidateSpec
    import json

    models = {f"{name}-{precision}": {
        "latency": [{"batch_size": 1, "sequence_length": sequence_length, "threads": threads,
                     "p50_ms": ms, "mean_ms": ms * 1.1}],
        "size_bytes": 1000 * len(name), "load_average_1m": 0.5}
        for name, precisions in times.items() for precision, ms in precisions.items()}
    path.write_text(json.dumps({
        "target": target, "threads": [threads], "sequence_lengths": [sequence_length],
        "batch_sizes": [1], "models": models,
        "probe": {"candidates": {name: {
            "student": specs[name].student, "vocabulary": specs[name].vocabulary, "parameters": 7,
            "graphs": {precision: f"{name}-{precision}" for precision in precisions}}
            for name, precisions in times.items()}}}))
    return path

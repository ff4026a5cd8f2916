"""Teacher outputs on the training set, computed once and kept in the user cache.

They do not change while the student trains, so every recipe reads them from here instead of
running the teacher each step. Stored as safetensors (no pickle), keyed by the teacher's
weights, the exact texts and the maximum length.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdedge.data.dataset import TaskSplit
from kdedge.demo import cache_dir
from kdedge.distill.outputs import pool
from kdedge.evaluate import batches, encode

log = logging.getLogger("kdedge")

KEYS = ("logits", "sentence_cls", "sentence_mean")


def cache_file(teacher_weights_sha: list[str], texts: list[Any], max_length: int) -> Path:
    """Keyed by the teacher's weights and the exact texts, so augmented sets cache too."""
    key = hashlib.sha256(repr([sorted(teacher_weights_sha), max_length]).encode())
    for text in texts:
        key.update(repr(text).encode())
    return cache_dir() / "teacher-outputs" / f"{key.hexdigest()[:20]}.safetensors"


def teacher_outputs(path: Path, teacher: Any, tokenizer: Any, split: TaskSplit, max_length: int,
                    batch_size: int = 64) -> tuple[dict[str, torch.Tensor], bool]:
    """{logits, sentence_cls, sentence_mean} for every training example, and whether cached."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        cached = load_file(path)
        if set(KEYS) <= set(cached) and cached["logits"].shape[0] == len(split):
            log.info("  teacher outputs read from the cache")
            return cached, True
    log.info("  computing teacher outputs on %d training examples (once)", len(split))
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in KEYS}
    teacher.eval()
    with torch.inference_mode():
        for chunk in batches(split.texts, batch_size):
            enc = encode(tokenizer, chunk, max_length, "pt")
            out = teacher(**enc, output_hidden_states=True)
            last = out.hidden_states[-1]
            parts["logits"].append(out.logits.float())
            parts["sentence_cls"].append(pool(last, enc["attention_mask"], "cls").float())
            parts["sentence_mean"].append(pool(last, enc["attention_mask"], "mean").float())
    outputs = {key: torch.cat(value).contiguous() for key, value in parts.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(outputs, str(tmp))
    tmp.replace(path)
    return outputs, False


def sequence_cache_file(teacher_weights_sha: list[str], sources: list[str], max_length: int,
                        beams: int, max_new_tokens: int) -> Path:
    """Keyed by the teacher's weights, the exact sources and the decoding settings."""
    key = hashlib.sha256(repr([sorted(teacher_weights_sha), max_length, beams,
                               max_new_tokens]).encode())
    for text in sources:
        key.update(repr(text).encode())
    return cache_dir() / "teacher-sequences" / f"{key.hexdigest()[:20]}.safetensors"


def teacher_sequences(path: Path, generate: Callable[[list[str]], list[list[int]]],
                      sources: list[str], batch_size: int = 16) -> tuple[list[list[int]], bool]:
    """Sequence-level KD targets: `generate` (the teacher's beam search, as target ids) over
    every source, and whether they came from the cache. Stored as one padded id matrix plus
    lengths."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        cached = load_file(path)
        if cached.get("lengths") is not None and len(cached["lengths"]) == len(sources):
            log.info("  teacher sequences read from the cache")
            return [row[:n].tolist() for row, n in zip(cached["ids"], cached["lengths"],
                                                       strict=True)], True
    log.info("  generating teacher sequences for %d sources (once)", len(sources))
    sequences: list[list[int]] = []
    for chunk in batches(sources, batch_size):
        sequences += generate(list(chunk))
    width = max((len(s) for s in sequences), default=0)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"ids": ids.contiguous(), "lengths": lengths}, str(tmp))
    tmp.replace(path)
    return sequences, False

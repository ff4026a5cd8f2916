"""Teacher outputs on the training set, computed once and kept in the user cache.

They do not change while the student trains, so every recipe reads them from here instead of
running the teacher each step. Stored as safetensors (no pickle) in shards of rows, keyed by
the teacher's weights, the exact texts and the maximum length.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from kdedge import parallel
from kdedge.data.dataset import TaskSplit
from kdedge.demo import cache_dir
from kdedge.errors import KdedgeError
from kdedge.evaluate import batches, encode, length_sorted
from kdedge.training.outputs import pool

log = logging.getLogger("kdedge")

KEYS = ("logits", "sentence_cls", "sentence_mean")
POOLINGS = ("cls", "mean")


def layer_keys(layers: Sequence[int]) -> list[str]:
    """The cache's names for teacher layer L's pooled vectors (L counts from the embeddings, 0,
    as the model's hidden_states tuple does)."""
    return [f"layer{layer}_{pooling}" for layer in sorted(set(layers)) for pooling in POOLINGS]
SHARD = "rows-{start:09d}-{stop:09d}.safetensors"  # one block of rows


def cache_folder(teacher_weights_sha: list[str], texts: list[Any], max_length: int,
                 layers: Sequence[int] = ()) -> Path:
    """Keyed by the teacher's weights, the exact texts it reads (its view; augmented sets cache
    too) and the intermediate layers kept."""
    fields = [sorted(teacher_weights_sha), max_length, *([sorted(set(layers))] if layers else [])]
    key = hashlib.sha256(repr(fields).encode())
    for text in texts:
        key.update(repr(text).encode())
    return cache_dir() / "teacher-outputs" / key.hexdigest()[:20]


def teacher_outputs(folder: Path, teacher: Any, tokenizer: Any, split: TaskSplit, max_length: int,
                    batch_size: int = 64, layers: Sequence[int] = (),
                    ) -> tuple[dict[str, torch.Tensor], bool]:
    """{logits, sentence_cls, sentence_mean} for every training example (on the teacher's view
    of it, `split.teacher_view`: under paired views its own column), and whether cached;
    with `layers`, also those teacher layers' pooled vectors (layer_keys), which losses that
    match intermediate layers declare (WeightedSum.teacher_layers).

    Written in shards of rows: with several training processes each computes and writes its
    own block of rows, so the teacher pass is split between them and no process gathers
    outputs it did not compute; every process then reads them all. A cache written by any
    number of processes is read by any other number.
    """
    world = parallel.world()
    keys = [*KEYS, *layer_keys(layers)]
    cached = _read_shards(folder, len(split), keys)
    if cached is not None:
        log.info("  teacher outputs read from the cache")
        return cached, True
    world.barrier()  # every process has looked before the main process clears a partial cache
    if world.is_main:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    world.barrier()
    start, stop = world.block(len(split))
    log.info("  computing teacher outputs on %d training examples (once)", len(split))
    _write_shard(folder, start, _compute(teacher, tokenizer, split.teacher_view[start:stop],
                                         max_length, batch_size, layers))
    world.barrier()
    cached = _read_shards(folder, len(split), keys)
    if cached is None:
        raise KdedgeError(f"The teacher outputs written to {folder} do not cover the "
                          f"{len(split)} training examples; delete that folder and run again.")
    return cached, False


def _compute(teacher: Any, tokenizer: Any, texts: list[Any], max_length: int, batch_size: int,
             layers: Sequence[int] = ()) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in [*KEYS, *layer_keys(layers)]}
    teacher.eval()
    ordered, back = length_sorted(texts)
    with torch.inference_mode():
        for chunk in batches(ordered, batch_size):
            enc = encode(tokenizer, chunk, max_length, "pt")
            out = teacher(**enc, output_hidden_states=True)
            last = out.hidden_states[-1]
            parts["logits"].append(out.logits.float())
            parts["sentence_cls"].append(pool(last, enc["attention_mask"], "cls").float())
            parts["sentence_mean"].append(pool(last, enc["attention_mask"], "mean").float())
            for layer in sorted(set(layers)):
                for pooling in POOLINGS:
                    parts[f"layer{layer}_{pooling}"].append(
                        pool(out.hidden_states[layer], enc["attention_mask"], pooling).float())
    rows = torch.from_numpy(back)  # back in the split's order
    return {key: torch.cat(value)[rows].contiguous() for key, value in parts.items() if value}


def _write_shard(folder: Path, start: int, outputs: dict[str, torch.Tensor]) -> None:
    """Rows [start, start + n) as one safetensors file, named by its rows, written atomically."""
    from safetensors.torch import save_file

    if not outputs:  # a process with no rows (fewer rows than processes)
        return
    stop = start + len(outputs["logits"])
    path = folder / SHARD.format(start=start, stop=stop)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(outputs, str(tmp))
    tmp.replace(path)


def _read_shards(folder: Path, rows: int, keys: Sequence[str] = KEYS,
                 ) -> dict[str, torch.Tensor] | None:
    """The outputs for rows [0, rows) from the shards in `folder`, or None when they are not
    all there (not computed yet, or an interrupted computation)."""
    from safetensors.torch import load_file

    shards = []
    for path in folder.glob("rows-*.safetensors"):
        start, _, stop = path.stem.removeprefix("rows-").partition("-")
        if start.isdigit() and stop.isdigit():
            shards.append((int(start), int(stop), path))
    shards.sort()
    if [s[0] for s in shards] != [0, *[s[1] for s in shards[:-1]]] or \
            (shards[-1][1] if shards else 0) != rows or not rows:
        return None
    parts = [load_file(path) for _, _, path in shards]
    if not all(set(keys) <= set(part) for part in parts):
        return None
    return {key: torch.cat([part[key] for part in parts]) for key in keys}


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
    lengths; with several training processes the main one generates them and the others read
    them."""
    return parallel.world().main_first(lambda: _sequences(path, generate, sources, batch_size))


def _sequences(path: Path, generate: Callable[[list[str]], list[list[int]]], sources: list[str],
               batch_size: int) -> tuple[list[list[int]], bool]:
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

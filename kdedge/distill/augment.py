"""Teacher-labelled augmentation (Gajbhiye et al. 2021), composable with every recipe.

Adds examples the teacher labels: extra unlabelled texts, and masked copies of the training
texts (random word or span masking, as in Kim et al. 2021). The additions are made once, with a
seed, so the teacher's outputs on them are computed once and cached like the rest. They carry
no gold label (`no_gold_label`: IGNORE among class ids, NaN among regression scores): only the
distillation terms learn from them, the gold-label term (ce, mse_gold) skips them.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.config import AugmentConfig
from kdedge.data.dataset import TaskSplit, load_unlabeled
from kdedge.errors import KdedgeError

IGNORE = -100  # the class id of teacher-labelled examples; cross-entropy skips it


def is_scores(labels: np.ndarray) -> bool:
    """Regression labels are float scores, classification labels int class ids (see load_task)."""
    return labels.dtype.kind == "f"


def no_gold_label(labels: np.ndarray) -> float | int:
    """The label of a teacher-labelled row among these labels: NaN among regression scores
    (mse_gold skips it), IGNORE among class ids (ce skips it)."""
    return math.nan if is_scores(labels) else IGNORE


def without_gold(labels: np.ndarray) -> np.ndarray:
    """True for the rows that carry no gold label."""
    return np.isnan(labels) if is_scores(labels) else labels == IGNORE


def mask_words(text: str, rng: random.Random, prob: float, span: int, mask_token: str) -> str:
    """Replace about `prob` of the words with `mask_token`, in spans of up to `span` words."""
    words, out, i = text.split(), [], 0
    while i < len(words):
        if rng.random() < prob / span:
            out.extend([mask_token] * min(span, len(words) - i))
            i += span
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def masked_copies(texts: list[Any], cfg: AugmentConfig, mask_token: str, seed: int) -> list[Any]:
    rng = random.Random(seed)
    copies = []
    for _ in range(cfg.mask_copies):
        for text in texts:
            if isinstance(text, tuple | list):
                copies.append(tuple(mask_words(t, rng, cfg.mask_prob, cfg.mask_span, mask_token)
                                    for t in text))
            else:
                copies.append(mask_words(text, rng, cfg.mask_prob, cfg.mask_span, mask_token))
    return copies


def unlabeled_texts(cfg: AugmentConfig, data_dir: Path, seed: int) -> list[Any]:
    """The unlabelled pool: the data stage's leftover train rows ("unused") or a file's column."""
    if cfg.unlabeled is None:
        return []
    if cfg.unlabeled == "unused":
        texts = load_unlabeled(data_dir)
    else:
        from kdedge.data.loaders import read_file

        path = Path(cfg.unlabeled).expanduser()
        if not path.is_file():
            raise KdedgeError(f"Unlabelled data {cfg.unlabeled!r} does not exist; set "
                              "distill.augment.unlabeled to a file, or to 'unused'.")
        table = read_file(path)
        if cfg.text_column not in table.columns:
            raise KdedgeError(f"Column {cfg.text_column!r} is not in {path}; available columns: "
                              f"{', '.join(map(str, table.columns))}. Set distill.augment.text_column.")
        texts = table[cfg.text_column].dropna().astype(str).tolist()
    if cfg.max_unlabeled is not None and len(texts) > cfg.max_unlabeled:
        texts = random.Random(seed).sample(texts, cfg.max_unlabeled)
    return texts


def augmented(train: TaskSplit, cfg: AugmentConfig, data_dir: Path, mask_token: str | None,
              seed: int) -> TaskSplit:
    """The training split plus the teacher-labelled additions (no gold label)."""
    confidence_filter_applies(train.labels, cfg.min_confidence)
    added = unlabeled_texts(cfg, data_dir, seed)
    if cfg.mask_copies:
        if mask_token is None:
            raise KdedgeError("The teacher's tokenizer has no mask token; set "
                              "distill.augment.mask_copies to 0.")
        added += masked_copies(train.texts, cfg, mask_token, seed)
    marker = np.full(len(added), no_gold_label(train.labels), dtype=train.labels.dtype)
    labels = np.concatenate([train.labels, marker])
    return TaskSplit(list(train.texts) + added, labels)


def count_added(split: TaskSplit) -> int:
    return int(without_gold(split.labels).sum())


def keep_confident(split: TaskSplit, cached: dict[str, Any], min_confidence: float | None,
                   ) -> tuple[TaskSplit, dict[str, Any]]:
    """The split and its cached teacher outputs without the added rows the teacher is unsure of."""
    import torch

    keep = confident(split.labels, cached["logits"], min_confidence)
    index = torch.as_tensor(keep)
    return (TaskSplit([split.texts[i] for i in keep], split.labels[keep]),
            {key: value[index] for key, value in cached.items()})


def confident(labels: np.ndarray, teacher_logits: Any, min_confidence: float | None) -> np.ndarray:
    """Row indices to keep: every gold row, and added rows the teacher is sure enough about."""
    if not confidence_filter_applies(labels, min_confidence):
        return np.arange(len(labels))
    import torch

    top = torch.softmax(teacher_logits.float(), dim=-1).max(-1).values.numpy()
    return np.flatnonzero(~without_gold(labels) | (top >= min_confidence))


def confidence_filter_applies(labels: np.ndarray, min_confidence: float | None) -> bool:
    """Whether to filter by the teacher's top class probability; a regression score has none."""
    if min_confidence is not None and is_scores(labels):
        raise KdedgeError(f"distill.augment.min_confidence {min_confidence} filters by the teacher's "
                          "top class probability, which a regression task does not have; unset it.")
    return min_confidence is not None

"""Teacher-labelled augmentation (Gajbhiye et al. 2021), composable with every recipe.

Adds examples the teacher labels: extra unlabelled texts (for a sentence-pair task, pairs read
from two columns), and masked copies of the training texts (random word or span masking, as in
Kim et al. 2021). Added rows the teacher is unsure of can be dropped: by its top class
probability, or for regression by the spread of its score under Monte Carlo dropout (the paper
keeps confident teacher labels; its exact criterion is not published). The additions are made once, with a
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


def unlabeled_texts(cfg: AugmentConfig, data_dir: Path, seed: int, pairs: bool = False,
                    teacher_column: str | None = None, paired: bool = False,
                    ) -> tuple[list[Any], list[Any] | None]:
    """The unlabelled pool: the data stage's leftover train rows ("unused") or a file's column,
    or for a sentence-pair task (`pairs`) the file's two columns as (text, pair) tuples. With
    `paired` views also the teacher's view of each (None otherwise): the leftover rows' own,
    or the file's column `teacher_column` (distill.augment.teacher_column, else the data's)."""
    if cfg.unlabeled is None:
        return [], [] if paired else None
    if cfg.unlabeled == "unused":
        texts = load_unlabeled(data_dir)
        teacher = load_unlabeled(data_dir, "teacher") if paired else None
    else:
        texts, teacher = _file_texts(cfg, pairs, (cfg.teacher_column or teacher_column or "")
                                     if paired else None)
    if cfg.max_unlabeled is not None and len(texts) > cfg.max_unlabeled:
        rows = random.Random(seed).sample(range(len(texts)), cfg.max_unlabeled)
        texts = [texts[i] for i in rows]
        teacher = None if teacher is None else [teacher[i] for i in rows]
    return texts, teacher


def _file_texts(cfg: AugmentConfig, pairs: bool, teacher_column: str | None,
                ) -> tuple[list[Any], list[Any] | None]:
    """The file's texts and, when `teacher_column` is given (paired views; "" when unnamed),
    the teacher's view of each from that column (with the same pair)."""
    from kdedge.data.loaders import read_file

    path = Path(str(cfg.unlabeled)).expanduser()
    if not path.is_file():
        raise KdedgeError(f"Unlabelled data {cfg.unlabeled!r} does not exist; set "
                          "distill.augment.unlabeled to a file, or to 'unused'.")
    if pairs and cfg.pair_column is None:
        raise KdedgeError(f"This task reads sentence pairs but distill.augment.unlabeled {path} "
                          "gives single texts; name the file's second text column with "
                          "distill.augment.pair_column.")
    if not pairs and cfg.pair_column is not None:
        raise KdedgeError(f"distill.augment.pair_column {cfg.pair_column!r} reads sentence pairs "
                          "but this task reads single texts; unset it.")
    if teacher_column == "":
        raise KdedgeError(f"Under paired views the teacher reads its own view of every text, but "
                          f"distill.augment.unlabeled {path} names no column of it; name it with "
                          "distill.augment.teacher_column.")
    table = read_file(path)
    columns = [cfg.text_column, *[cfg.pair_column][:cfg.pair_column is not None],
               *[teacher_column][:teacher_column is not None]]
    for column in columns:
        if column not in table.columns:
            setting = {cfg.pair_column: "pair_column", cfg.text_column: "text_column"}.get(
                column, "teacher_column")
            teacher = (" (the teacher's view under paired views: data.teacher_text_column)"
                       if setting == "teacher_column" else "")
            raise KdedgeError(f"Column {column!r}{teacher} is not in {path}; available columns: "
                              f"{', '.join(map(str, table.columns))}. Set distill.augment.{setting}.")
    rows = table[columns].dropna().astype(str)
    pair = [] if cfg.pair_column is None else rows[cfg.pair_column].tolist()

    def texts(column: str) -> list[Any]:
        values = rows[column].tolist()
        return list(zip(values, pair, strict=True)) if pair else values

    return texts(cfg.text_column), None if teacher_column is None else texts(teacher_column)


def augmented(train: TaskSplit, cfg: AugmentConfig, data_dir: Path, mask_token: str | None,
              seed: int, teacher_column: str | None = None) -> TaskSplit:
    """The training split plus the teacher-labelled additions (no gold label). Under paired
    views (`train.teacher_texts`) each addition has the teacher's view too: an unlabelled row's
    own (`teacher_column`: data.teacher_text_column), and for a masked copy the teacher's view of
    its row, unmasked (the teacher reads the clean text, as in two-stage's span masking)."""
    confidence_filter_applies(train.labels, cfg.min_confidence)
    spread_filter_applies(train.labels, cfg.max_score_std)
    pairs = bool(train.texts) and isinstance(train.texts[0], tuple | list)
    paired = train.teacher_texts is not None
    added, added_teacher = unlabeled_texts(cfg, data_dir, seed, pairs, teacher_column, paired)
    if cfg.mask_copies:
        if mask_token is None:
            raise KdedgeError("The teacher's tokenizer has no mask token; set "
                              "distill.augment.mask_copies to 0.")
        added += masked_copies(train.texts, cfg, mask_token, seed)
        if added_teacher is not None:
            added_teacher += list(train.teacher_view) * cfg.mask_copies
    marker = np.full(len(added), no_gold_label(train.labels), dtype=train.labels.dtype)
    labels = np.concatenate([train.labels, marker])
    return TaskSplit(list(train.texts) + added, labels, teacher_texts=None if added_teacher is None
                     else list(train.teacher_view) + added_teacher)


def count_added(split: TaskSplit) -> int:
    return int(without_gold(split.labels).sum())


def keep_confident(split: TaskSplit, cached: dict[str, Any], cfg: AugmentConfig,
                   teacher: Any = None, tokenizer: Any = None, max_length: int = 128, seed: int = 0,
                   ) -> tuple[TaskSplit, dict[str, Any]]:
    """The split and its cached teacher outputs without the added rows the teacher is unsure
    of: by its top class probability (min_confidence) or, for scores, by how much its score
    moves under dropout (max_score_std; needs the teacher and its tokenizer)."""
    import torch

    keep = confident(split.labels, cached["logits"], cfg.min_confidence)
    if spread_filter_applies(split.labels, cfg.max_score_std):
        added = np.flatnonzero(without_gold(split.labels))
        spread = np.zeros(len(split.labels))
        spread[added] = score_spread(teacher, tokenizer, [split.teacher_view[i] for i in added],
                                     max_length, cfg.mc_samples, seed)
        keep = np.intersect1d(keep, np.flatnonzero(spread <= cfg.max_score_std))
    index = torch.as_tensor(keep)
    teacher_texts = None if split.teacher_texts is None else [split.teacher_texts[i] for i in keep]
    return (TaskSplit([split.texts[i] for i in keep], split.labels[keep],
                      teacher_texts=teacher_texts),
            {key: value[index] for key, value in cached.items()})


def score_spread(teacher: Any, tokenizer: Any, texts: list[Any], max_length: int, samples: int,
                 seed: int, batch_size: int = 64) -> np.ndarray:
    """Per text, the standard deviation of the teacher's score over `samples` forward passes
    with dropout on (Monte Carlo dropout): a label the teacher itself is unsure of moves. The
    draws are seeded and leave the process's random state as it was."""
    import torch

    from kdedge.evaluate import batches, encode

    if not texts:
        return np.zeros(0)
    was_training = teacher.training
    teacher.train()
    device = next(teacher.parameters()).device
    scores = []
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for _ in range(samples):
                draw = []
                for chunk in batches(texts, batch_size):
                    enc = {k: v.to(device) for k, v in encode(tokenizer, chunk, max_length,
                                                              "pt").items()}
                    draw.append(teacher(**enc).logits[:, 0].float().cpu())
                scores.append(torch.cat(draw))
    finally:
        teacher.train(was_training)
    return torch.stack(scores).std(0).numpy()


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


def spread_filter_applies(labels: np.ndarray, max_score_std: float | None) -> bool:
    """Whether to filter added rows by the spread of the teacher's score; class ids have none."""
    if max_score_std is not None and not is_scores(labels):
        raise KdedgeError(f"distill.augment.max_score_std {max_score_std} filters teacher scores of a "
                          "regression task; for classes use distill.augment.min_confidence.")
    return max_score_std is not None


class SpanMasking:
    """The student's input with token spans masked (Kim et al. 2021's data augmentation), a
    training step's `prepare`: each real token starts a span of `span` masked tokens with
    probability `prob / span`, so about `prob` of the tokens are masked, never a special one.
    Static as in the paper: a row's mask depends on the row and the seed only, so it is the
    same every epoch. The teacher's outputs stay those of the clean text."""

    def __init__(self, mask_id: int, special_ids: list[int], prob: float, span: int, seed: int,
                 ) -> None:
        self.mask_id, self.prob, self.span, self.seed = mask_id, prob, span, seed
        self.special = sorted(set(special_ids))

    def mask(self, row: int, maskable: np.ndarray) -> np.ndarray:
        """[length] bool: the positions of row `row` to mask (the same for any padded width)."""
        starts = np.random.default_rng([self.seed, row]).random(len(maskable)) < self.prob / self.span
        covered = np.zeros(len(maskable), dtype=bool)
        for start in np.flatnonzero(starts):
            covered[start:start + self.span] = True
        return covered & maskable

    def __call__(self, model: Any, batch: dict[str, Any], step: int, total_steps: int,
                 ) -> dict[str, Any]:
        import torch

        ids = batch["input_ids"]
        maskable = (batch["attention_mask"].bool() & ~torch.isin(
            ids, torch.tensor(self.special, dtype=ids.dtype))).numpy()
        chosen = np.stack([self.mask(row, maskable[i])
                           for i, row in enumerate(batch["index"].tolist())])
        return {**batch, "input_ids": ids.masked_fill(torch.as_tensor(chosen), self.mask_id)}


def span_masking(tokenizer: Any, prob: float, span: int, seed: int) -> SpanMasking:
    """Span masking with the tokenizer's mask token; refused for a tokenizer without one."""
    if tokenizer.mask_token_id is None:
        raise KdedgeError("The teacher's tokenizer has no mask token to mask spans with; set "
                          "distill.two_stage.span_mask_prob to 0.")
    return SpanMasking(tokenizer.mask_token_id, list(tokenizer.all_special_ids), prob, span, seed)

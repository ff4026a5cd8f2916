"""Teacher-labelled augmentation: masking, the confidence filter, and CE that skips added rows."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from kdedge.config import AugmentConfig
from kdedge.data.dataset import TaskSplit
from kdedge.distill import augment, losses
from kdedge.errors import KdedgeError
from kdedge.training.outputs import Outputs


def test_mask_words_masks_spans_and_keeps_length() -> None:
    text = "one two three four five six seven eight nine ten"
    assert augment.mask_words(text, random.Random(0), 0.999, 1, "[MASK]") == " ".join(["[MASK]"] * 10)
    masked = augment.mask_words(text, random.Random(3), 0.5, 3, "[MASK]")
    assert len(masked.split()) == 10 and "[MASK] [MASK] [MASK]" in masked
    unmasked = [w for w in masked.split() if w != "[MASK]"]
    assert unmasked == [w for w in text.split() if w in unmasked]  # order and words kept
    again = augment.mask_words(text, random.Random(3), 0.5, 3, "[MASK]")
    assert again == masked  # seeded


def test_augmented_split_appends_ignored_rows() -> None:
    train = TaskSplit(["a b", "c d"], np.array([0, 1]))
    cfg = AugmentConfig(mask_copies=2, mask_prob=0.5)
    out = augment.augmented(train, cfg, data_dir=None, mask_token="[M]", seed=1)  # type: ignore[arg-type]
    assert len(out) == 6 and out.texts[:2] == ["a b", "c d"]
    assert out.labels.tolist() == [0, 1, -100, -100, -100, -100]


def test_confidence_filter_keeps_gold_rows_and_sure_teacher_rows() -> None:
    labels = np.array([0, -100, -100, 1])
    logits = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.1, 0.0], [0.0, 0.0]])
    assert augment.confident(labels, logits, 0.9).tolist() == [0, 1, 3]  # softmax(3, 0) = 0.95
    assert augment.confident(labels, logits, None).tolist() == [0, 1, 2, 3]


def test_ce_skips_teacher_labelled_rows() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    mixed = losses.HardLabelCE()(Outputs(logits), None, {"labels": torch.tensor([0, -100])})
    assert float(mixed) == pytest.approx(0.126928, abs=1e-6)  # ln(1 + e^-2), the gold row only
    none = losses.HardLabelCE()(Outputs(logits), None, {"labels": torch.tensor([-100, -100])})
    assert float(none) == 0.0


def test_regression_rows_without_gold_are_nan_and_unfiltered() -> None:
    train = TaskSplit(["a b", "c d"], np.array([0.5, 2.25], dtype=np.float32))
    out = augment.augmented(train, AugmentConfig(mask_copies=1), data_dir=None,  # type: ignore[arg-type]
                            mask_token="[M]", seed=1)
    assert out.labels.dtype == np.float32 and out.labels[:2].tolist() == [0.5, 2.25]
    assert np.isnan(out.labels[2:]).all() and augment.count_added(out) == 2
    assert augment.confident(out.labels, torch.zeros(4, 1), None).tolist() == [0, 1, 2, 3]
    with pytest.raises(KdedgeError, match=r"distill\.augment\.min_confidence 0\.6 filters by the "
                                          r"teacher's top class probability, which a regression task "
                                          r"does not have; unset it\."):
        filtered = AugmentConfig(mask_copies=1, min_confidence=0.6)
        augment.augmented(train, filtered, data_dir=None, mask_token="[M]", seed=1)  # type: ignore[arg-type]


def _pair_task_file(tmp_path: Path) -> Path:
    import pandas as pd

    path = tmp_path / "unlabelled.csv"
    pd.DataFrame({"src": ["ein Haus", "zwei Katzen", None], "mt": ["a house", "two cats", "x"],
                  "other": [1, 2, 3]}).to_csv(path, index=False)
    return path


def test_a_sentence_pair_task_reads_pairs_from_the_unlabelled_files_two_columns(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.evaluate import encode

    train = TaskSplit([("das Buch", "the book")], np.array([0.7], dtype=np.float32))
    cfg = AugmentConfig(unlabeled=str(_pair_task_file(tmp_path)), text_column="src",
                        pair_column="mt")
    out = augment.augmented(train, cfg, data_dir=None, mask_token=None, seed=0)  # type: ignore[arg-type]
    # the row with no source is dropped; every row is a (text, pair) tuple
    assert out.texts == [("das Buch", "the book"), ("ein Haus", "a house"),
                         ("zwei Katzen", "two cats")]
    assert np.isnan(out.labels[1:]).all()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    got = encode(tokenizer, out.texts, 32, "pt")
    expected = tokenizer(["das Buch", "ein Haus", "zwei Katzen"], ["the book", "a house", "two cats"],
                         truncation=True, max_length=32, padding=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], expected["input_ids"])


def test_single_texts_for_a_pair_task_are_refused(tmp_path: Path) -> None:
    path = _pair_task_file(tmp_path)
    pairs = TaskSplit([("das Buch", "the book")], np.array([0.7], dtype=np.float32))
    with pytest.raises(KdedgeError, match=(
            rf"^This task reads sentence pairs but distill\.augment\.unlabeled {path} gives single "
            r"texts; name the file's second text column with distill\.augment\.pair_column\.$")):
        augment.augmented(pairs, AugmentConfig(unlabeled=str(path), text_column="src"),
                          data_dir=None, mask_token=None, seed=0)  # type: ignore[arg-type]
    single = TaskSplit(["a b"], np.array([0]))
    with pytest.raises(KdedgeError, match=r"^distill\.augment\.pair_column 'mt' reads sentence pairs "
                                          r"but this task reads single texts; unset it\.$"):
        augment.augmented(single, AugmentConfig(unlabeled=str(path), text_column="src",
                                                pair_column="mt"),
                          data_dir=None, mask_token=None, seed=0)  # type: ignore[arg-type]
    with pytest.raises(KdedgeError, match=r"^Column 'target' is not in .*Set distill\.augment\."
                                          r"pair_column\.$"):
        augment.augmented(pairs, AugmentConfig(unlabeled=str(path), text_column="src",
                                               pair_column="target"),
                          data_dir=None, mask_token=None, seed=0)  # type: ignore[arg-type]


def test_encoding_refuses_single_texts_among_pairs() -> None:
    from kdedge.evaluate import encode

    with pytest.raises(KdedgeError, match=r"^These texts mix sentence pairs with single texts; give "
                                          r"every row both texts of the pair\.$"):
        encode(None, [("a", "b"), "ab"], 8, "pt")


class _NumberTokenizer:
    """Each text is a number: one token, its value."""

    def __call__(self, texts: list[str], **_: object) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[int(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class _DriftingScorer(torch.nn.Module):
    """A regression teacher whose score is (its input) x (the number of the forward pass), so
    k passes give a row scored x the spread x * std(1..k); it must run with dropout on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.passes = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        assert self.training, "Monte Carlo dropout runs the teacher in train mode"
        self.passes += 1
        return SimpleNamespace(logits=input_ids.float() * self.passes * self.weight)


def test_the_regression_filter_drops_added_rows_whose_teacher_score_varies() -> None:
    split = TaskSplit(["9", "0", "1", "3"], np.array([0.5, np.nan, np.nan, np.nan], dtype=np.float32))
    cached = {"logits": torch.tensor([[0.1], [0.2], [0.3], [0.4]])}
    teacher = _DriftingScorer().eval()
    cfg = AugmentConfig(mask_copies=1, max_score_std=2.0, mc_samples=4)
    spread = augment.score_spread(teacher, _NumberTokenizer(), ["0", "1", "3"], 8, 4, seed=0)
    one_to_four = 1.2909944  # the sample standard deviation of 1, 2, 3, 4
    assert spread.tolist() == pytest.approx([0.0, one_to_four, 3 * one_to_four], abs=1e-6)
    assert not teacher.training  # eval mode restored
    kept, outputs = augment.keep_confident(split, cached, cfg, teacher, _NumberTokenizer(), 8)
    # the gold row always stays; of the added ones, spreads 0 and 1.29 pass 2.0, 3.87 does not
    assert kept.texts == ["9", "0", "1"] and outputs["logits"].flatten().tolist() == pytest.approx(
        [0.1, 0.2, 0.3])
    with pytest.raises(KdedgeError, match=r"^distill\.augment\.max_score_std 2\.0 filters teacher "
                                          r"scores of a regression task; for classes use "
                                          r"distill\.augment\.min_confidence\.$"):
        augment.augmented(TaskSplit(["a"], np.array([1])), cfg, data_dir=None,  # type: ignore[arg-type]
                          mask_token="[M]", seed=0)


def test_span_masking_is_static_spares_special_tokens_and_masks_about_the_share() -> None:
    masking = augment.SpanMasking(mask_id=9, special_ids=[1, 2, 0], prob=0.2, span=5, seed=7)
    # golden masks of rows 0, 1 and 5 (seed 7): one span of five each
    assert np.flatnonzero(masking.mask(0, np.ones(24, dtype=bool))).tolist() == [6, 7, 8, 9, 10]
    assert np.flatnonzero(masking.mask(5, np.ones(24, dtype=bool))).tolist() == [0, 1, 2, 3, 4]
    ids = torch.tensor([[1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 2, 0],
                        [1, 40, 41, 42, 43, 44, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "index": torch.tensor([1, 0]),
             "labels": torch.tensor([0, 1])}
    out = masking(None, batch, 0, 1)
    # row 1 masks 11..15, row 0 masks 6..10 but [SEP] (2) at 6 and padding stay
    assert out["input_ids"][0].tolist() == [1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 9, 9, 9, 9,
                                            9, 2, 0]
    assert out["input_ids"][1].tolist() == [1, 40, 41, 42, 43, 44, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0]
    assert torch.equal(batch["input_ids"], ids)  # the batch itself is left as it was
    assert torch.equal(masking(None, batch, 5, 9)["input_ids"], out["input_ids"])  # every epoch
    share = np.mean([masking.mask(row, np.ones(200, dtype=bool)).mean() for row in range(200)])
    assert 0.17 < share < 0.20  # 1 - (1 - 0.2/5)^5 = 0.185 away from the edges


def test_span_masking_needs_a_mask_token() -> None:
    with pytest.raises(KdedgeError, match=r"^The teacher's tokenizer has no mask token to mask "
                                          r"spans with; set distill\.two_stage\.span_mask_prob to 0\.$"):
        augment.span_masking(SimpleNamespace(mask_token_id=None), 0.2, 5, 0)

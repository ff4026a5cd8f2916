"""Teacher-labelled augmentation: masking, the confidence filter, and CE that skips added rows."""

from __future__ import annotations

import random

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

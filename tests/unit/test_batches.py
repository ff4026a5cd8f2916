"""Length-bucketed batches: every row once per epoch, a seeded random order, and far less
padding than a plain shuffle on texts of mixed lengths."""

from __future__ import annotations

import random

import numpy as np
import torch

from kdedge.training.trainer import length_bucketed_batches, shuffled_batches


def _padded(batches: list[list[int]], lengths: list[int]) -> int:
    """Tokens a model computes on: each batch padded to its longest row."""
    return sum(max(lengths[r] for r in batch) * len(batch) for batch in batches)


def test_bucketed_batches_cover_every_row_once_with_less_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.choice([8, 12, 20, 30, 60, 120]) for _ in range(3000)]
    sampler = length_bucketed_batches(lengths, 32)
    batches = sampler(torch.Generator().manual_seed(1))
    assert sorted(r for b in batches for r in b) == list(range(3000))
    assert len(batches) == len(shuffled_batches(3000, 32)(torch.Generator().manual_seed(1))) == 94
    assert all(len(b) <= 32 for b in batches)
    same_length = sum(len({lengths[r] for r in b}) == 1 for b in batches)
    assert same_length >= 80  # nearly every batch holds one length (six lengths, 50-batch windows)
    shuffled = _padded(shuffled_batches(3000, 32)(torch.Generator().manual_seed(1)), lengths)
    assert _padded(batches, lengths) < 0.5 * shuffled
    again = sampler(torch.Generator().manual_seed(1))
    assert again == batches and sampler(torch.Generator().manual_seed(2)) != batches


def test_length_buckets_follow_the_task_kind_unless_the_config_says() -> None:
    from kdedge.config import TrainingConfig
    from kdedge.data.dataset import TaskData, TaskSplit
    from kdedge.distill import losses
    from kdedge.distill.recipes import gold_loss
    from kdedge.training.trainer import bucketed_epochs

    split = TaskSplit(["a"], np.zeros(1, np.int64))
    classes = TaskData(["x", "y"], {"train": split}, "classification")
    scores = TaskData(["score"], {"train": split}, "regression")
    assert (classes.length_buckets, scores.length_buckets) == (True, False)
    gold = losses.build([(gold_loss(False), 1.0, {})])
    default, on, off = (TrainingConfig(), TrainingConfig(length_buckets=True),
                        TrainingConfig(length_buckets=False))
    assert [bucketed_epochs(cfg, kind, False, gold) for cfg in (default, on, off)
            for kind in (True, False)] == [True, False, True, True, False, False]
    assert not bucketed_epochs(on, True, True, gold)  # generation batches its own way
    selector = losses.build([(gold_loss(False), 1.0, {})])
    selector.losses[0].wants_feedback = True  # a teacher selector rewarded per batch
    assert not bucketed_epochs(on, True, False, selector)

"""Length-bucketed batches: every row once per epoch, a seeded random order, and far less
padding than a plain shuffle on texts of mixed lengths."""

from __future__ import annotations

import random

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

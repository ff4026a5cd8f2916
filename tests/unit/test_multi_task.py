"""Multi-task distillation: the task sampler's proportions and the shared student's heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdedge.config import build_config
from kdedge.distill.multi_task import (
    MultiTaskStudent,
    output_layer,
    sampling_probabilities,
    task_sampler,
)
from kdedge.errors import KdedgeError


@pytest.mark.parametrize(("strategy", "expected"), [
    ("proportional", [0.2, 0.8]),
    ("temperature", [1 / 3, 2 / 3]),  # n^(1/2): 10 and 20
    ("uniform", [0.5, 0.5]),
])
def test_sampling_probabilities(strategy: str, expected: list[float]) -> None:
    assert sampling_probabilities([100, 400], strategy, 2.0).tolist() == pytest.approx(expected)


def test_task_sampler_draws_single_task_batches_in_proportion() -> None:
    sizes, offsets, batch = [100, 400], [0, 100], 10
    probabilities = sampling_probabilities(sizes, "temperature", 2.0)
    epoch = task_sampler(offsets, sizes, batch, probabilities)
    generator = torch.Generator().manual_seed(0)
    counts, seen_first = np.zeros(2), set()
    for _ in range(60):
        batches = epoch(generator)
        assert len(batches) == 50  # the tasks' batches together: 10 + 40
        for rows in batches:
            task = int(rows[0] >= 100)
            assert all((r >= 100) == task for r in rows) and len(rows) == batch
            counts[task] += 1
            if task == 0:
                seen_first.update(rows)
    share = counts / counts.sum()
    assert share[0] == pytest.approx(1 / 3, abs=0.02)  # 3000 draws: the standard error is 0.009
    assert seen_first == set(range(100))  # the small task is cycled through, reshuffled


def test_proportional_epoch_visits_every_row_about_once() -> None:
    epoch = task_sampler([0, 30], [30, 90], 6, sampling_probabilities([30, 90], "proportional", 1))
    rows = [r for b in epoch(torch.Generator().manual_seed(1)) for r in b]
    assert len(rows) == 120


def test_heads_share_everything_below_the_output_layer(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    model = MultiTaskStudent(student, [2, 5]).eval()
    assert output_layer(student) is student.classifier
    ids = torch.tensor([[2, 7, 8, 3]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    own = model(**inputs).logits
    other = model(task=1, **inputs).logits
    assert own.shape == (1, 2) and other.shape == (1, 5)
    assert torch.equal(own, student(**inputs).logits)  # task 0 is the student itself
    pooled = student.bert(**inputs).pooler_output
    assert torch.allclose(other, model.heads[1](pooled), atol=1e-6)
    assert torch.equal(model(**inputs).logits, own)  # the hook is gone after the call


def test_multi_task_recipe_needs_tasks_with_distinct_names() -> None:
    with pytest.raises(KdedgeError, match=r"multi-task recipe needs distill\.multi_task\.tasks"):
        build_config(overrides={"distill.recipe": "multi-task"})
    with pytest.raises(KdedgeError, match="give every task its own name, other than 'target'"):
        build_config(overrides={"distill.multi_task.tasks": [{"name": "a"}, {"name": "a"}]})

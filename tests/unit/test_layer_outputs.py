"""An intermediate-layer loss is one module: it declares the teacher layers it reads, the
teacher-output cache keeps their pooled vectors, and the one loop trains on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from conftest import toy_rows
from torch import nn

from kdedge.config import TrainingConfig
from kdedge.data.dataset import TaskSplit
from kdedge.distill.classifier import cached_outputs
from kdedge.distill.losses import WeightedSum
from kdedge.torch_utils import seed_everything
from kdedge.training import teacher_cache
from kdedge.training.outputs import Outputs, pool
from kdedge.training.trainer import train


class LayerMatch(nn.Module):
    """MSE between the student's mean-pooled layer `student_layer` and the teacher's cached
    mean-pooled layer `teacher_layer` (a test's own loss: nothing else had to change for it)."""

    def __init__(self, student_layer: int, teacher_layer: int) -> None:
        super().__init__()
        self.student_layer, self.teacher_layers = student_layer, (teacher_layer,)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None and teacher.layers is not None
        mine = pool(student.hidden_states[self.student_layer], batch["attention_mask"], "mean")
        return F.mse_loss(mine, teacher.layers[self.teacher_layers[0]]["mean"])


def split(count: int = 48) -> TaskSplit:
    rows = toy_rows(count, seed=7)
    return TaskSplit([r["sentence"] for r in rows],
                     np.array([int(r["sentiment"] == "pos") for r in rows], dtype=np.int64))


def load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (AutoModelForSequenceClassification.from_pretrained(folder).eval(),
            AutoTokenizer.from_pretrained(folder))


def test_the_cache_keeps_the_declared_layers(tiny_model_dir: Path, tmp_path: Path) -> None:
    teacher, tokenizer = load(tiny_model_dir)
    loss = WeightedSum([("layer", 1.0, LayerMatch(student_layer=1, teacher_layer=2))])
    assert loss.teacher_layers == (2,)
    data = split()
    cached, hit = teacher_cache.teacher_outputs(tmp_path / "cache", teacher, tokenizer, data, 32,
                                                batch_size=8, layers=loss.teacher_layers)
    assert not hit and cached["layer2_mean"].shape == (48, 32)
    enc = tokenizer(data.texts[:5], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = teacher(**enc, output_hidden_states=True).hidden_states
    for pooling in ("cls", "mean"):
        expected = pool(hidden[2], enc["attention_mask"], pooling)
        assert torch.allclose(cached[f"layer2_{pooling}"][:5], expected, atol=1e-5)
    # a cache without the layer is not taken for one with it
    assert teacher_cache.cache_folder(["w"], data.texts, 32, (2,)) != \
        teacher_cache.cache_folder(["w"], data.texts, 32)
    outputs = cached_outputs(cached, torch.tensor([3, 1]))
    assert torch.equal(outputs.layers[2]["mean"], cached["layer2_mean"][[3, 1]])


def test_the_loop_trains_a_student_layer_towards_the_teachers(tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    teacher, tokenizer = load(tiny_model_dir)
    data = split()
    loss = WeightedSum([("layer", 1.0, LayerMatch(student_layer=1, teacher_layer=2))])
    cached, _ = teacher_cache.teacher_outputs(tmp_path / "cache", teacher, tokenizer, data, 32,
                                              layers=loss.teacher_layers)
    seed_everything(0)
    student, _ = load(tiny_model_dir)
    with torch.no_grad():  # start the student away from the teacher
        for param in student.bert.encoder.layer[0].parameters():
            param.add_(0.5 * torch.randn_like(param))

    def distance(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            batch = dict(tokenizer(data.texts, padding=True, truncation=True, max_length=32,
                                   return_tensors="pt"))
            out = model(**batch, output_hidden_states=True)
            value = loss(Outputs.from_hf(out), cached_outputs(cached, torch.arange(len(data))),
                         batch)[0]
        return float(value)

    before = distance(student)
    train(student, tokenizer, data, loss, teacher=lambda batch: cached_outputs(cached, batch["index"]),
          evaluate=lambda m: -distance(m), cfg=TrainingConfig(epochs=3, batch_size=16, learning_rate=3e-3),
          max_length=32, seed=0, description="student (layer match)", hidden_states=True)
    assert distance(student) < 0.5 * before

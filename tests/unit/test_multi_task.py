"""Multi-task distillation: the task sampler's proportions, the shared heads, the per-task
losses of mixed classification and regression tasks, and the multi-task teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_rows

from kdedge.config import build_config
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.distill import losses, task_teachers
from kdedge.distill.multi_task import (
    HEADS_FILE,
    AuxTask,
    MultiTaskModel,
    check_kind,
    joint_split,
    joint_teacher,
    load_heads,
    output_layer,
    sampling_probabilities,
    task_sampler,
)
from kdedge.distill.recipes import RECIPES, Dims
from kdedge.errors import KdedgeError
from kdedge.evaluate import torch_logits
from kdedge.training import teacher_cache
from kdedge.training.outputs import Outputs


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
    model = MultiTaskModel(student, [2, 5]).eval()
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


def test_multi_task_teacher_is_one_encoder_with_a_head_per_task(tiny_model_dir: Path) -> None:
    """The target's head is the model's own; a regression task gets one output, a 3-class
    task three, all reading the one encoder's pooled vector."""
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    model = MultiTaskModel(teacher, [2, 1, 3]).eval()
    encoders = [m for m in model.modules() if type(m).__name__ == "BertModel"]
    assert len(encoders) == 1
    assert [h.out_features for h in model.heads[1:]] == [1, 3]
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    inputs = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    assert [tuple(model.view(t)(**inputs).logits.shape) for t in range(3)] == [(2, 2), (2, 1), (2, 3)]
    pooled = teacher.bert(**inputs).pooler_output
    assert torch.allclose(model.view(1)(**inputs).logits, model.heads[1](pooled), atol=1e-6)


def _mixed_loss(logit_loss: str = "mse") -> losses.WeightedSum:
    cfg = build_config(overrides={"distill.recipe": "multi-task",
                                  "distill.multi_task.tasks": [{"name": "score"}],
                                  "distill.multi_task.logit_loss": logit_loss}).distill
    phases = RECIPES.get("multi-task")(cfg, Dims(32, 32, tasks=(False, True)))
    assert [p.name for p in phases] == ["multi-task", "target"]
    return losses.build(phases[0].losses)


def test_mixed_classification_and_regression_batches_take_their_own_losses() -> None:
    """alpha 0.5: a classification batch takes 0.5 MSE(logits) + 0.5 CE, a regression batch
    0.5 MSE(teacher score) + 0.5 MSE(gold score); labels arrive as the joint split's float64."""
    loss = _mixed_loss()
    classify = {"labels": torch.tensor([0.0, 1.0], dtype=torch.float64), "task": 0}
    total, _ = loss(Outputs(torch.tensor([[1.0, 0.0], [0.0, 2.0]])),
                    Outputs(torch.tensor([[2.0, 0.0], [0.0, 0.0]])), classify)
    # MSE (1 + 0 + 0 + 4) / 4 = 1.25; CE (log(1 + e^-1) + log(1 + e^-2)) / 2 = 0.2200949
    assert float(total) == pytest.approx(0.5 * 1.25 + 0.5 * 0.2200949, abs=1e-6)
    score = {"labels": torch.tensor([0.0, 2.0], dtype=torch.float64), "task": 1}
    total, _ = loss(Outputs(torch.tensor([[0.5], [1.0]])), Outputs(torch.tensor([[1.0], [1.0]])),
                    score)
    # MSE to the teacher (0.25 + 0) / 2 = 0.125; to the gold scores (0.25 + 1) / 2 = 0.625
    assert float(total) == pytest.approx(0.5 * 0.125 + 0.5 * 0.625, abs=1e-6)


def test_kl_is_for_classification_heads_only() -> None:
    """logit_loss kl: the classification head takes KL at T, the regression head MSE."""
    heads = _mixed_loss("kl").losses[0].tasks
    assert [heads[0].names, heads[1].names] == [["kl", "ce"], ["mse_logits", "mse_gold"]]


def test_a_task_kind_without_the_recipe_is_refused() -> None:
    split = TaskSplit(["a b"], np.array(["c d"], dtype=object))
    data = TaskData(["text"], {"train": split}, kind="seq2seq")
    with pytest.raises(KdedgeError, match=r"^Task 'summaries' is a seq2seq task, and multi-task "
                       r"distillation takes classification and regression tasks only; drop it\.$"):
        check_kind("summaries", data)
    check_kind("score", TaskData(["score"], {"train": split}, kind="regression"))


def test_the_teacher_setting_and_its_errors() -> None:
    task = {"name": "score", "data": {"source": "score.csv"}}
    cfg = build_config(overrides={"distill.recipe": "multi-task", "distill.multi_task.tasks": [task]})
    assert cfg.distill.multi_task.teacher == "multi-task"  # the paper's
    assert cfg.distill.multi_task.task_teachers == ()
    own = {**task, "teacher": {"model": "other"}}
    with pytest.raises(KdedgeError, match=r"task 'score' names its own teacher, which only the "
                       r"per-task teachers read; set distill\.multi_task\.teacher to per-task"):
        build_config(overrides={"distill.recipe": "multi-task", "distill.multi_task.tasks": [own]})
    per_task = build_config(overrides={"distill.recipe": "multi-task",
                                       "distill.multi_task.teacher": "per-task",
                                       "distill.multi_task.tasks": [own]})
    assert [t.model for t in per_task.distill.multi_task.task_teachers] == ["other"]
    with pytest.raises(KdedgeError, match=r"teacher\.fine_tune never keeps the teacher as it is, "
                       r"but the multi-task teacher is that teacher fine-tuned on every task"):
        build_config(overrides={"distill.recipe": "multi-task", "distill.multi_task.tasks": [task],
                                "teacher.fine_tune": "never"})
    build_config(overrides={"distill.recipe": "multi-task", "distill.multi_task.tasks": [task],
                            "distill.multi_task.teacher": "per-task", "teacher.fine_tune": "never"})
    with pytest.raises(KdedgeError, match=r"distill\.multi_task\.teacher"):
        build_config(overrides={"distill.multi_task.teacher": "both"})


def _toy_tasks() -> tuple[TaskData, TaskData]:
    """Sentiment (classification, the target) and a score per text: the share of its words
    that are 'movie' or 'film' (regression)."""
    def split(count: int, seed: int) -> tuple[TaskSplit, TaskSplit]:
        rows = toy_rows(count, seed)
        texts = [r["sentence"] for r in rows]
        sentiment = np.array([int(r["sentiment"] == "pos") for r in rows], dtype=np.int64)
        share = np.array([sum(w in ("movie", "film") for w in t.split()) / len(t.split())
                          for t in texts], dtype=np.float32)
        return TaskSplit(texts, sentiment), TaskSplit(texts, share)

    parts = {name: split(n, seed) for name, n, seed in (("train", 160, 0), ("validation", 32, 1),
                                                        ("test", 32, 2))}
    return (TaskData(["neg", "pos"], {k: v[0] for k, v in parts.items()}, "classification"),
            TaskData(["score"], {k: v[1] for k, v in parts.items()}, "regression"))


def test_multi_task_teacher_trains_once_and_feeds_the_students_cache(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """The teacher stage's teacher with a score head, fine-tuned on both tasks through the one
    loop; what the student's teacher-output cache receives is that teacher's heads' outputs,
    and a second run finds the teacher in the cache."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    target, scores = _toy_tasks()
    cfg = build_config(overrides={
        "data.max_length": 32, "distill.recipe": "multi-task",
        "distill.multi_task.tasks": [{"name": "share"}],
        "teacher.training": {"epochs": 3, "patience": None, "batch_size": 16,
                             "learning_rate": 1e-3}})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def teach() -> task_teachers.Teaching:
        torch.manual_seed(0)  # dropout draws from the global generator, as in a run (run.seed)
        stage_teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
        return task_teachers.multi_task_teacher(
            cfg, stage_teacher, tokenizer, target, [AuxTask("share", scores, "data-fp")],
            ["stage-teacher-sha"], "target-data-fp", tmp_path)

    teaching = teach()
    summary = teaching.summary
    assert not summary["cache_hit"] and len(summary["history"]) == 3
    losses_by_epoch = [row["train_loss"] for row in summary["history"]]
    assert losses_by_epoch[-1] < losses_by_epoch[0]
    # the score head learns first (three epochs keep the sentiment head near chance; the
    # pipeline test shows the target learnt as well)
    assert summary["scores"]["share"]["validation"]["pearson"] >= 0.6
    assert set(summary["scores"]["target"]["validation"]) == {"accuracy", "macro_f1", "examples"}
    assert teaching.tasks[0].teacher_summary["kind"] == "regression"

    # the teacher as saved: one model plus the score head, reloaded from safetensors
    folder = Path(summary["cache"]) / "model"
    model = MultiTaskModel(AutoModelForSequenceClassification.from_pretrained(folder), [2, 1])
    load_heads(model, teaching.tasks, folder / HEADS_FILE)
    train_texts = target.splits["train"].texts
    heads = [torch.as_tensor(torch_logits(model.view(t), tokenizer, train_texts, 32)) for t in (0, 1)]
    assert torch.allclose(teaching.tasks[0].teacher_logits, heads[1], atol=1e-5)

    # the student's cache of the target's outputs, as distill_student fills it
    cached, _ = teacher_cache.teacher_outputs(
        teacher_cache.cache_folder(teaching.weights, train_texts, 32), teaching.teacher, tokenizer,
        target.splits["train"], 32)
    assert torch.allclose(cached["logits"], heads[0], atol=1e-5)
    before = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert not torch.allclose(cached["logits"], torch.as_tensor(
        torch_logits(before, tokenizer, train_texts, 32)), atol=1e-3)  # refined, not the stage's

    # the joint phase hands each single-task batch its own head's outputs
    _, offsets, _ = joint_split([target.splits["train"], scores.splits["train"]])
    outputs = joint_teacher(cached, teaching.tasks, offsets)
    rows = torch.tensor([160 + 5, 160 + 7])
    assert torch.equal(outputs({"index": rows, "task": 1}).logits, heads[1][[5, 7]])
    assert torch.equal(outputs({"index": torch.tensor([3]), "task": 0}).logits, cached["logits"][[3]])

    again = teach()
    assert again.summary["cache_hit"] and again.weights == teaching.weights
    assert torch.equal(again.tasks[0].teacher_logits, teaching.tasks[0].teacher_logits)

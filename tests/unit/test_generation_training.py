"""Generation recipes through the one training loop, on a tiny bert2bert built in-process."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdedge.config import build_config
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.distill import generation
from kdedge.distill.generation_training import ImitationContexts, TargetSplit, collate
from kdedge.errors import KdedgeError
from kdedge.models.layouts import Seq2SeqLayout, layout_for
from kdedge.models.seq2seq import bert2bert

PAIRS = [("the film was good and the plot was fine", "good film"),
         ("a bad plot and a worse cast", "bad plot"),
         ("great acting in a long film", "great acting"),
         ("the cast was fine but the plot was bad", "fine cast"),
         ("good plot good cast good film", "good plot"),
         ("worse film than the last one", "worse film")] * 2


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir: Path) -> tuple:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    return bert2bert(tiny_model_dir, tokenizer).eval(), tokenizer


def task_of(pairs: list[tuple[str, str]]) -> TaskData:
    def split(rows: list[tuple[str, str]]) -> TaskSplit:
        return TaskSplit([s for s, _ in rows], np.array([t for _, t in rows], dtype=object))
    return TaskData([], {"train": split(pairs), "validation": split(pairs[:4]),
                         "test": split(pairs[:4])}, "seq2seq")


def test_collate_gives_teacher_forced_contexts_labels_and_the_counted_positions(tiny_pair) -> None:
    teacher, tokenizer = tiny_pair
    layout = layout_for(teacher.config, tokenizer, 32)
    assert isinstance(layout, Seq2SeqLayout)
    assert (layout.start, layout.pad, layout.eos) == (
        tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id)
    targets = layout.targets(["good film", "bad"], 16)
    # bert2bert starts decoding with [CLS]: targets are the words and [SEP]
    assert all(t[0] != layout.start and t[-1] == layout.eos for t in targets)
    assert len(targets[0]) == len(targets[1]) + 1
    batch = collate(layout, TargetSplit(["a source", "another source text"], targets), [0, 1])
    labels, context, mask = batch["labels"], batch["decoder_input_ids"], batch["mask"]
    assert context[:, 0].tolist() == [layout.start] * 2
    assert torch.equal(context[0, 1:], labels[0, :-1])  # the longer row: shifted right
    assert labels[1, -1].item() == generation.IGNORE and context[1, -1].item() == layout.eos
    # counted: every prediction up to and including the EOS, nothing on padding
    assert mask.sum(1).tolist() == [len(targets[0]), len(targets[1])]
    assert torch.equal(mask, generation.position_mask(context, layout.pad, layout.eos))
    assert not batch["rollout"].any() and batch["sources"] == ["a source", "another source text"]


def test_imitation_contexts_follow_the_schedule_and_roll_out_one_minus_beta(tiny_pair) -> None:
    teacher, tokenizer = tiny_pair
    layout = layout_for(teacher.config, tokenizer, 32)
    cfg = build_config(overrides={"data.task": "seq2seq", "distill.recipe": "imitkd",
                                  "distill.generation.schedule": "constant",
                                  "distill.generation.beta": 0.25}).distill.generation
    contexts = ImitationContexts(cfg, layout, max_new_tokens=4, seed=3)
    split = TargetSplit([s for s, _ in PAIRS] * 2, layout.targets([t for _, t in PAIRS] * 2, 16))
    shares = []
    for step in range(12):
        batch = contexts(teacher, collate(layout, split, list(range(24))), step, 12)
        rows = batch["rollout"]
        shares.append(rows.float().mean().item())
        # rolled-out rows hold the model's own greedy output, no data label left on them
        rolled = [t for t, r in zip(batch["targets"], rows.tolist(), strict=True) if r]
        assert all(1 <= len(t) <= 4 for t in rolled)
        assert (batch["labels"][rows] == generation.IGNORE).all()
        assert batch["mask"][rows].sum().item() == sum(len(t) for t in rolled)
    assert abs(float(np.mean(shares)) - 0.75) < 0.08  # 288 draws at 1 - beta = 0.75
    summary = contexts.summary()
    assert summary["beta"] == 0.25 and abs(summary["rollout_share"] - np.mean(shares)) < 1e-3
    linear = cfg.model_copy(update={"schedule": "linear"})
    assert [ImitationContexts(linear, layout, 4, 0).beta(s, 4) for s in range(5)] == [
        1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize("recipe", ["gold", "word-kd", "seq-kd", "imitkd"])
def test_each_generation_recipe_trains_the_student_through_the_one_loop(
        recipe: str, tiny_pair, request: pytest.FixtureRequest) -> None:
    from kdedge.distill import generator

    teacher, tokenizer = tiny_pair
    cfg = build_config(overrides={
        "data.task": "seq2seq", "data.max_length": 32, "data.max_target_length": 8,
        "distill.recipe": recipe, "distill.student": "1", "distill.generation.beams": 2,
        "distill.training": {"epochs": 3, "batch_size": 4, "learning_rate": 2e-3,
                             "warmup_ratio": 0.0}})
    calls = []  # the student is a copy of the teacher, hooks included: count the teacher's only
    hook = teacher.register_forward_hook(lambda module, *_: calls.append(1) if module is teacher
                                         else None)
    request.addfinalizer(hook.remove)
    student, metrics = generator.distill(cfg, teacher, tokenizer, task_of(PAIRS), ["sha"])
    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["student"]["layers"] == {"encoder": 1, "decoder": 1}
    assert sum(p.numel() for p in student.parameters()) == metrics["student"]["parameters"] < sum(
        p.numel() for p in teacher.parameters())
    assert set(metrics["test"]) == {"bleu", "rouge1", "rouge2", "rougeL", "examples"}
    reads_teacher = recipe in ("word-kd", "imitkd", "seq-kd")  # seq-kd: beam search, once
    assert bool(calls) == reads_teacher
    assert metrics["teacher_sequences_cache"] == ("miss" if recipe == "seq-kd" else None)
    if recipe == "imitkd":  # exponential schedule over 9 steps: beta falls, rollouts grow
        betas = [row["beta"] for row in history]
        assert betas == sorted(betas, reverse=True) and betas[0] < 1.0
        assert history[-1]["rollout_share"] > history[0]["rollout_share"]
    if recipe == "seq-kd":  # a second run reads the teacher's beam outputs from the cache
        calls.clear()
        _, again = generator.distill(cfg, teacher, tokenizer, task_of(PAIRS), ["sha"])
        assert again["teacher_sequences_cache"] == "hit" and not calls


def test_a_recipe_that_does_not_fit_the_task_is_named_with_the_fitting_ones() -> None:
    with pytest.raises(KdedgeError, match=r"distill.recipe kd does not fit data.task seq2seq; "
                                          r"use one of gold, imitkd, lifelong, seq-kd, word-kd, "
                                          r"or set data.task"):
        build_config(overrides={"data.task": "seq2seq", "distill.recipe": "kd"})
    with pytest.raises(KdedgeError, match=r"distill.recipe imitkd does not fit data.task auto; "
                                          r"use one of annealing, gold, kd, multi-task"):
        build_config(overrides={"distill.recipe": "imitkd"})
    assert build_config(overrides={"data.task": "seq2seq", "distill.recipe": "gold"})


def test_a_seq2seq_student_asking_for_more_layers_than_the_teacher_has(tiny_pair) -> None:
    from kdedge.distill.generator import build_student

    teacher, _ = tiny_pair
    cfg = build_config(overrides={"data.task": "seq2seq", "distill.recipe": "gold",
                                  "distill.student": "5"}).distill
    with pytest.raises(KdedgeError, match="asks for 5 encoder layers of a teacher with 2; ask "
                                          "for fewer"):
        build_student(cfg, teacher)
    deeper = cfg.model_copy(update={"student": "1", "generation": cfg.generation.model_copy(
        update={"decoder_layers": 3})})
    with pytest.raises(KdedgeError, match="asks for 1 encoder / 3 decoder layers of a teacher "
                                          "with 2 / 2; ask for fewer"):
        build_student(deeper, teacher)


def test_a_gru_decoder_student_trains_with_imitkd_and_exports_the_same_greedy_tokens(
        tiny_pair, tmp_path: Path) -> None:
    from kdedge.distill import generator
    from kdedge.export.generation import (
        export_generator,
        generation_parity,
        has_cache,
        load_onnx_generator,
    )

    teacher, tokenizer = tiny_pair
    cfg = build_config(overrides={
        "data.task": "seq2seq", "data.max_length": 32, "data.max_target_length": 8,
        "distill.recipe": "imitkd", "distill.student": "1", "distill.generation.decoder": "gru",
        "distill.generation.gru_hidden": 24,
        "distill.training": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-3}})
    student, metrics = generator.distill(cfg, teacher, tokenizer, task_of(PAIRS), ["sha"])
    assert metrics["student"]["layers"] == {"encoder": 1, "decoder": 1}
    assert "GRU decoder (24 wide)" in metrics["student"]["source"]
    assert all(math.isfinite(row["train_loss"]) for row in metrics["history"])
    student.save_pretrained(tmp_path / "pt")
    tokenizer.save_pretrained(tmp_path / "pt")
    exported = export_generator(tmp_path / "pt", tmp_path / "onnx", "seq2seq")
    assert exported == {"files": ["decoder_model.onnx", "encoder_model.onnx"],
                        "key_value_cache": True}  # the GRU's state
    assert has_cache(tmp_path / "onnx")
    assert (tmp_path / "onnx" / "config.json").is_file()
    batch = dict(tokenizer([s for s, _ in PAIRS[:3]], padding=True, return_tensors="pt"))
    parity = generation_parity(student.eval(), load_onnx_generator(tmp_path / "onnx", "seq2seq"),
                               batch, new_tokens=6)
    assert parity == {"rows": 3, "new_tokens": 6, "mismatched_rows": [], "passed": True}


def test_imitkd_star_mixes_the_teachers_generations_with_the_students_rollouts(tiny_pair) -> None:
    """ImitKD*: a row keeps the teacher's beam output (context and targets) with probability
    beta, else the student rolls it out; the teacher's argmax is the target on rolled rows."""
    from kdedge.distill import generator
    from kdedge.distill.recipes import RECIPES, Dims

    teacher, tokenizer = tiny_pair
    cfg = build_config(overrides={
        "data.task": "seq2seq", "data.max_length": 32, "data.max_target_length": 6,
        "distill.recipe": "imitkd", "distill.student": "1", "distill.generation.beams": 2,
        "distill.generation.imitation_data": "teacher", "distill.generation.schedule": "constant",
        "distill.generation.beta": 0.5,
        "distill.training": {"epochs": 2, "batch_size": 4, "learning_rate": 2e-3}})
    (phase,) = RECIPES.get("imitkd")(cfg.distill, Dims(0, 0, generation=True))
    assert (phase.targets, phase.rollout) == ("teacher", True)
    layout = layout_for(teacher.config, tokenizer, 32)
    student, _ = generator.build_student(cfg.distill, teacher)
    sources = [s for s, _ in PAIRS]
    beams = layout.continuations(teacher, sources, 6, beams=2)
    with torch.no_grad():  # a student that says token 30 until the end: its rows stand out
        student.decoder.cls.predictions.bias[30] += 100.0
    students = layout.continuations(student, sources, 6)
    assert students == [[30] * 6] * 12 and beams != students
    assert layout.continuations(teacher, sources, 6, beams=2) == beams  # the teacher untouched
    contexts = ImitationContexts(cfg.distill.generation, layout, 6, seed=1)
    batch = contexts(student, collate(layout, TargetSplit(sources, beams), range(12)), 0, 1)
    rows = batch["rollout"].tolist()
    assert 0 < sum(rows) < 12  # both kinds in one batch at beta 0.5
    assert batch["targets"] == [s if r else b for b, s, r in zip(beams, students, rows, strict=True)]
    for i, (target, rolled) in enumerate(zip(batch["targets"], rows, strict=True)):
        labels = batch["labels"][i][batch["mask"][i]].tolist()
        assert labels == ([generation.IGNORE] * len(target) if rolled else target)
    _, metrics = generator.distill(cfg, teacher, tokenizer, task_of(PAIRS), ["sha"])
    assert metrics["teacher_sequences_cache"] in ("hit", "miss")  # the teacher's beam outputs
    assert all(row["beta"] == 0.5 and 0 < row["rollout_share"] < 1 for row in metrics["history"])


def test_the_beta_schedule_holds_at_one_through_its_warm_up(tiny_pair) -> None:
    teacher, tokenizer = tiny_pair
    cfg = build_config(overrides={"data.task": "seq2seq", "distill.recipe": "imitkd",
                                  "distill.generation.schedule_warmup": 0.5}).distill.generation
    contexts = ImitationContexts(cfg, layout_for(teacher.config, tokenizer, 32), 4, 0)
    assert [contexts.beta(s, 4) for s in range(5)] == pytest.approx(
        [1.0, 1.0, 1.0, 200 ** -0.25, 200 ** -0.5])

"""Lifelong distillation (L2KD on LAMOL) over a stream of two tiny causal-LM tasks."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_causal_lm import loaded, task_of, tiny_gpt2_dir  # noqa: F401  (a fixture)

from kdedge.config import build_config
from kdedge.models.layouts import layout_for

FIRST = [("the film was", "good"), ("the plot is", "bad"), ("a movie and", "fun"),
         ("the cast was", "dull")] * 4  # the earlier task
TARGET = [("story very", "great"), ("it is a", "awful"), ("very smart", "fine"),
          ("a weak story", "poor")] * 4  # the run's own task, last in the stream


def lifelong_config(tiny_gpt2_dir: Path, first_csv: Path, replay: str):  # noqa: F811
    return build_config(overrides={
        "data.task": "causal-lm", "data.max_length": 8, "data.max_target_length": 3,
        "teacher.model": str(tiny_gpt2_dir), "distill.recipe": "lifelong", "distill.student": "1",
        "distill.lifelong": {"replay": replay, "replay_ratio": 0.5, "tasks": [{
            "name": "first", "data": {"source": str(first_csv), "text_columns": ["prompt"],
                                      "label_column": "continuation",
                                      "validation_fraction": 0.25, "test_fraction": 0.25},
            "teacher": {"model": str(tiny_gpt2_dir), "training": {"epochs": 1,
                                                                  "batch_size": 4}}}]},
        "distill.training": {"epochs": 1, "batch_size": 4, "learning_rate": 3e-3}})


@pytest.mark.parametrize("replay", ["real", "generated"])
def test_the_stream_teaches_each_teacher_its_own_task_only_and_scores_every_step(
        replay: str, tiny_gpt2_dir: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.distill import generator
    from kdedge.teacher import generator as teacher_generator

    first_csv = tmp_path / "first.csv"
    pd.DataFrame([{"prompt": p, "continuation": c} for p, c in FIRST]).to_csv(first_csv,
                                                                              index=False)
    seen: list[set[str]] = []  # the texts every teacher fine-tuning trained on
    original = teacher_generator.fit

    def spy(model, layout, task, split, *args, **kwargs):
        seen.append(set(split.texts))
        return original(model, layout, task, split, *args, **kwargs)

    monkeypatch.setattr(teacher_generator, "fit", spy)
    cfg = lifelong_config(tiny_gpt2_dir, first_csv, replay)
    teacher, tokenizer = loaded(tiny_gpt2_dir)  # the run's teacher: the target task's
    target = task_of(TARGET)
    student, metrics = generator.distill(cfg, teacher, tokenizer, target, ["gpt2"],
                                         work=tmp_path / "work")
    # the earlier task's teacher trained on that task's data and nothing of the target's
    assert len(seen) == 1 and seen[0] <= {p for p, _ in FIRST}
    assert not seen[0] & {p for p, _ in TARGET}
    life = metrics["lifelong"]
    assert life["stream"] == ["first", "target"] and life["replay"] == replay
    assert [s["task"] for s in life["after_step"]] == ["first", "target"]
    assert all(set(s["test_rougeL"]) == {"first", "target"} for s in life["after_step"])
    assert life["after_step"][0]["replayed"] == 0  # nothing before the first task
    if replay == "real":  # gamma x the target's 16 training rows, from the first task
        assert life["after_step"][1]["replayed"] == math.ceil(0.5 * len(TARGET))
    assert set(life["multitask_test_rougeL"]) == {"first", "target"}
    assert [row["phase"] for row in metrics["history"]] == ["first", "target"]
    assert student.config.num_hidden_layers == 1
    assert set(metrics["test"]) == {"bleu", "rouge1", "rouge2", "rougeL", "examples"}


def test_pseudo_samples_are_cut_at_the_separator_and_end_with_eos(tiny_gpt2_dir: Path,  # noqa: F811
                                                                 ) -> None:
    from kdedge.distill.lifelong import pseudo_samples

    model, tokenizer = loaded(tiny_gpt2_dir)
    layout = layout_for(model.config, tokenizer, 8)
    word = {w: tokenizer.convert_tokens_to_ids(w) for w in ("the", "film", "good", "bad")}
    sep, eos = layout.separator, layout.eos
    rows = [[word["the"], word["film"], sep, word["good"], eos, 0],  # kept
            [word["the"], word["film"], word["bad"], word["good"]],  # no separator: dropped
            [sep, word["good"], eos],  # no prompt: dropped
            [word["film"], sep, eos]]  # an empty target: dropped

    class Scripted(torch.nn.Module):
        training = False

        def generate(self, input_ids, attention_mask, generation_config):
            assert (input_ids[:, 0] == layout.start).all() and generation_config.do_sample
            assert generation_config.top_k == 20 and generation_config.eos_token_id is None
            width = max(len(r) for r in rows)
            padded = [[layout.start, *r, *[layout.pad] * (width - len(r))] for r in rows]
            return torch.tensor(padded[:len(input_ids)])

    samples = pseudo_samples(Scripted(), layout, 4, top_k=20, max_tokens=6, seed=0)
    assert samples == [("the film", [word["good"], eos])]


def test_the_report_tabulates_the_stream_step_by_step() -> None:
    from kdedge.report.builders import lifelong_rows

    life = {"stream": ["first", "target"],
            "after_step": [{"step": 1, "task": "first", "replayed": 0,
                            "test_rougeL": {"first": 10.0, "target": 1.0}},
                           {"step": 2, "task": "target", "replayed": 8,
                            "test_rougeL": {"first": 7.5, "target": 12.25}}],
            "teachers_test_rougeL": {"first": 11, "target": 13},
            "multitask_test_rougeL": {"first": 9, "target": 12}}
    assert lifelong_rows(life) == (["", "first", "target"], [
        ["after step 1 (first, 0 replayed)", "10.00", "1.00"],
        ["after step 2 (target, 8 replayed)", "7.50", "12.25"],
        ["each task's teacher", "11.00", "13.00"],
        ["multitask (all tasks at once)", "9.00", "12.00"]])
    assert lifelong_rows({"stream": ["a"], "after_step": []}) == ([], [])

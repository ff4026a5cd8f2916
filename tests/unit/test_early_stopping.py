"""Teacher fine-tuning runs until validation stops improving, and a student that beats an
under-trained teacher is said so: tiny in-process models on the toy sentiment set."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import toy_rows

from kdedge import pipeline
from kdedge.config import DataConfig, TeacherConfig, TrainingConfig, build_config
from kdedge.data.dataset import load_task
from kdedge.data.stage import prepare as prepare_data
from kdedge.teacher.classifier import prepare as prepare_teacher


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("toy")
    source = folder / "toy.csv"
    pd.DataFrame(toy_rows(400)).to_csv(source, index=False)
    prepare_data(DataConfig(source=str(source), text_columns=("sentence",),
                            label_column="sentiment"), 0, folder)
    return load_task(folder)


def test_default_teacher_fine_tuning_stops_on_a_validation_plateau(
        toy_task, tiny_encoder_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    default = TeacherConfig().training
    assert (default.epochs, default.patience) == (5, 1)
    cfg = TeacherConfig(model=str(tiny_encoder_dir),  # the defaults, at a rate a tiny model learns at
                        training=default.model_copy(update={"learning_rate": 3e-3, "batch_size": 16}))
    with caplog.at_level(logging.INFO, logger="kdedge"):
        metrics = prepare_teacher(cfg, toy_task, 32, 0, "plateau", tmp_path / "model")
    scores = [row["validation_score"] for row in metrics["history"]]
    best = metrics["best_epoch"]
    assert scores == [0.5, 1.0, 1.0] and best == 2  # learnt, then a plateau
    assert len(scores) < default.epochs  # stopped before the cap
    assert len(scores) == best + default.patience  # one epoch without improvement, then stop
    assert scores[best - 1] == max(scores) and scores[-1] <= scores[best - 1]
    assert metrics["validation"]["accuracy"] == pytest.approx(scores[best - 1])  # best epoch kept
    assert (f"teacher: stopping after epoch {len(scores)}, its validation score has not improved "
            f"for 1 epoch(s); keeping epoch {best}") in caplog.text


def test_without_patience_every_epoch_runs(toy_task, tiny_encoder_dir: Path, tmp_path: Path) -> None:
    training = TrainingConfig(epochs=3, patience=None, learning_rate=3e-3, batch_size=16)
    metrics = prepare_teacher(TeacherConfig(model=str(tiny_encoder_dir), training=training),
                              toy_task, 32, 0, "fixed", tmp_path / "model")
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]


def test_a_student_beating_an_under_trained_teacher_is_warned_about(
        tiny_csv: Path, tiny_encoder_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = build_config(overrides={
        "data.source": str(tiny_csv), "data.text_columns": ["sentence"],
        "data.label_column": "sentiment", "data.max_length": 32, "run.out": str(tmp_path / "run"),
        "teacher.model": str(tiny_encoder_dir), "teacher.training.epochs": 1,  # barely trained
        "teacher.training.learning_rate": 1e-5, "distill.student": "2", "distill.recipe": "gold",
        "distill.training.epochs": 3, "distill.training.learning_rate": 3e-3,
        "distill.training.batch_size": 16})
    pipeline.prepare_run(cfg, cfg.run.out, resume=False, force=True)
    with caplog.at_level(logging.WARNING, logger="kdedge"):
        pipeline.run(cfg, cfg.run.out, only=("data", "teacher", "distill"))
    teacher = pipeline.Manifest.load(cfg.run.out / "02_teacher").metrics["validation"]["accuracy"]
    student = pipeline.Manifest.load(cfg.run.out / "03_distill").metrics["validation"]["accuracy"]
    assert student - teacher > 0.01
    assert (f"The student beats its teacher on validation accuracy by {100 * (student - teacher):.1f} "
            f"points ({student:.4f} vs {teacher:.4f}): the teacher is under-trained") in caplog.text


def test_the_demo_teacher_stops_on_a_plateau_too() -> None:
    demo = build_config().teacher.training  # the demo preset
    assert (demo.epochs, demo.patience, demo.learning_rate) == (3, 1, 5e-5)

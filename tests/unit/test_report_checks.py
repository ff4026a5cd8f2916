"""The data checks and the under-trained-teacher check, as report.json carries them: the data
stage's real metrics on a CSV with known duplicates and classes, the other stages faked."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
from test_report import ACCURACY, P50, fake_metrics, write_run

from kdedge.config import DataConfig
from kdedge.data.stage import prepare
from kdedge.report.compare import build_report_from_run
from kdedge.report.render import render_markdown

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "kdedge" / "report" /
                     "schema.json").read_text(encoding="utf-8"))


def _data_metrics(tmp_path: Path) -> dict:
    """380 ham, 20 spam and one 'odd' text; 30 ham texts appear twice."""
    texts = [f"message {i}" for i in range(401)] + [f"message {i}" for i in range(30)]
    labels = ["ham"] * 380 + ["spam"] * 20 + ["odd"] + ["ham"] * 30
    source = tmp_path / "sms.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(source, index=False)
    out = tmp_path / "data"
    out.mkdir()
    return prepare(DataConfig(source=str(source)), 0, out)


def test_report_json_states_the_duplicates_and_the_label_warnings(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    metrics["data"] = _data_metrics(tmp_path)
    metrics["teacher"]["truncated"] = {"train": 3, "validation": 0, "test": 1}
    report = build_report_from_run(write_run(tmp_path / "run", metrics))
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    checks = report["data"]["checks"]
    assert checks["duplicates"]["exact"] == 30 and checks["duplicates"]["in_train"] == {
        "validation": 0, "test": 0}
    assert checks["truncated"] == {"train": 3, "validation": 0, "test": 1}
    assert checks["imbalance"]["heavy"] is True and set(checks["rare_classes"]) == {"odd", "spam"}
    duplicates = ("30 rows repeat another row's text (30 exactly, 0 once whitespace and case are "
                  "normalised); copies were kept in one split, so no validation or test text is in "
                  "train.")
    assert checks["warnings"][0] == duplicates
    assert checks["warnings"][1].startswith("Class 'odd' has 1 example in train, 0 examples in "
                                            "validation, 0 examples in test")
    assert checks["warnings"][3].startswith("The classes are imbalanced in train (ham 95%")
    notes = report["notes"]
    assert notes[:4] == checks["warnings"]
    assert notes[4] == ("4 texts (train 3, validation 0, test 1) are longer than data.max_length "
                        "tokens and were cut there; raise data.max_length if their ends matter.")
    assert duplicates in render_markdown(report)  # the warnings reach the page
    # with the imbalance the report leads with macro-F1 and the verdict is judged by it
    assert report["primary_metric"] == "macro_f1"
    assert report["quality_metrics"] == ["macro_f1", "accuracy"]
    assert report["recommendation"]["summary"].endswith(
        "keeping 96.6% of its test macro-F1 (0.8600 vs 0.8900).")


def test_a_student_that_beats_its_teacher_is_flagged_in_the_verdict(tmp_path: Path) -> None:
    weak = fake_metrics({**ACCURACY, "teacher-pytorch": 0.70}, P50)
    weak["distill"]["validation"]["accuracy"] = 0.742
    weak["teacher"]["best_epoch"] = 1
    report = build_report_from_run(write_run(tmp_path / "weak", weak))
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert report["training"]["teacher"]["best_epoch"] == 1
    flagged = report["training"]["student_beats_teacher"]
    assert flagged["margin"] == pytest.approx(0.042) and flagged["teacher_validation"] == 0.70
    assert report["recommendation"]["summary"].endswith(
        " Caution: The student beats its teacher on validation accuracy by 4.2 points (0.7420 vs "
        "0.7000): the teacher is under-trained, so the retention figures are measured against a "
        "weak reference; fine-tune the teacher longer (raise teacher.training.epochs and "
        "teacher.training.patience, or its learning_rate) and run again.")
    close = fake_metrics({**ACCURACY, "teacher-pytorch": 0.88}, P50)  # 0.88 vs 0.88: no warning
    report = build_report_from_run(write_run(tmp_path / "close", close))
    assert report["training"]["student_beats_teacher"] is None
    assert "Caution" not in report["recommendation"]["summary"]

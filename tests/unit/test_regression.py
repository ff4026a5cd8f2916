"""A regression task end to end on a tiny random BERT: a score the text tells is learnt by the
teacher, distilled (kd), exported, quantized, benchmarked and reported by Pearson."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from conftest import FILLER, POSITIVE
from test_pipeline import manifest, run_fresh, tiny_config

from kdedge import pipeline
from kdedge.bench.stats import latency_at

# Floors measured over five data / run seeds: the teacher reached Pearson 0.956-0.990, the
# student 0.971-0.996 and the int8 student within 0.0002 of it; an untrained teacher and student
# scored between -0.16 and 0.76.
PEARSON_FLOOR = 0.9


def score_rows(count: int, seed: int = 0) -> list[dict[str, object]]:
    """Sentences scored 5 x (share of their words that are positive): 0 to 5, with fractions."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        length, positive = rng.randint(4, 10), rng.randint(0, 4)
        words = rng.choices(FILLER, k=length - positive) + rng.choices(POSITIVE, k=positive)
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "score": round(5 * positive / length, 3)})
    return rows


@pytest.fixture(scope="module")
def regression_run(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression")
    csv = root / "scores.csv"
    pd.DataFrame(score_rows(400)).to_csv(csv, index=False)
    return run_fresh(tiny_config(csv, tiny_encoder_dir, root / "run", **{"data.label_column": "score"}))


def test_the_float_label_column_is_a_regression_task(regression_run: Path) -> None:
    data = manifest(regression_run, "data").metrics
    assert (data["task"], data["primary_metric"], data["labels"]) == ("regression", "pearson", ["score"])
    assert data["splits"] == {"train": 320, "validation": 40, "test": 40}
    assert data["label_stats"]["train"]["min"] == 0.0 and data["label_stats"]["train"]["max"] == 5.0
    teacher = manifest(regression_run, "teacher").metrics
    assert teacher["fine_tuned"] and set(teacher["history"][0]) >= {"validation_score", "train_loss"}


def test_teacher_student_and_int8_fit_the_score(regression_run: Path) -> None:
    teacher = manifest(regression_run, "teacher").metrics["test"]
    student = manifest(regression_run, "distill").metrics["test"]
    int8 = manifest(regression_run, "quantize").metrics["models"]["student-int8"]
    assert set(student) == {"pearson", "spearman", "mse", "examples"} and student["examples"] == 40
    assert teacher["pearson"] >= PEARSON_FLOOR
    assert student["pearson"] >= PEARSON_FLOOR and student["spearman"] >= PEARSON_FLOOR
    assert int8["test"]["pearson"] >= PEARSON_FLOOR
    assert abs(int8["test"]["pearson"] - student["pearson"]) <= 0.02
    assert int8["graph"]["matmul_int8"] == int8["graph"]["matmul_total"] == 18


def test_one_output_models_export_with_parity(regression_run: Path) -> None:
    exported = manifest(regression_run, "export").metrics["models"]
    for name, stage in (("teacher", "teacher"), ("student", "distill")):
        assert exported[name]["parity"]["passed"] and exported[name]["parity"]["max_abs_diff"] <= 1e-4
        pytorch = manifest(regression_run, stage).metrics["test"]
        assert exported[name]["test"]["pearson"] == pytest.approx(pytorch["pearson"], abs=1e-4)
    config = json.loads((regression_run / pipeline.stage_dirname("export") / "student"
                         / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}


def test_bench_and_report_speak_pearson(regression_run: Path) -> None:
    bench = manifest(regression_run, "bench").metrics
    assert all("@" in entry for entry in bench["skipped"]) and len(bench["models"]) == 4
    assert all(latency_at(model)["1"]["p50_ms"] > 0 for model in bench["models"].values())
    folder = regression_run / pipeline.stage_dirname("report")
    text = (folder / "report.json").read_text()
    report = json.loads(text)
    assert report["primary_metric"] == "pearson" and report["per_class"] is None
    int8 = next(row for row in report["artifacts"] if row["name"] == "student-int8")
    assert set(int8["test"]) == {"pearson", "spearman", "mse", "examples"}
    assert int8["retained_pearson"] > 0.9
    assert "accuracy" not in text.replace("min_retained_accuracy", "")
    md = (folder / "report.md").read_text()
    assert "| Test Pearson | Spearman | MSE |" in md and "test Pearson" in md
    assert "accuracy" not in md.lower()


def test_the_bundle_predicts_the_evaluated_scores(regression_run: Path) -> None:
    import importlib.util

    import numpy as np
    from transformers import AutoTokenizer

    from kdedge.data.dataset import load_task
    from kdedge.evaluate import onnx_logits

    bundle = regression_run / pipeline.stage_dirname("bundle") / "bundle"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["task"] == "regression"
    spec = importlib.util.spec_from_file_location("regression_predict", bundle / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = load_task(regression_run / pipeline.stage_dirname("data")).splits["test"].texts
    results = module.predict(texts, batch_size=64, folder=bundle)  # the evaluation's batches:
    # dynamic int8 scales activations per batch, so other batches move the score slightly
    expected = onnx_logits(bundle, AutoTokenizer.from_pretrained(bundle), texts, 32)[:, 0]
    assert all(set(r) == {"score"} for r in results)
    assert np.allclose([r["score"] for r in results], expected, atol=1e-5)
    card = (bundle / "README.md").read_text()
    row = next(r for r in json.loads((regression_run / pipeline.stage_dirname("report")
                                      / "report.json").read_text())["artifacts"]
               if r["name"] == meta["artifact"])
    assert f"| Test Pearson | {row['test']['pearson']:.4f} |" in card
    assert "## Quality" in card and "accuracy" not in card.lower()

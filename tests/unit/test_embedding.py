"""The embedding task kind: its metrics on fixed vectors, and the whole chain on a tiny encoder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from test_pipeline import TINY, manifest, run_fresh

from kdedge import pipeline
from kdedge.config import build_config
from kdedge.errors import KdedgeError
from kdedge.report.compare import build_report_from_run
from kdedge.tasks.embedding_work import embedding_metrics


def test_metrics_of_the_teacher_against_itself_are_perfect() -> None:
    vectors = np.random.default_rng(0).normal(size=(30, 8))
    assert embedding_metrics(vectors, vectors) == {"cosine": 1.0, "spearman": 1.0,
                                                   "recall_at_10": 1.0, "examples": 30}


def test_metrics_on_fixed_vectors() -> None:
    teacher = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    student = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, -1.0]])
    got = embedding_metrics(student, teacher, k=1)
    # cosines 1, 0.96, 1, 0 -> mean 0.74
    assert got["cosine"] == pytest.approx(0.74)
    # nearest neighbours (teacher / student): 0 -> 1 / 1, 1 -> 0 / 2, 2 -> 1 / 1, 3 -> 2 / 0
    assert got["recall_at_10"] == pytest.approx(0.5)
    # pair similarities (01 02 03 12 13 23): teacher [.8, 0, -1, .6, -.8, 0], student
    # [.6, 0, 0, .8, -.8, -1]; ranks [6, 3.5, 1, 5, 2, 3.5] and [5, 3.5, 3.5, 6, 2, 1]: 9.75 / 17
    assert got["spearman"] == pytest.approx(9.75 / 17, abs=1e-6)


@pytest.fixture(scope="module")
def embedding_run(tiny_csv: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # no label column: any text column will do
    import pandas as pd

    texts = pd.read_csv(tiny_csv)[["sentence"]]
    csv = tmp_path_factory.mktemp("texts") / "texts.csv"
    texts.to_csv(csv, index=False)
    overrides = {**TINY, "data.source": str(csv), "data.task": "embedding",
                 "data.label_column": "none", "teacher.model": str(tiny_encoder_dir),
                 "distill.training.epochs": 4, "distill.vocabulary": "trim",
                 "run.out": str(tmp_path_factory.mktemp("runs") / "emb")}
    cfg = build_config(overrides=overrides)
    return cfg, run_fresh(cfg)


def test_the_student_learns_the_teachers_embedding(embedding_run) -> None:
    _, run_dir = embedding_run
    teacher = manifest(run_dir, "teacher").metrics
    distill = manifest(run_dir, "distill").metrics
    assert teacher["fine_tuned"] is False and teacher["test"]["cosine"] == 1.0
    history = [row["validation_score"] for row in distill["history"]]
    assert history[-1] > history[0]  # training moves the student towards the teacher
    assert distill["test"]["cosine"] > 0.9
    assert distill["student"]["num_layers"] == 2 and distill["student"]["projection"] is False
    # the toy texts use every piece of the tiny vocabulary, so trimming keeps all 33
    assert distill["student"]["vocabulary"] == {"vocabulary": "trim", "size": 33, "teacher_size": 33}
    export = manifest(run_dir, "export").metrics["models"]
    for name in ("teacher", "student"):
        assert export[name]["parity"]["passed"] and export[name]["parity"]["max_abs_diff"] < 1e-4
    assert export["student"]["test"]["cosine"] == pytest.approx(distill["test"]["cosine"], abs=1e-4)
    int8 = manifest(run_dir, "quantize").metrics["models"]["student-int8"]
    assert int8["gate"]["metric"] == "cosine" and int8["test"]["cosine"] > 0.85


def test_report_and_bundle_work_as_for_a_classifier(embedding_run) -> None:
    _, run_dir = embedding_run
    report = build_report_from_run(run_dir)
    assert report["task"] == "embedding" and report["primary_metric"] == "cosine"
    assert report["quality_metrics"] == ["cosine", "spearman", "recall_at_10"]
    schema = Path(__file__).resolve().parents[2] / "kdedge" / "report" / "schema.json"
    jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(report)
    rows = {row["name"]: row for row in report["artifacts"]}
    assert rows["teacher-onnx"]["test"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert "p50_ms" in json.dumps(rows["student-int8"])  # benched
    assert "teacher-pytorch" not in manifest(run_dir, "bench").metrics["models"]
    md = (run_dir / pipeline.stage_dirname("report") / "report.md").read_text()
    html = (run_dir / pipeline.stage_dirname("report") / "report.html").read_text()
    for text in (md, html):  # the kind's own section, in both formats
        assert "Semantic search quality" in text and "recall@10 of the teacher" in text
    bundle = run_dir / pipeline.stage_dirname("bundle") / "bundle"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["output"] == "embedding"
    out = subprocess.run([sys.executable, str(bundle / "predict.py"), "the film was good"],
                         capture_output=True, text=True, check=True).stdout
    vector = np.array(json.loads(out)["embedding"])
    assert vector.shape == (32,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_a_recurrent_student_is_refused_for_embeddings(embedding_run, tmp_path: Path) -> None:
    cfg, run_dir = embedding_run
    shutil.copytree(run_dir, tmp_path / "run")
    bad = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"student": "bilstm"})})
    with pytest.raises(KdedgeError, match=r"distill.student 'bilstm' is not an encoder"):
        pipeline.run(bad, tmp_path / "run")


def test_a_classification_recipe_is_refused_for_embeddings() -> None:
    with pytest.raises(KdedgeError, match=r"distill.recipe annealing does not fit data.task "
                                          r"embedding; use one of kd,"):
        build_config(overrides={"data.task": "embedding", "distill.recipe": "annealing"})

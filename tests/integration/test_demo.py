"""The whole `kdedge compress` on a slice of the real demo: MiniLM teacher, Rotten Tomatoes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from headless import CHROMIUM, check_in_browser

from kdedge.artifacts import Manifest
from kdedge.data.dataset import load_task
from kdedge.pipeline import STAGE_NAMES, stage_dirname
from kdedge.report.html import CHARTS
from kdedge_cli import main as cli_main

pytestmark = pytest.mark.integration

# 800 examples give the teacher few steps: two epochs at a higher rate reach ~0.77 test accuracy.
SLICE = ["--student", "3",  # the 3-layer cut (its int8 graph is checked below); the default,
         # the student search, is tested on the tiny model (tests/unit/test_search_run.py)
         "--max-train-samples", "800", "--set", "data.max_eval_samples=300",
         "--set", "teacher.training.epochs=2", "--set", "teacher.training.learning_rate=1.5e-4",
         "--epochs", "3", "--set", "bench.min_duration_s=0.5",
         "--set", "bench.min_runs=10", "--set", "bench.warmup_runs=3"]


def test_compress_on_a_slice_of_the_demo(demo_cache: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "demo"
    monkeypatch.setattr(sys, "argv", ["kdedge", "compress", "--out", str(run_dir), *SLICE])
    monkeypatch.setitem(cli_main._state, "debug", True)  # a failure here should show its traceback
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Recommended: " in out

    metrics = {name: Manifest.load(run_dir / stage_dirname(name)).metrics for name in STAGE_NAMES}
    assert metrics["data"]["splits"] == {"train": 800, "validation": 300, "test": 300}
    assert metrics["data"]["labels"] == ["fresh", "rotten"]
    teacher = metrics["teacher"]
    assert teacher["fine_tuned"] and teacher["parameters"] > 22_000_000
    assert teacher["test"]["accuracy"] >= 0.70  # an untrained head scores about 0.5
    assert metrics["distill"]["student"]["layers"] == [1, 3, 5]
    for name in ("teacher", "student"):
        assert metrics["export"]["models"][name]["parity"]["max_abs_diff"] <= 1e-4
    int8 = metrics["quantize"]["models"]["student-int8"]
    assert int8["graph"]["matmul_int8"] == int8["graph"]["matmul_total"] == 3 * 8 + 2
    assert int8["test"]["accuracy"] >= 0.65
    assert int8["test"]["accuracy"] >= 0.85 * teacher["test"]["accuracy"]
    assert int8["bytes"] * 3 < metrics["export"]["models"]["teacher"]["bytes"]
    assert set(metrics["bench"]["models"]) == {"teacher-pytorch", "teacher-onnx", "student-onnx",
                                               "student-int8"}
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    assert report["recommendation"]["artifact"] in {"teacher-onnx", "student-onnx", "student-int8"}
    assert (run_dir / stage_dirname("report") / "report.md").read_text().count("student-int8") >= 2
    schema = Path(__file__).resolve().parents[2] / "kdedge" / "report" / "schema.json"
    jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(report)
    rows = {row["name"]: row for row in report["artifacts"]}
    if metrics["bench"]["targets"] == ["cpu"]:  # no GPU here: no GPU rows and no GPU warnings
        assert [name for name in rows if "@" in name] == []
        assert [n for n in report["notes"] if "cuda" in n.lower() or "tensorrt" in n.lower()] == []
    # the report's int8 accuracy is what predict.py gives one text at a time, on the same rows
    shipped = tmp_path / "int8-bundle"
    shutil.copytree(run_dir / stage_dirname("bundle") / "bundle", shipped)
    shutil.copyfile(run_dir / stage_dirname("quantize") / "student-int8" / "model.onnx",
                    shipped / "model.onnx")
    spec = importlib.util.spec_from_file_location("demo_predict", shipped / "predict.py")
    assert spec is not None and spec.loader is not None
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    test_split = load_task(run_dir / stage_dirname("data")).splits["test"]
    got = [r["label_id"] for r in predict.Predictor(shipped).predict(test_split.texts, batch_size=1)]
    assert round(float(np.mean(np.array(got) == test_split.labels)), 6) == \
        rows["student-int8"]["test"]["accuracy"]
    disagree = metrics["export"]["disagreements"]
    assert 0 < disagree["count"] < 300 and len(disagree["examples"]) == min(8, disagree["count"])
    if CHROMIUM is None:
        pytest.skip("chromium is not installed, so report.html was not opened in a browser")
    seen = check_in_browser(run_dir / stage_dirname("report") / "report.html",
                            tmp_path / "browser", CHARTS)
    if os.environ.get("KDEDGE_SAVE_SCREENSHOT"):
        shutil.copyfile(seen.screenshots[0],
                        Path(__file__).resolve().parents[2] / "docs" / "report-screenshot.png")

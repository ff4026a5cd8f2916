"""report.html in a real browser: headless Chromium loads it from disk with no console error,
no request beyond the page itself, and every chart drawn.

Skipped only when chromium is absent (`.ci/run` installs it). The demo's own report.html is
opened by tests/integration/test_demo.py, where KDEDGE_SAVE_SCREENSHOT=1 copies its screenshot
to docs/report-screenshot.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from headless import CHROMIUM, check_in_browser
from test_report import ACCURACY, P50, fake_metrics, write_run

from kdedge.report.compare import build_comparison, build_report_from_run
from kdedge.report.html import CHARTS
from kdedge.report.render import render, render_comparison

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: "
                                "apt-get install chromium; .ci/run installs it)")


def test_report_html_opens_in_chromium(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    metrics["distill"]["history"] = [
        {"epoch": e, "phase": phase, "train_loss": 1.0 / e + k, "validation_accuracy": 0.8 + e / 50,
         "seconds": 2.0} for k, phase in enumerate(("warmup", "main")) for e in (1, 2, 3)]
    metrics["export"]["disagreements"] = {
        "split": "test", "examples_total": 100, "count": 3,
        "examples": [{"index": 4, "text": "<img src=https://example.com/x.png> loud", "text_pair": None,
                      "gold": "pos", "teacher": "pos", "teacher_confidence": 0.97,
                      "student": "neg", "student_confidence": 0.6}]}
    page = tmp_path / "report.html"
    page.write_text(render("html", build_report_from_run(write_run(tmp_path / "run", metrics))),
                    encoding="utf-8")
    seen = check_in_browser(page, tmp_path / "browser", CHARTS)
    found = {c["name"]: c for c in json.loads(seen.evaluated)}
    assert "student-int8" in found["quality-vs-latency"]["texts"]  # points are labelled
    assert {"student main", "student warmup", "teacher"} <= set(found["training-loss"]["texts"])


def test_comparison_html_opens_in_chromium(tmp_path: Path) -> None:
    runs = [(name, build_report_from_run(write_run(tmp_path / name, fake_metrics(ACCURACY, p50))))
            for name, p50 in (("a", P50), ("b", {k: v / 2 for k, v in P50.items()}))]
    page = tmp_path / "comparison.html"
    page.write_text(render_comparison("html", build_comparison(runs)), encoding="utf-8")
    check_in_browser(page, tmp_path / "browser", ("runs-quality-vs-latency",))

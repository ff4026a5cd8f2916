"""report.html in a real browser: headless Chromium loads it from disk with no console error,
no request beyond the page itself, and every chart drawn.

Skipped only when chromium is absent (`.ci/run` installs it). KDEDGE_REPORT_HTML=PATH also
checks an existing report (a demo run's); KDEDGE_SAVE_SCREENSHOT=1 copies the screenshot of the
verdict and the first charts to docs/report-screenshot.png.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from headless import CHART_PROBE, CHROMIUM, PageVisit, visit
from test_report import ACCURACY, P50, fake_metrics, write_run

from kdedge.report.compare import build_comparison, build_report_from_run
from kdedge.report.html import CHARTS
from kdedge.report.render import render, render_comparison

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: "
                                "apt-get install chromium; .ci/run installs it)")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "report-screenshot.png"
OVERVIEW = 1500  # CSS pixels from the top: the verdict and the first charts


def check_in_browser(page: Path, workdir: Path, charts: tuple[str, ...]) -> PageVisit:
    """Assert what a reader's browser must see; return the visit for further checks."""
    seen = visit(page, workdir, CHART_PROBE, {"overview.png": (0, OVERVIEW), "full-page.png": True})
    assert seen.errors == []
    assert seen.requests == [seen.url]  # the page itself, nothing fetched
    found = {c["name"]: c for c in json.loads(seen.evaluated)}
    assert set(found) == set(charts)
    for name in charts:
        chart = found[name]
        assert chart["width"] > 300 and chart["height"] > 150, name
        assert chart["areas"] >= 2, f"{name} draws nothing: {chart}"
        assert chart["texts"][0], f"{name} has no title"
    for shot in seen.screenshots:
        assert shot.stat().st_size > 20_000  # a blank page compresses to a few kB
    return seen


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


@pytest.mark.skipif(not os.environ.get("KDEDGE_REPORT_HTML"),
                    reason="set KDEDGE_REPORT_HTML to a report.html to check it")
def test_an_existing_report_opens_in_chromium(tmp_path: Path) -> None:
    seen = check_in_browser(Path(os.environ["KDEDGE_REPORT_HTML"]), tmp_path, CHARTS)
    if os.environ.get("KDEDGE_SAVE_SCREENSHOT"):
        shutil.copyfile(seen.screenshots[0], DOCS_SCREENSHOT)

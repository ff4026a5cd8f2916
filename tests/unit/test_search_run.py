"""distill.student auto on the tiny teacher: every candidate probed, the first epochs for all,
the finalists to the end, the rule's winner shipped, and a search interrupted mid-way resumes
to the same winner without training finished epochs again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import manifest, tiny_config

from kdedge import pipeline
from kdedge.artifacts import sha256_file
from kdedge.search.probe import candidate_name

CANDIDATES = ["2", "1", "bilstm:hidden_size=16,init_embeddings=true"]
SEARCH = {"distill.student": "auto", "distill.search.candidates": CANDIDATES,
          "distill.search.first_epochs": 1, "distill.search.cost": 1.0,
          "distill.search.min_retention": 0.9, "distill.training.epochs": 3,
          "bench.warmup_runs": 1, "bench.min_runs": 3, "bench.min_duration_s": 0}
STAGES = ("data", "teacher", "distill")


def _search(tiny_csv: Path, tiny_encoder_dir: Path, out: Path, **extra: Any) -> dict[str, Any]:
    cfg = tiny_config(tiny_csv, tiny_encoder_dir, out, **SEARCH, **extra)
    pipeline.prepare_run(cfg, out, resume=False, force=True)
    pipeline.run(cfg, out, only=STAGES)
    return manifest(out, "distill").metrics


def _latency_by_size(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A probe latency that is a function of the graph (1 ms per MB), so two searches agree:
    the tiny candidates' measured times are within each other's noise."""
    ms = row["size_bytes"] / 1e6
    return {"1": {"p50_ms": ms, "mean_ms": ms}}


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tiny teacher fine-tuned here stays out of the other tests' cache, whose tests
    expect to fine-tune it themselves; the probe still builds, exports, quantizes and times
    every candidate, but ranks them by a latency that does not move between runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDEDGE_CACHE", str(tmp_path_factory.mktemp("search-cache")))
        patch.setattr("kdedge.search.probe.latency_at", _latency_by_size)
        yield


@pytest.fixture(scope="module")
def searched(tiny_csv: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> dict[str, Any]:
    return _search(tiny_csv, tiny_encoder_dir, tmp_path_factory.mktemp("search") / "run")


def test_every_candidate_is_probed_and_trained_then_the_rule_picks(searched: dict[str, Any],
                                                                  ) -> None:
    found = searched["search"]
    rows = {row["name"]: row for row in found["candidates"]}
    assert list(rows) == [candidate_name(spec) for spec in CANDIDATES] == ["cut-2", "cut-1",
        "bilstm-hidden_size-16-init_embeddings-true"]
    teacher = found["teacher"]
    assert teacher["precision"] == "fp32" and teacher["latency_ms"] > 0
    for row in rows.values():
        assert row["latency_ms"] > 0 and row["precision"] in ("fp32", "int8")
        assert row["speedup"] == pytest.approx(teacher["latency_ms"] / row["latency_ms"])
        assert row["retention"] == pytest.approx(row["validation_score"] / teacher["validation_score"])
        assert not row["pruned_by_latency"]
    finalists = [name for name, row in rows.items() if row["finalist"]]
    assert len(finalists) == 1
    # the probe counts in the search's cost, as recorded (a resumed search counts the same)
    schedule = found["schedule"]
    assert schedule["probe_s"] > 0
    assert schedule["spent_s"] == pytest.approx(
        schedule["probe_s"] + sum(row["seconds"] for row in rows.values()), abs=0.2)
    assert [rows[n]["epochs"] for n in rows] == [3 if n in finalists else 1 for n in rows]
    winner = rows[found["winner"]]
    sources = {"cut-2": "teacher layers [1, 3]", "cut-1": "teacher layers [3]"}
    assert winner["winner"] and searched["student"]["source"] == sources.get(found["winner"],
                                                                            found["student"])
    # the rule on the recorded numbers: the fastest within the retention budget, else the best
    good = [r for r in rows.values() if r["retention"] >= 0.9]
    expected = (min(good, key=lambda r: r["latency_ms"]) if good
                else max(rows.values(), key=lambda r: r["retention"]))
    assert found["winner"] == expected["name"] and found["within_budget"] == bool(good)
    assert searched["validation"]["accuracy"] == pytest.approx(winner["validation_score"])
    assert searched["history"] and len(searched["history"]) == winner["epochs"]


def test_latencies_measured_on_the_target_rank_and_prune_the_candidates(
        tiny_csv: Path, tiny_encoder_dir: Path, tmp_path: Path, searched: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the device, cut-2 (the slowest here) is the fastest and the only one within the
    latency budget: the search reads the device's times exactly, probes nothing here, trains
    only cut-2 and ships it."""
    from conftest import probe_results

    from kdedge.bench.stats import latency_at
    from kdedge.report import builders
    from kdedge.report.render import markdown as render_markdown
    from kdedge.search.probe import CandidateSpec

    here = {row["name"]: row["latency_ms"] for row in searched["search"]["candidates"]}
    assert max(here, key=here.get) == "cut-2"
    bilstm = candidate_name(CANDIDATES[2])
    times = {"teacher": {"fp32": 20.0}, "cut-2": {"fp32": 3.0, "int8": 1.5},
             "cut-1": {"fp32": 9.0, "int8": 8.0}, bilstm: {"fp32": 6.0, "int8": 7.0}}
    specs = [CandidateSpec("teacher", "4", "full", ("fp32",)),
             *(CandidateSpec(candidate_name(s), s, "trim") for s in CANDIDATES)]
    results = probe_results(tmp_path / "edge.json", times, specs, target="rpi5", threads=4,
                            sequence_length=16)  # what 95% of the toy texts fit
    monkeypatch.setattr("kdedge.search.run.probe", lambda *a: pytest.fail("probed here"))
    monkeypatch.setattr("kdedge.search.probe.latency_at", latency_at)  # the times as written
    found = _search(tiny_csv, tiny_encoder_dir, tmp_path / "run", **{
        "distill.search.target_latency": str(results),
        "distill.search.max_latency_ms": 5.0})["search"]
    rows = {row["name"]: row for row in found["candidates"]}
    assert found["latency_source"] == ("measured on rpi5 (kdedge bench on a probe bundle), 4 "
                                       "thread(s), sequence length 16")
    assert found["latency_file"] == {"path": str(results.resolve()),
                                     "sha256": sha256_file(results)}
    assert {n: (r["latency_ms"], r["precision"], r["speedup"]) for n, r in rows.items()} == {
        "cut-2": (1.5, "int8", 20.0 / 1.5), "cut-1": (8.0, "int8", 2.5), bilstm: (6.0, "fp32", 20 / 6)}
    assert (found["teacher"]["latency_ms"], found["teacher"]["precision"]) == (20.0, "fp32")
    assert [n for n, r in rows.items() if r["pruned_by_latency"]] == ["cut-1", bilstm]
    assert [rows[n]["epochs"] for n in rows] == [3, 0, 0]
    assert found["winner"] == "cut-2" and found["budget"]["latency_limit_ms"] == 5.0
    assert found["schedule"]["probe_s"] == 0  # nothing was built or timed here
    shown = render_markdown("run", "", [builders.search({"training": {"distill": {"search": found}}})])
    assert ("Latencies were measured on rpi5 (kdedge bench on a probe bundle), 4 thread(s), "
            "sequence length 16, untrained at each candidate's real shapes (the teacher's ONNX "
            "fp32: 20.00 ms)") in shown


def test_a_latency_budget_no_candidate_meets_stops_before_any_training(
        tiny_csv: Path, tiny_encoder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import error_line, run_cli

    from kdedge.distill import classifier

    monkeypatch.setattr(classifier, "distill_student", lambda *a: pytest.fail("trained"))
    cfg = tiny_config(tiny_csv, tiny_encoder_dir, tmp_path / "run", **SEARCH)
    args = [f"--set={k}={v}" for k, v in {"distill.search.min_speedup": 1000}.items()]
    code, _, err = run_cli(["compress", "--data", str(tiny_csv), "--teacher", str(tiny_encoder_dir),
                            "--out", str(tmp_path / "run"), *_cli(cfg), *args], capsys, monkeypatch)
    assert code == 2
    assert error_line(err) == (
        "error: No candidate student meets the latency budget, so none was trained; raise "
        "--max-latency-ms, lower --min-speedup or widen the candidates.")


def _cli(cfg: Any) -> list[str]:
    """The tiny run's settings as --set options."""
    import json

    from test_pipeline import TINY

    settings = {**TINY, **SEARCH}
    settings.pop("data.source", None)
    return [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}"
            for k, v in settings.items() if k not in ("teacher.model", "run.out")]


def test_an_interrupted_search_resumes_to_the_same_winner(
        tiny_csv: Path, tiny_encoder_dir: Path, tmp_path: Path, searched: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.distill import classifier

    calls: list[tuple[str, Any]] = []
    real = classifier.distill_student

    def counting(ctx: Any, task: Any, shared: Any, spec: str, *args: Any) -> Any:
        calls.append((spec, args[-1]))
        if len(calls) == 3 and not resumed:
            raise KeyboardInterrupt  # killed while the third candidate is about to train
        return real(ctx, task, shared, spec, *args)

    monkeypatch.setattr(classifier, "distill_student", counting)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        _search(tiny_csv, tiny_encoder_dir, tmp_path / "run")
    resumed = True
    cfg = tiny_config(tiny_csv, tiny_encoder_dir, tmp_path / "run", **SEARCH)
    pipeline.run(cfg, tmp_path / "run", resume=True, only=STAGES)
    again = manifest(tmp_path / "run", "distill").metrics["search"]
    assert again["winner"] == searched["search"]["winner"]
    assert [r["validation_score"] for r in again["candidates"]] == [
        r["validation_score"] for r in searched["search"]["candidates"]]


def test_the_report_shows_every_candidate_the_budget_and_the_reason(searched: dict[str, Any],
                                                                    ) -> None:
    from kdedge.report import builders
    from kdedge.report.render import markdown as render_markdown

    found = searched["search"]
    section = builders.search({"training": {"distill": {"search": found}}})
    table = next(b for b in section.blocks if hasattr(b, "rows"))
    assert len(table.rows) == len(CANDIDATES) and len(table.marked) == 1
    assert str(table.rows[table.marked[0]][0]) == f"{found['winner']} (winner)"
    chart = next(b for b in section.blocks if hasattr(b, "svg"))
    assert chart.svg.count('class="budget"') == 1  # retention only: no latency budget was set
    assert chart.svg.count("<circle") >= len(CANDIDATES)
    markdown = render_markdown("run", "", [section])
    assert "## Student search" in markdown and "keeping at least 90.0% of the teacher" in markdown
    assert builders.search({"training": {"distill": {}}}) is None

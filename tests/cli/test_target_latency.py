"""`kdedge compress --probe-bundle DIR` and `--target-latency FILE`: their misuse and a device
results file that does not time this run's candidates fail before any stage, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import error_line, probe_results, run_cli

TOY = ["--text-column", "sentence", "--label-column", "sentiment", "--set",
       "data.max_length=32", "--set", "distill.search.candidates=['1']"]
REDO = ("re-create the probe bundle (kdedge compress ... --probe-bundle DIR) with this run's "
        "settings and bench it on the device again (kdedge bench DIR).")


def _candidates(vocabulary: str = "trim") -> list[object]:
    from kdedge.search.probe import CandidateSpec

    return [CandidateSpec("teacher", "2", "full", ("fp32",)), CandidateSpec("cut-1", "1", vocabulary)]


TIMES = {"teacher": {"fp32": 9.0}, "cut-1": {"fp32": 4.0, "int8": 3.0}}


def _compress(args: list[str], tiny_csv: Path, tiny_model_dir: Path, out: Path,
              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              ) -> tuple[int, str, str]:
    return run_cli(["compress", "--data", str(tiny_csv), "--teacher", str(tiny_model_dir), *TOY,
                    "--out", str(out), *args], capsys, monkeypatch)


def test_a_good_device_file_passes_the_checks_and_is_kept_in_the_config(
        tiny_csv: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    results = probe_results(tmp_path / "edge.json", TIMES, _candidates())
    code, _, err = _compress(["--student", "auto", "--target-latency", str(results), "--dry-run"],
                             tiny_csv, tiny_model_dir, tmp_path / "run", capsys, monkeypatch)
    assert code == 0, err
    resolved = yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())
    assert resolved["distill"]["search"]["target_latency"] == str(results)


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "error: Target latency file {file} does not exist; pass the results file `kdedge "
                "bench PROBE_BUNDLE` wrote on the device (--target-latency)."),
    ("other vocabulary", "error: Target latency file {file} timed candidate 'cut-1' as student 1 "
                         "with vocabulary full, but this run's is student 1 with vocabulary trim; "
                         + REDO),
    ("other length", "error: Target latency file {file} was measured at sequence length 128, but "
                     "this run times its candidates at 32 (bench.sequence_lengths, else "
                     "the data's own); " + REDO),
    ("fixed student", "error: distill.search.target_latency times the candidates of the student "
                      "search, but distill.student is 2; pass --student auto, or drop "
                      "--target-latency."),
])
def test_a_device_file_that_does_not_fit_the_run_fails_before_any_stage(
        case: str, message: str, tiny_csv: Path, tiny_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "edge.json"
    if case != "missing":
        probe_results(file, TIMES, _candidates("full" if case == "other vocabulary" else "trim"),
                      sequence_length=128 if case == "other length" else 32)
    student = "2" if case == "fixed student" else "auto"
    length = ["--set", "bench.sequence_lengths=[32]"] if case == "other length" else []
    code, _, err = _compress(["--student", student, "--target-latency", str(file), *length], tiny_csv,
                             tiny_model_dir, tmp_path / "run", capsys, monkeypatch)
    assert code == 2 and error_line(err) == message.format(file=file)
    assert not (tmp_path / "run").exists()


def test_probe_bundle_misuse_fails_before_any_stage(
        tiny_csv: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    results = probe_results(tmp_path / "edge.json", TIMES, _candidates())
    for args, message in (
            (["--student", "2", "--probe-bundle", str(tmp_path / "b")],
             "error: --probe-bundle writes the candidates of the student search, but "
             "distill.student is 2; pass --student auto."),
            (["--student", "auto", "--probe-bundle", str(tmp_path / "b"), "--target-latency",
              str(results)],
             "error: --probe-bundle writes the graphs to time on the device and --target-latency "
             "reads their times back; pass only one of the two."),
            (["--student", "auto", "--probe-bundle", str(busy)],
             f"error: --probe-bundle {busy} exists and is not a probe bundle; pass a new or empty "
             "folder (an earlier probe bundle there is replaced).")):
        code, _, err = _compress(args, tiny_csv, tiny_model_dir, tmp_path / "run", capsys,
                                 monkeypatch)
        assert code == 2 and error_line(err) == message
        assert not (tmp_path / "run").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

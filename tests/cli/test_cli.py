"""The command line: instant help, dry runs, and one-line errors with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import error_line, run_cli

from kdedge_cli import main as cli_main
from kdedge_cli.main import main


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from kdedge_cli.main import app; "
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'optimum') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "kdedge_cli", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for command in ("compress", "distill", "export", "quantize", "bench", "report"):
        assert command in help_text


def test_dry_run_writes_the_resolved_config_and_nothing_else(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(["compress", "--dry-run", "--out", str(out_dir), "--student", "2",
                            "--set", "distill.temperature=4", "--set", "bench.batch_sizes=[1, 8]"],
                           capsys, monkeypatch)
    assert code == 0
    resolved = yaml.safe_load((out_dir / "config.resolved.yaml").read_text())
    assert resolved["distill"]["student"] == "2" and resolved["distill"]["temperature"] == 4
    assert resolved["bench"]["batch_sizes"] == [1, 8]
    assert resolved["data"]["max_train_samples"] == 4000  # the demo preset
    assert str(out_dir / "config.resolved.yaml") in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.resolved.yaml", "run.json"]


@pytest.mark.parametrize(("args", "message"), [
    (["compress", "--data", "./missing.csv"],
     "error: Data path './missing.csv' does not exist; check --data"),
    (["compress", "--set", "distill.temprature=3"],
     "error: Unknown config key 'distill.temprature'; did you mean 'distill.temperature'?"),
    (["compress", "--set", "distill.alpha=2"],
     "error: Invalid value 2 for distill.alpha: Input should be less than or equal to 1."),
    (["compress", "--set", "oops"], "error: --set 'oops' is not key=value"),
    (["compress", "--config", "nope.yaml"], "error: Config file nope.yaml does not exist"),
    (["export", "not-a-run"], "error: not-a-run is not a kdedge run directory"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2
    assert error_line(err).startswith(message), err


def test_unknown_column_lists_the_available_ones(tiny_csv: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["compress", "--data", str(tiny_csv), "--text-column", "review",
                            "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert code == 2
    assert error_line(err) == ("error: Column 'review' is not in the data; available columns: "
                           "sentence, sentiment. Name the right one with --text-column.")


def test_hub_unreachable_says_so(tiny_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(["compress", "--data", str(tiny_csv), "--text-column", "sentence",
                            "--label-column", "sentiment", "--teacher", "no-such-org/no-such-model",
                            "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert code == 2 and not (tmp_path / "r").exists()  # found before any stage ran
    assert error_line(err) == ("error: HF_HUB_OFFLINE is set, so teacher 'no-such-org/no-such-model' "
                               "cannot be downloaded from the Hugging Face hub, and it is not in its "
                               "cache; unset HF_HUB_OFFLINE, or pass a local model directory.")


def test_an_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = str(tmp_path / "run")
    assert run_cli(["compress", "--dry-run", "--out", out_dir], capsys, monkeypatch)[0] == 0
    code, _, err = run_cli(["compress", "--out", out_dir], capsys, monkeypatch)
    assert code == 2
    assert "already holds a run; pass --resume to continue it, --force to start it over" in err


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.errors import KdedgeError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["kdedge", "--debug", "compress", "--data", "./missing.csv"])
    monkeypatch.setitem(cli_main._state, "debug", False)  # restored after the test
    with pytest.raises(KdedgeError, match="does not exist"):
        main()


def test_an_empty_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n,\n")
    code, _, err = run_cli(["compress", "--data", str(empty), "--out", str(tmp_path / "r")],
                           capsys, monkeypatch)
    assert code == 2
    assert error_line(err) == (f"error: The data in {str(empty)!r} has no rows with both text and "
                               "label; check the file and the column names.")


@pytest.mark.parametrize(("given", "stored"), [("0.02", 0.02), ("1%", "1%")])
def test_max_accuracy_drop_and_strict_reach_the_quantize_config(
        given: str, stored: float | str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "run"
    code, _, _ = run_cli(["compress", "--dry-run", "--out", str(out_dir), "--max-accuracy-drop",
                          given, "--strict"], capsys, monkeypatch)
    assert code == 0
    resolved = yaml.safe_load((out_dir / "config.resolved.yaml").read_text())
    assert resolved["quantize"]["max_drop"] == stored and resolved["quantize"]["strict"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--max-accuracy-drop", "lots"],
     "error: Invalid value 'lots' for quantize.max_drop: write e.g. 0.01 (absolute) or \"1%\""),
    (["--max-accuracy-drop", "1.5"],
     "error: Invalid value 1.5 for quantize.max_drop: give an absolute drop in [0, 1)"),
    (["--set", "quantize.activation_type=int8"],
     "error: Invalid value {'activation_type': 'int8'} for quantize: quantize.activation_type "
     "int8 needs quantize.mode=static"),
    (["--set", "quantize.optimization=O4"], "error: Invalid value 'O4' for quantize.optimization"),
])
def test_bad_quantize_options_are_one_line(args: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["compress", "--dry-run", "--out", str(tmp_path / "r"), *args],
                           capsys, monkeypatch)
    assert code == 2
    assert error_line(err).startswith(message), err

"""Every model, student spec and column is checked before the first stage (and in --dry-run):
one error line, exit status 2, no run directory written. No network is simulated by pointing
HF_ENDPOINT at a closed loopback port, or by HF_HUB_OFFLINE; nothing else is contacted."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import error_line, run_cli

TOY = ["--text-column", "sentence", "--label-column", "sentiment"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """HF_ENDPOINT at a loopback port nothing listens on: connections are refused at once."""
    from kdedge import hf

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "")  # so that teardown restores what going offline sets
    import datasets.config
    import huggingface_hub.constants

    for module in (huggingface_hub.constants, datasets.config):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    hf.hub_unreachable.cache_clear()
    yield endpoint
    hf.hub_unreachable.cache_clear()


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
           out: Path) -> str:
    code, _, err = run_cli([*args, "--out", str(out)], capsys, monkeypatch)
    assert code == 2, err
    assert not out.exists()  # failed before the run directory, and so before any stage
    return error_line(err)


def test_a_hub_teacher_with_no_network_fails_in_one_line(
        no_network: str, tiny_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    line = _fails(["compress", "--data", str(tiny_csv), *TOY, "--teacher", "no-such-org/no-model"],
                  capsys, monkeypatch, tmp_path / "r")
    assert line == (f"error: No network ({no_network}: connection refused), so teacher "
                    "'no-such-org/no-model' cannot be downloaded from the Hugging Face hub, and it "
                    "is not in its cache; connect, or pass a local model directory.")
    assert "Retrying" not in capsys.readouterr().err


def test_a_hub_dataset_with_no_network_is_read_from_the_cache_only(
        no_network: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.config import DataConfig
    from kdedge.data.loaders import load_tables
    from kdedge.errors import KdedgeError

    with pytest.raises(KdedgeError, match=r"^Cannot load dataset 'no-such-org/no-data' from the "
                                          r"Hugging Face hub \("):
        load_tables(DataConfig(source="no-such-org/no-data"))
    import os

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"


@pytest.mark.parametrize(("student", "message"), [
    ("99", "error: Student layer count 99 must be between 1 and the teacher's 4 layers; change "
           "--student."),
    ("1,7", "error: Student layers '1,7' must be distinct teacher layer indices below 4; change "
            "--student."),
    ("bilstm:hidden=abc", "error: Student option 'hidden=abc' is not valid for bilstm; use "
                          "embedding_dim=..., hidden_size=..., num_layers=..., dropout=..., "
                          "init_embeddings=...."),
    ("./no-student", "error: Model path './no-student' does not exist; check the path, or pass a "
                     "hub id such as 'bert-base-uncased'."),
])
def test_a_bad_student_fails_the_dry_run(student: str, message: str, tiny_csv: Path,
                                         tiny_encoder_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _fails(["compress", "--data", str(tiny_csv), *TOY, "--teacher", str(tiny_encoder_dir),
                   "--student", student, "--dry-run"], capsys, monkeypatch, tmp_path / "r") == message


def test_a_bad_column_or_teacher_path_fails_the_dry_run(tiny_csv: Path, tiny_encoder_dir: Path,
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = _fails(["compress", "--data", str(tiny_csv), "--text-column", "text", "--label-column",
                   "sentiment", "--teacher", str(tiny_encoder_dir), "--dry-run"], capsys,
                  monkeypatch, tmp_path / "r")
    assert line == ("error: Column 'text' is not in the data; available columns: sentence, "
                    "sentiment. Name the right one with --text-column.")
    line = _fails(["compress", "--data", str(tiny_csv), *TOY, "--teacher", "./no-teacher",
                   "--dry-run"], capsys, monkeypatch, tmp_path / "r")
    assert line == ("error: Model path './no-teacher' does not exist; check the path, or pass a hub "
                    "id such as 'bert-base-uncased'.")
    code, out, err = run_cli(["compress", "--data", str(tiny_csv), *TOY, "--teacher",
                              str(tiny_encoder_dir), "--student", "2", "--dry-run", "--out",
                              str(tmp_path / "ok")], capsys, monkeypatch)
    assert code == 0 and out.strip().endswith("config.resolved.yaml"), err


def test_the_demo_teachers_layer_count_bounds_the_student_without_fetching_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge import demo

    assert not demo.teacher_cached()  # the tests' own empty cache: nothing is downloaded here
    assert _fails(["compress", "--student", "99", "--dry-run"], capsys, monkeypatch,
                  tmp_path / "r") == ("error: Student layer count 99 must be between 1 and the "
                                      "teacher's 6 layers; change --student.")


def test_a_missing_teacher_column_fails_the_dry_run(tiny_csv: Path, tiny_encoder_dir: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = _fails(["compress", "--data", str(tiny_csv), *TOY, "--teacher-text-column", "clean",
                   "--teacher", str(tiny_encoder_dir), "--dry-run"], capsys, monkeypatch,
                  tmp_path / "r")
    assert line == ("error: Column 'clean' is not in the data; available columns: sentence, "
                    "sentiment. Name the right one with --teacher-text-column.")
    line = _fails(["compress", "--data", str(tiny_csv), *TOY, "--teacher-text-column", "clean",
                   "--task", "seq2seq", "--method", "word-kd", "--teacher", str(tiny_encoder_dir),
                   "--dry-run"], capsys,
                  monkeypatch, tmp_path / "r")
    assert line == ("error: Invalid config: data.teacher_text_column (paired views) does not fit "
                    "data.task seq2seq: only a classification or regression teacher reads another "
                    "view of the student's text; unset it.")

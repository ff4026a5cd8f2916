"""Bad input on the command line: each case ends in one `error:` line that names the value and
the fix, exit status 2, and no traceback. (More cases are in test_cli.py; docs/reliability.md
lists them all.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import error_line, run_cli, toy_rows

TOY = ["--text-column", "sentence", "--label-column", "sentiment"]


def bad_input(args: list[str], capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> str:
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2, err
    return error_line(err)


def test_a_teacher_path_that_does_not_exist(tiny_csv: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = bad_input(["compress", "--data", str(tiny_csv), *TOY, "--teacher", "./no-teacher",
                      "--out", "r"], capsys, monkeypatch)
    assert line == ("error: Model path './no-teacher' does not exist; check the path, or pass a hub "
                    "id such as 'bert-base-uncased'.")


def test_a_dataset_name_while_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    line = bad_input(["compress", "--data", "no-such-org/no-such-dataset", "--out",
                      str(tmp_path / "r")], capsys, monkeypatch)
    assert line.startswith("error: Cannot load dataset 'no-such-org/no-such-dataset' from the "
                           "Hugging Face hub (")
    assert line.endswith("check the name and the network, or pass a local CSV, JSONL or Parquet "
                         "file with --data.")


def test_text_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ncaf\xe9 cr\xe8me,a\nna\xefve,b\n".encode("latin-1"))
    line = bad_input(["compress", "--data", str(bad), "--out", str(tmp_path / "r")], capsys,
                     monkeypatch)
    assert line == f"error: Data file {bad} is not UTF-8 text; re-save it as UTF-8."


def write_splits(folder: Path, **splits: list[dict[str, str]]) -> Path:
    folder.mkdir()
    for name, rows in splits.items():
        pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
    return folder


def test_a_test_label_unseen_in_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    test_rows = [*toy_rows(10, seed=1), {"sentence": "the plot was so so", "sentiment": "meh"}]
    data = write_splits(tmp_path / "data", train=toy_rows(40), test=test_rows)
    line = bad_input(["compress", "--data", str(data), *TOY, "--out", str(tmp_path / "r")], capsys,
                     monkeypatch)
    assert line == ("error: The test split has labels ['meh'] that the train split lacks; fix the "
                    "data or merge the splits.")


def test_an_empty_split(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = tmp_path / "two-rows.csv"
    pd.DataFrame(toy_rows(2)).to_csv(tiny, index=False)  # one row per label: nothing to hold out
    line = bad_input(["compress", "--data", str(tiny), *TOY, "--out", str(tmp_path / "r")], capsys,
                     monkeypatch)
    assert line == ("error: The validation split is empty; use more data or a larger "
                    "data.validation_fraction.")


def test_a_single_label(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    one = tmp_path / "one-label.csv"
    pd.DataFrame([{**row, "sentiment": "pos"} for row in toy_rows(40)]).to_csv(one, index=False)
    line = bad_input(["compress", "--data", str(one), *TOY, "--out", str(tmp_path / "r")], capsys,
                     monkeypatch)
    assert line == ("error: Label column 'sentiment' has 1 distinct value(s) in train; "
                    "classification needs at least two.")


def test_resume_and_force_together(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    line = bad_input(["compress", "--resume", "--force", "--out", str(tmp_path / "r")], capsys,
                     monkeypatch)
    assert line == ("error: --resume keeps the finished stages and --force deletes them; pass only "
                    "one of the two.")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("sets", "message"), [
    (["distill=3", "distill.alpha=0.3"],
     "error: Config key 'distill.alpha' sets a field inside 'distill', which is given a value too; "
     "give only one of the two."),
    (["distill..alpha=0.3"],
     "error: Config key 'distill..alpha' has an empty part; write dotted keys such as "
     "distill.training.epochs."),
    (["distill.multi_task.tasks=[{name: ../../escape}]", "distill.recipe=multi-task"],
     "error: Invalid value '../../escape' for distill.multi_task.tasks.0.name: use letters, digits, "
     "'-', '_' and '.' only (it names a folder in the run)."),
])
def test_conflicting_or_unsafe_config_keys(sets: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["compress", "--dry-run", "--out", str(tmp_path / "r")]
    for pair in sets:
        args += ["--set", pair]
    assert bad_input(args, capsys, monkeypatch) == message


def test_a_config_file_with_broken_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("distill:\n  alpha: [0.3\n")
    line = bad_input(["compress", "--config", str(config)], capsys, monkeypatch)
    assert line.startswith(f"error: Config file {config} is not valid YAML (")
    assert line.endswith("); fix its syntax.")


def test_a_teacher_with_corrupt_weights(tiny_csv: Path, tiny_model_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model_dir, teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a cut-off download
    line = bad_input(["compress", "--data", str(tiny_csv), *TOY, "--teacher", str(teacher),
                      "--student", "1", "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert line.startswith(f"error: The weights of model {str(teacher)!r} cannot be read (")
    assert line.endswith("); the file is corrupt or incomplete: download or save the model again.")


@pytest.mark.parametrize(("error", "code", "message"), [
    (OSError(28, "No space left on device", "/runs/r/run.json"), 2,
     "error: No space left on the device writing /runs/r/run.json; free some space, then continue "
     "with `kdedge compress --resume --out RUN_DIR`."),
    (RuntimeError("boom"), 1,
     "error: unexpected RuntimeError: boom (run with --debug for the traceback, and please report "
     "it)."),
])
def test_a_failure_outside_any_stage_is_still_one_line(error: Exception, code: int, message: str,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge import pipeline

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(pipeline, "prepare_run", fail)
    exit_code, _, err = run_cli(["compress", "--out", str(tmp_path / "r")], capsys, monkeypatch)
    assert exit_code == code
    assert error_line(err) == message

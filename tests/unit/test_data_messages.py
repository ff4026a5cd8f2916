"""Every message the data stage shows a user, pinned word for word: the errors that stop a run
and the warnings in its log (the data checks' warnings are pinned in test_data.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from kdedge.config import DataConfig
from kdedge.data.stage import prepare
from kdedge.errors import KdedgeError


def _write(folder: Path, **tables: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _rows(count: int, labels: tuple[object, ...] = ("a", "b"), prefix: str = "text") -> pd.DataFrame:
    return pd.DataFrame({"text": [f"{prefix} {i}" for i in range(count)],
                         "label": [labels[i % len(labels)] for i in range(count)]})


def _error(tmp_path: Path, source: Path, **data: object) -> str:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(KdedgeError) as caught:
        prepare(DataConfig(source=str(source), **data), 0, out)
    return str(caught.value)


def _warnings(tmp_path: Path, source: Path, caplog: pytest.LogCaptureFixture, **data: object,
              ) -> list[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with caplog.at_level(logging.WARNING, logger="kdedge"):
        prepare(DataConfig(source=str(source), **data), 0, out)
    return [record.getMessage() for record in caplog.records]


def test_errors_about_columns_and_labels(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    _rows(40).to_csv(data, index=False)
    assert _error(tmp_path, data, text_columns=("review",)) == (
        "Column 'review' is not in the data; available columns: text, label. Name the right one "
        "with --text-column.")
    assert _error(tmp_path, data, label_column="stars") == (
        "Column 'stars' is not in the data; available columns: text, label. Name the right one "
        "with --label-column.")
    folder = _write(tmp_path / "splits", train=_rows(40), test=_rows(10).drop(columns="label"))
    assert _error(tmp_path, folder) == (
        "Column 'label' is not in the test split; available columns: text. Name the right one "
        "with --label-column.")
    one = tmp_path / "one.csv"
    _rows(40, labels=("a",)).to_csv(one, index=False)
    assert _error(tmp_path, one) == (
        "Label column 'label' has 1 distinct value(s) in train; classification needs at least two.")
    blank = tmp_path / "blank.csv"
    pd.DataFrame({"text": ["  ", "\t"], "label": ["a", "b"]}).to_csv(blank, index=False)
    assert _error(tmp_path, blank) == (
        f"The data in {str(blank)!r} has no rows with both text and label; check the file and the "
        "column names.")
    same = tmp_path / "same.csv"
    pd.DataFrame({"text": [f"t {i}" for i in range(40)], "label": [0.5] * 40}).to_csv(same, index=False)
    assert _error(tmp_path, same) == (
        "Label column 'label' has one distinct score in train; regression needs at least two.")


def test_errors_about_files(tmp_path: Path) -> None:
    odd = tmp_path / "d.txt"
    odd.write_text("text,label\n")
    assert _error(tmp_path, odd) == (
        f"Data file {odd} has an unknown type; use one of .csv, .tsv, .jsonl, .json, .parquet "
        "(optionally .gz or .bz2 compressed).")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    assert _error(tmp_path, broken).startswith(f"Cannot read data file {broken} (")
    assert _error(tmp_path, broken).endswith("); check its format.")
    empty = tmp_path / "no-train"
    _write(empty, test=_rows(10))
    assert _error(tmp_path, empty) == (
        f"Data folder {empty} has no train file; add train.csv (or .jsonl, .parquet), optionally "
        "with validation and test files.")


def test_warnings_about_dropped_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = pd.concat([_rows(100), pd.DataFrame({"text": [None, "x", "   "],
                                                "label": ["a", None, "b"]})], ignore_index=True)
    data = tmp_path / "d.csv"
    table.to_csv(data, index=False)
    assert _warnings(tmp_path, data, caplog) == [
        "  dropped 2 rows with a missing text or label",
        "  dropped 1 row whose text is empty or only whitespace"]
    caplog.clear()
    folder = _write(tmp_path / "splits", train=table, test=_rows(10, prefix="held"))
    assert _warnings(tmp_path, folder, caplog)[:2] == [
        "  dropped 2 rows of the train split with a missing text or label",
        "  dropped 1 row of the train split whose text is empty or only whitespace"]


def test_warnings_about_held_out_splits_without_labels(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    hidden = _rows(10, prefix="held").assign(label=None)
    folder = _write(tmp_path / "glue", train=_rows(100), test=hidden)
    assert _warnings(tmp_path, folder, caplog) == [
        "  dropped 10 rows of the test split with a missing text or label",
        "  the source's test split has no labels; carving one out of train instead"]
    caplog.clear()
    scores = _rows(60, labels=(0.5, 1.5, 2.25))
    folder = _write(tmp_path / "sts", train=scores, test=_rows(10, labels=(-1.0,), prefix="held"))
    assert _warnings(tmp_path, folder, caplog) == [
        "  the source's test split gives every row the same score; carving one out of train instead"]

from pathlib import Path

import pandas as pd
import pytest

from kdedge.config import DataConfig
from kdedge.data.loaders import load_tables
from kdedge.data.stage import _select, label_names, make_splits
from kdedge.errors import KdedgeError


def _table(count: int) -> pd.DataFrame:
    labels = ["a"] * (count * 3 // 4) + ["b"] * (count - count * 3 // 4)
    return pd.DataFrame({"text": [f"text {i}" for i in range(count)], "label": labels})


def test_split_is_seeded_stratified_and_disjoint() -> None:
    cfg = DataConfig(source="x.csv", validation_fraction=0.1, test_fraction=0.2)
    splits, unused = make_splits({"all": _table(400)}, cfg, seed=7)
    assert unused.empty  # no cap, so nothing is left over
    assert {k: len(v) for k, v in splits.items()} == {"train": 280, "validation": 40, "test": 80}
    for split in splits.values():  # 3:1 label ratio kept in every split
        counts = split["label"].value_counts()
        assert counts["a"] == 3 * counts["b"]
    texts = [set(s["text"]) for s in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    again, _ = make_splits({"all": _table(400)}, cfg, seed=7)
    assert all(again[k]["text"].tolist() == splits[k]["text"].tolist() for k in splits)
    other, _ = make_splits({"all": _table(400)}, cfg, seed=8)
    assert other["test"]["text"].tolist() != splits["test"]["text"].tolist()


def test_existing_splits_are_kept_and_caps_apply() -> None:
    cfg = DataConfig(source="x", max_train_samples=100, max_eval_samples=20)
    splits, unused = make_splits({"train": _table(400), "test": _table(80)}, cfg, seed=0)
    assert len(splits["train"]) == 100 and len(splits["test"]) == 20 and len(splits["validation"]) == 20
    assert len(unused) == 400 - 40 - 100 and list(unused.columns) == ["text"]  # labels dropped
    assert not set(unused["text"]) & set(splits["train"]["text"])


def test_missing_column_lists_the_available_ones() -> None:
    table = pd.DataFrame({"review": ["x"], "stars": [1]})
    cfg = DataConfig(source="x.csv", text_columns=("text",), label_column="stars")
    with pytest.raises(KdedgeError, match=r"Column 'text' is not in the all data; available columns: "
                                          r"review, stars\. Name the right one with --text-column\."):
        _select(table, cfg, "all")


def test_rows_without_text_or_label_are_dropped() -> None:
    table = pd.DataFrame({"text": ["a", None, "c"], "label": ["x", "y", None]})
    assert _select(table, DataConfig(source="x"), "train")["text"].tolist() == ["a"]


def test_numeric_labels_keep_numeric_order() -> None:
    assert label_names(pd.DataFrame({"label": ["10", "2", "1"]}), "label") == ["1", "2", "10"]
    with pytest.raises(KdedgeError, match="has 1 distinct value"):
        label_names(pd.DataFrame({"label": ["x", "x"]}), "label")


def test_local_formats_load_alike(tmp_path: Path) -> None:
    table = _table(8)
    table.to_csv(tmp_path / "d.csv", index=False)
    table.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    table.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.jsonl", "d.parquet"):
        tables, identity = load_tables(DataConfig(source=str(tmp_path / name)))
        assert tables["all"]["text"].tolist() == table["text"].tolist(), name
        assert identity["kind"] == "local"


def test_missing_path_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(KdedgeError, match=r"Data path '\./nope\.csv' does not exist; check --data"):
        load_tables(DataConfig(source="./nope.csv"))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(KdedgeError, match="is not UTF-8 text; re-save it as UTF-8"):
        load_tables(DataConfig(source=str(bad)))

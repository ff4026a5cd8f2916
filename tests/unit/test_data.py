from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdedge.config import DataConfig
from kdedge.data.dataset import load_task
from kdedge.data.loaders import load_tables
from kdedge.data.stage import _select, make_splits, resolve_task
from kdedge.errors import KdedgeError
from kdedge.tasks.classification import label_names


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
    test = _table(80).assign(text=lambda t: "held-out " + t["text"])
    splits, unused = make_splits({"train": _table(400), "test": test}, cfg, seed=0)
    assert len(splits["train"]) == 100 and len(splits["test"]) == 20 and len(splits["validation"]) == 20
    assert len(unused) == 400 - 40 - 100 and list(unused.columns) == ["text"]  # labels dropped
    assert not set(unused["text"]) & set(splits["train"]["text"])


def test_missing_column_lists_the_available_ones() -> None:
    table = pd.DataFrame({"review": ["x"], "stars": [1]})
    cfg = DataConfig(source="x.csv", text_columns=("text",), label_column="stars")
    with pytest.raises(KdedgeError, match=r"Column 'text' is not in the data; available columns: "
                                          r"review, stars\. Name the right one with --text-column\."):
        _select(table, cfg, "all")


def test_rows_without_text_or_label_are_dropped() -> None:
    table = pd.DataFrame({"text": ["a", None, "c"], "label": ["x", "y", None]})
    kept, dropped = _select(table, DataConfig(source="x"), "train")
    assert kept["text"].tolist() == ["a"] and dropped == {"missing": 2, "empty": 0}


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


def _scores_table(count: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text {i}" for i in range(count)],
                         "label": [round(5 * i / count, 3) for i in range(count)]})


def _run_data_stage(tmp_path: Path, source: Path, **data: object) -> tuple[Path, dict]:
    from kdedge.config import build_config
    from kdedge.data import stage
    from kdedge.pipeline import StageContext

    cfg = build_config({"data": {"source": str(source), **data}})
    work = tmp_path / "01_data"
    work.mkdir()
    return work, stage.run(StageContext(cfg, tmp_path, work, fingerprint="f", input_fingerprints={}))


def test_float_labels_make_a_regression_task_with_float_scores(tmp_path: Path) -> None:
    from kdedge.artifacts import read_json
    from kdedge.data.dataset import load_task

    source = tmp_path / "scores.csv"
    _scores_table(200).to_csv(source, index=False)
    work, metrics = _run_data_stage(tmp_path, source)
    assert (metrics["task"], metrics["primary_metric"], metrics["labels"]) == ("regression", "pearson",
                                                                               ["score"])
    assert "label_counts" not in metrics and metrics["splits"] == {"train": 160, "validation": 20,
                                                                   "test": 20}
    assert read_json(work / "labels.json")["task"] == "regression"
    task = load_task(work)
    assert task.is_regression and task.num_labels == 1 and task.id2label == {0: "score"}
    test = task.splits["test"]
    assert test.labels.dtype == np.float32
    truth = dict(zip(_scores_table(200)["text"], _scores_table(200)["label"], strict=True))
    assert test.labels.tolist() == pytest.approx([truth[t] for t in test.texts])
    stats = metrics["label_stats"]["train"]
    assert set(stats) == {"mean", "std", "min", "max"} and 0 <= stats["min"] < stats["max"] <= 5


def test_auto_task_is_regression_only_for_fractional_numbers() -> None:
    cfg = DataConfig(source="x.csv")
    for labels in (["a", "b"], [1, 2], [True, False], [1.0, 2.0]):
        assert resolve_task({"all": pd.DataFrame({"label": labels})}, cfg) == "classification"
    assert resolve_task({"train": pd.DataFrame({"label": [1, 2]}),
                         "test": pd.DataFrame({"label": [0.5, 2.0]})}, cfg) == "regression"
    explicit = DataConfig(source="x.csv", task="regression")
    assert resolve_task({"all": pd.DataFrame({"label": [1, 2]})}, explicit) == "regression"


def test_regression_on_label_names_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "names.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "sentiment": ["pos", "neg", "pos"]}).to_csv(source, index=False)
    with pytest.raises(KdedgeError, match=r"^Label column 'sentiment' holds 'pos', not a finite number, so "
                                          r"it cannot be a regression score \(data\.task=regression\); "
                                          r"point --label-column at a numeric score, or set data\.task "
                                          r"to classification\.$"):
        _run_data_stage(tmp_path, source, label_column="sentiment", task="regression")


def test_regression_split_is_seeded_and_stratified_by_score_decile() -> None:
    cfg = DataConfig(source="x.csv", validation_fraction=0.1, test_fraction=0.1)
    splits, _ = make_splits({"all": _scores_table(400)}, cfg, seed=3, task="regression")
    assert {k: len(v) for k, v in splits.items()} == {"train": 320, "validation": 40, "test": 40}
    for name in ("validation", "test"):  # 4 rows from each tenth of the score range
        deciles = (splits[name]["label"] * 2).astype(int).value_counts()  # scores span [0, 5)
        assert sorted(deciles.index) == list(range(10)) and set(deciles) == {4}, name
    again, _ = make_splits({"all": _scores_table(400)}, cfg, seed=3, task="regression")
    assert again["test"]["text"].tolist() == splits["test"]["text"].tolist()
    texts = [set(s["text"]) for s in splits.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_a_held_out_split_with_hidden_scores_is_carved_from_train(tmp_path: Path) -> None:
    folder = tmp_path / "glue-like"
    folder.mkdir()
    _scores_table(100).to_csv(folder / "train.csv", index=False)
    _scores_table(30).assign(label=-1.0).to_csv(folder / "test.csv", index=False)  # hidden
    _, metrics = _run_data_stage(tmp_path, folder)
    assert metrics["task"] == "regression"
    assert metrics["splits"] == {"train": 80, "validation": 10, "test": 10}
    assert metrics["label_stats"]["test"]["min"] >= 0.0


def _labelled(texts: list[str], labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "label": labels})


def test_duplicated_texts_stay_in_one_split_and_are_counted(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from kdedge.data.dataset import load_task

    rows = _table(300)
    copies = rows.iloc[:60].copy()  # 40 exact copies, 20 that differ in case and spacing only
    copies.loc[copies.index[40:], "text"] = copies["text"].iloc[40:].str.upper().str.replace(" ", "   ")
    source = tmp_path / "dups.csv"
    pd.concat([rows, copies], ignore_index=True).to_csv(source, index=False)
    with caplog.at_level("WARNING", logger="kdedge"):
        work, metrics = _run_data_stage(tmp_path, source)
    task = load_task(work)
    normal = {name: {" ".join(str(t).split()).casefold() for t in split.texts}
              for name, split in task.splits.items()}
    assert not normal["test"] & normal["train"] and not normal["validation"] & normal["train"]
    assert sum(map(len, task.splits.values())) == 360  # copies kept, in one split each
    found = metrics["duplicates"]
    assert (found["exact"], found["near"], found["conflicting_labels"]) == (40, 20, 0)
    assert found["in_train"] == {"validation": 0, "test": 0} and found["removed_from_train"] == 0
    assert sum(found["within"].values()) == 60
    message = ("60 rows repeat another row's text (40 exactly, 20 once whitespace and case are "
               "normalised); copies were kept in one split, so no validation or test text is in train.")
    assert metrics["warnings"] == [message] and message in caplog.text


def test_ignoring_duplicates_says_how_many_test_texts_leak(tmp_path: Path) -> None:
    rows = _table(200)
    source = tmp_path / "dups.csv"
    pd.concat([rows, rows], ignore_index=True).to_csv(source, index=False)  # every text twice
    _, metrics = _run_data_stage(tmp_path, source, duplicates="ignore")
    leaks = metrics["duplicates"]["in_train"]
    assert leaks["test"] > 0 and metrics["warnings"][0] == (
        f"200 rows repeat another row's text (200 exactly, 0 once whitespace and case are normalised); "
        f"{leaks['test']} test and {leaks['validation']} validation rows also occur in train, which "
        "inflates their scores; set data.duplicates=group to keep copies in one split.")


def test_train_rows_repeating_a_given_test_split_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "given"
    folder.mkdir()
    train = _table(100)
    train.to_csv(folder / "train.csv", index=False)
    train.iloc[:20].assign(text=lambda t: " " + t["text"].str.title()).to_csv(folder / "test.csv",
                                                                              index=False)
    _, metrics = _run_data_stage(tmp_path, folder)
    assert metrics["duplicates"]["removed_from_train"] == 20
    assert metrics["splits"] == {"train": 72, "validation": 8, "test": 20}  # 10% of the 80 left
    assert metrics["duplicates"]["in_train"] == {"validation": 0, "test": 0}
    assert metrics["warnings"][0].endswith(
        "copies were kept in one split, so no validation or test text is in train (20 train rows "
        "that repeat a held-out text were dropped).")


def test_a_single_example_class_and_a_95_5_imbalance_are_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    texts = [f"text {i}" for i in range(401)]
    labels = ["ham"] * 380 + ["spam"] * 20 + ["odd"]
    source = tmp_path / "skewed.csv"
    _labelled(texts, labels).to_csv(source, index=False)
    with caplog.at_level("WARNING", logger="kdedge"):
        _, metrics = _run_data_stage(tmp_path, source)
    assert metrics["rare_classes"] == {"odd": {"train": 1, "validation": 0, "test": 0},
                                       "spam": {"train": 16, "validation": 2, "test": 2}}
    assert metrics["imbalance"] == {"ratio": 304.0, "heavy": True}
    expected = [
        "Class 'odd' has 1 example in train, 0 examples in validation, 0 examples in test, fewer "
        "than data.min_class_examples=5 in some split; its scores there are noise: add examples or "
        "merge the class.",
        "Class 'spam' has 16 examples in train, 2 examples in validation, 2 examples in test, fewer "
        "than data.min_class_examples=5 in some split; its scores there are noise: add examples or "
        "merge the class.",
        "The classes are imbalanced in train (ham 95%, odd 0%, spam 5%; the largest has 304x the "
        "smallest): accuracy flatters a model that favours the large class, so the run judges "
        "models by macro-F1 (raise data.imbalance_ratio to keep accuracy).",
    ]
    assert metrics["warnings"] == expected
    assert all(message in caplog.text for message in expected)


def test_a_95_5_split_alone_is_an_imbalance_warning(tmp_path: Path) -> None:
    source = tmp_path / "skewed.csv"
    _labelled([f"t {i}" for i in range(1000)], ["ham"] * 950 + ["spam"] * 50).to_csv(source, index=False)
    _, metrics = _run_data_stage(tmp_path, source)
    assert metrics["rare_classes"] == {} and metrics["imbalance"] == {"ratio": 19.0, "heavy": True}
    assert metrics["warnings"] == [
        "The classes are imbalanced in train (ham 95%, spam 5%; the largest has 19x the smallest): "
        "accuracy flatters a model that favours the large class, so the run judges models by "
        "macro-F1 (raise data.imbalance_ratio to keep accuracy)."]
    # every choice of the run (best epochs, search, gate, verdict) reads the task's primary metric
    assert metrics["primary_metric"] == "macro_f1"
    assert load_task(tmp_path / "01_data").primary_metric == "macro_f1"
    assert load_task(tmp_path / "01_data").view("teacher").primary_metric == "macro_f1"
    balanced = tmp_path / "even.csv"
    _labelled([f"t {i}" for i in range(100)], ["a", "b"] * 50).to_csv(balanced, index=False)
    (tmp_path / "even").mkdir()
    _, metrics = _run_data_stage(tmp_path / "even", balanced)
    assert metrics["warnings"] == [] and metrics["imbalance"] == {"ratio": 1.0, "heavy": False}
    assert metrics["primary_metric"] == "accuracy"
    assert load_task(tmp_path / "even" / "01_data").primary_metric == "accuracy"

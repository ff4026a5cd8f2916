"""Label ids outside a dataset's label names (e.g. -1 for hidden test labels) never reach
training: they become missing labels and their rows are dropped with a warning."""

from __future__ import annotations

import logging

import pytest

from kdedge.config import DataConfig


def test_label_ids_out_of_range_become_missing_and_their_rows_are_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    import datasets
    from datasets import ClassLabel, Features, Value

    from kdedge.data.loaders import _with_label_names
    from kdedge.data.stage import _select

    split = datasets.Dataset.from_dict(
        {"text": ["good", "bad", "hidden", "also hidden"], "label": [1, 0, -1, -1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}))
    table = _with_label_names(split)
    assert table["label"].tolist()[:2] == ["pos", "neg"] and table["label"][2:].isna().all()
    with caplog.at_level(logging.WARNING, logger="kdedge"):
        kept, dropped = _select(table, DataConfig(), "test")
    assert kept["label"].tolist() == ["pos", "neg"] and dropped == {"missing": 2, "empty": 0}
    assert "dropped 2 rows of the test split with a missing text or label" in caplog.text

"""Property-based tests: whatever a user types as options, writes in a config file, or hands over
as a data file, kdedge answers with a config, a dataset, or a KdedgeError; never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kdedge.config import DataConfig, KdedgeConfig, build_config, dump_config, load_config
from kdedge.errors import KdedgeError
from kdedge_cli.main import parse_sets

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def dotted_keys(model: type[BaseModel] = KdedgeConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += dotted_keys(field.annotation, f"{prefix}{name}.")
    return keys


KEYS = dotted_keys()
WORD = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
KEY = st.one_of(st.sampled_from(KEYS), WORD, st.builds("{}.{}".format, st.sampled_from(KEYS), WORD))
VALUE = st.one_of(
    WORD, st.integers().map(str), st.floats(allow_nan=True).map(str),
    st.sampled_from(["[1, 8]", "[]", "{}", "{a: 1}", "null", "true", "- x", "[", "{", "'", ": :",
                     "!!python/object/apply:os.system ['true']", "&a [*a]", "1e400", "-1", "0",
                     "demo", "kd", "multi-task", "1%", "[{model: x}]", "[{name: a}]"]))


def assert_config_or_error(build: Any) -> None:
    try:
        cfg = build()
    except KdedgeError as err:
        assert str(err) and "\n" not in str(err).strip()
        return
    assert isinstance(cfg, KdedgeConfig)
    assert build_config(__import__("yaml").safe_load(dump_config(cfg))) == cfg  # round trip


@SETTINGS
@given(st.lists(st.one_of(st.builds("{}={}".format, KEY, VALUE), WORD), max_size=5))
def test_any_set_options_give_a_config_or_a_kdedge_error(pairs: list[str]) -> None:
    assert_config_or_error(lambda: build_config(overrides=parse_sets(pairs)))


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(KEYS), VALUE)
def test_any_value_for_any_key_gives_a_config_or_a_kdedge_error(key: str, value: str) -> None:
    """One key at a time, so every key meets every kind of value (null, lists, numbers, words)."""
    assert_config_or_error(lambda: build_config(overrides=parse_sets([f"{key}={value}"])))


YAML_TEXT = st.one_of(
    WORD,
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), WORD),
                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                         st.dictionaries(st.one_of(st.sampled_from(
                                             [k.split(".")[-1] for k in KEYS]), WORD), inner,
                                             max_size=4)),
                 max_leaves=12).map(lambda data: __import__("yaml").safe_dump(data)),
)


@SETTINGS
@given(YAML_TEXT)
def test_any_config_file_gives_a_config_or_a_kdedge_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        assert_config_or_error(lambda: load_config(path))


CELL = st.one_of(WORD, st.integers(-3, 3).map(str), st.sampled_from(["", "pos", "neg", "1.5", "nan"]))
COLUMN = st.one_of(st.sampled_from(["text", "label", "sentence"]), WORD)


@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, list[str]]:
    columns = draw(st.lists(COLUMN, min_size=1, max_size=3, unique=True))
    rows = draw(st.lists(st.tuples(*[CELL] * len(columns)), max_size=30))
    return pd.DataFrame(rows, columns=columns), columns


def prepare_data(source: Path, columns: list[str], pick: Any, out: Path) -> None:
    from kdedge.data.stage import prepare

    text = pick(st.sampled_from(columns) | COLUMN)
    label = pick(st.sampled_from(columns) | COLUMN)
    try:
        cfg = DataConfig(source=str(source), text_columns=(text,), label_column=label)
    except ValueError:
        return
    try:
        prepare(cfg, 0, out)
    except KdedgeError as err:
        assert str(err) and "\n" not in str(err).strip()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
@SETTINGS
@given(data=st.data())
def test_any_data_file_gives_a_dataset_or_a_kdedge_error(suffix: str, data: st.DataObject) -> None:
    table, columns = data.draw(tables())
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"data{suffix}"
        if suffix == ".csv":
            table.to_csv(source, index=False)
        elif suffix == ".tsv":
            table.to_csv(source, index=False, sep="\t")
        else:
            table.to_json(source, orient="records", lines=suffix == ".jsonl", force_ascii=False)
        out = Path(folder) / "out"
        out.mkdir()
        prepare_data(source, columns, data.draw, out)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_data_file_give_a_kdedge_error_or_a_dataset(suffix: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"data{suffix}"
        source.write_bytes(raw)
        out = Path(folder) / "out"
        out.mkdir()
        try:
            from kdedge.data.stage import prepare

            prepare(DataConfig(source=str(source)), 0, out)
        except KdedgeError as err:
            assert str(err) and "\n" not in str(err).strip()

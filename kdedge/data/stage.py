"""Data stage: load, clean, check (duplicates, rare classes, imbalance), split (seeded, stratified,
copies of a text kept together), map labels, write Parquet splits.

The task is classification (labels become ids into a label map) or regression (labels stay
float scores; splits are stratified by score quantile bins instead of by label).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdedge.artifacts import write_json
from kdedge.config import DataConfig
from kdedge.data import checks
from kdedge.data.dataset import (
    CLASSIFICATION,
    GENERATION,
    LABELS_FILE,
    REGRESSION,
    SCORE_LABELS,
    SPLITS,
    UNUSED_FILE,
    split_file,
)
from kdedge.data.loaders import load_tables
from kdedge.errors import KdedgeError
from kdedge.evaluate import primary_metric

log = logging.getLogger("kdedge")

SCORE_BINS = 10  # regression splits are stratified by score decile (fewer bins for small splits)


def run(ctx) -> dict[str, Any]:
    return prepare(ctx.cfg.data, ctx.cfg.run.seed, ctx.work)


def prepare(cfg: DataConfig, seed: int, out: Path) -> dict[str, Any]:
    """Write this data's splits and label map to `out` (also used for multi-task's other tasks)."""
    tables, identity = load_tables(cfg)
    selected = {name: _select(table, cfg, name) for name, table in tables.items()}
    tables = {name: table for name, (table, _) in selected.items()}
    dropped = {reason: sum(counts[reason] for _, counts in selected.values())
               for reason in ("missing", "empty")}
    for name in [n for n, t in tables.items() if t.empty and n in ("validation", "test")]:
        log.warning("  the source's %s split has no labels; carving one out of train instead", name)
        del tables[name]  # e.g. GLUE test splits, whose labels are hidden
    if any(t.empty for t in tables.values()):
        raise KdedgeError(f"The data in {cfg.source!r} has no rows with both text and label; check the "
                          "file and the column names.")
    task = resolve_task(tables, cfg)
    if task == REGRESSION:
        tables = {name: table.assign(label=scores(table["label"], cfg)) for name, table in tables.items()}
        for name in [n for n, t in tables.items() if n in ("validation", "test")
                     and t["label"].nunique() < 2]:
            log.warning("  the source's %s split gives every row the same score; carving one out of "
                        "train instead", name)
            del tables[name]  # e.g. GLUE's STS-B test split, whose scores are hidden as -1
    pooled = pd.concat(list(tables.values()), ignore_index=True)
    tables, removed = drop_leaks(tables, cfg)
    splits, unused = make_splits(tables, cfg, seed, task)
    found = checks.duplicates(pooled, splits, removed, cfg.duplicates == "group")
    warnings = checks.duplicate_warnings(found)
    unused.to_parquet(out / UNUSED_FILE, index=False)
    if task in GENERATION:  # the label column holds the target text
        labels, summary = [], {"target_words": {
            name: round(float(t["label"].str.split().str.len().mean()), 2)
            for name, t in splits.items()}}
    elif task == REGRESSION:
        labels, summary = SCORE_LABELS, {"label_stats": score_stats(splits, cfg.label_column)}
    else:
        labels = label_names(splits["train"], cfg.label_column)
        splits = {name: label_ids(table, labels, name) for name, table in splits.items()}
        summary = {"label_counts": {
            name: {labels[i]: int(n) for i, n in t["label"].value_counts().sort_index().items()}
            for name, t in splits.items()}}
        balance, label_warnings = checks.label_warnings(summary["label_counts"], labels, cfg)
        summary |= balance
        warnings += label_warnings
    for name, table in splits.items():
        table.to_parquet(split_file(out, name), index=False)
    write_json(out / LABELS_FILE, {"labels": labels, "text_columns": list(cfg.text_columns),
                                        "task": task})
    log.info("  %s task; %s", task, ", ".join(f"{n}: {len(t)}" for n, t in splits.items()))
    for warning in warnings:
        log.warning("  %s", warning)
    return {"source": identity, "task": task, "primary_metric": primary_metric(task),
            "labels": labels, "num_labels": len(labels),
            "splits": {n: len(t) for n, t in splits.items()}, **summary,
            "unused_unlabeled": len(unused), "dropped_rows": dropped, "duplicates": found,
            "warnings": warnings}


def resolve_task(tables: dict[str, pd.DataFrame], cfg: DataConfig) -> str:
    """data.task, with "auto" read off the labels: numbers with fractions are scores."""
    if cfg.task != "auto":
        return cfg.task
    labels = pd.concat([table["label"] for table in tables.values()], ignore_index=True)
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    fractional = numeric and bool((labels != labels.round()).any())
    return REGRESSION if fractional else CLASSIFICATION


def scores(labels: pd.Series, cfg: DataConfig) -> pd.Series:
    """Regression labels as float32 scores; anything that is not a finite number is refused."""
    values = (pd.Series(np.nan, index=labels.index) if pd.api.types.is_bool_dtype(labels)
              else pd.to_numeric(labels, errors="coerce"))
    bad = labels[~np.isfinite(values.to_numpy(dtype=np.float64))]
    if len(bad):
        raise KdedgeError(f"Label column {cfg.label_column!r} holds {bad.iloc[0]!r}, not a finite "
                          f"number, so it cannot be a regression score (data.task={cfg.task}); point "
                          "--label-column at a numeric score, or set data.task to classification.")
    return values.astype(np.float32)


def score_stats(splits: dict[str, pd.DataFrame], column: str) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of the scores in each split."""
    if splits["train"]["label"].nunique() < 2:
        raise KdedgeError(f"Label column {column!r} has one distinct score in train; regression "
                          "needs at least two.")
    return {name: {stat: round(float(getattr(np, stat)(t["label"].to_numpy(np.float64))), 6)
                   for stat in ("mean", "std", "min", "max")}
            for name, t in splits.items()}


def label_ids(table: pd.DataFrame, labels: list[str], split: str) -> pd.DataFrame:
    """The split with label names replaced by their ids in `labels`."""
    unseen = sorted(set(table["label"].astype(str)) - set(labels))
    if unseen:
        raise KdedgeError(f"The {split} split has labels {unseen[:5]} that the train split lacks; "
                          "fix the data or merge the splits.")
    ids = table["label"].astype(str).map({name: i for i, name in enumerate(labels)})
    return table.assign(label=ids.astype("int64"))


def _where(split: str) -> str:
    """A source's split in words: a single file is "the data", else "the train split"."""
    return "the data" if split == "all" else f"the {split} split"


def check_columns(columns: list[Any], cfg: DataConfig, split: str) -> None:
    """The configured text and label columns are among `columns`, or one line saying which
    is not and what there is instead."""
    missing = [c for c in [*cfg.text_columns, cfg.label_column] if c not in columns]
    if missing:
        available = ", ".join(c if c.isprintable() else repr(c) for c in map(str, columns))
        option = "--text-column" if missing[0] in cfg.text_columns else "--label-column"
        raise KdedgeError(f"Column {missing[0]!r} is not in {_where(split)}; available columns: "
                          f"{available}. Name the right one with {option}.")


def _select(table: pd.DataFrame, cfg: DataConfig, split: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the configured columns under the names text / text_pair / label; drop the rows
    with a missing text or label, and those whose text is empty or only whitespace (counted)."""
    check_columns(list(table.columns), cfg, split)
    wanted = [*cfg.text_columns, cfg.label_column]
    names = [*["text", "text_pair"][:len(cfg.text_columns)], "label"]
    table = table[wanted].set_axis(names, axis=1)
    before = len(table)
    table = table.dropna()
    table = table[table["label"].astype(str).str.len() > 0]
    counts = {"missing": before - len(table)}
    for column in names[:-1]:
        table[column] = table[column].astype(str)
    blank = table[names[:-1]].apply(lambda column: column.str.strip() == "").any(axis=1)
    table, counts["empty"] = table[~blank], int(blank.sum())
    of = "" if split == "all" else f" of {_where(split)}"
    for reason, why in (("missing", "with a missing text or label"),
                        ("empty", "whose text is empty or only whitespace")):
        if counts[reason]:
            log.warning("  dropped %d row%s%s %s", counts[reason], "s" * (counts[reason] != 1), of, why)
    return table.reset_index(drop=True), counts


def drop_leaks(tables: dict[str, pd.DataFrame], cfg: DataConfig,
               ) -> tuple[dict[str, pd.DataFrame], int]:
    """With data.duplicates=group, the source's train rows whose text its own validation or test
    split holds (once normalised) are dropped, so no held-out text is trained on. Returns the
    tables and how many rows were dropped."""
    held = [checks.near_key(tables[name]) for name in ("validation", "test") if name in tables]
    if cfg.duplicates != "group" or "train" not in tables or not held:
        return tables, 0
    leaks = checks.near_key(tables["train"]).isin(set(pd.concat(held)))
    return {**tables, "train": tables["train"][~leaks].reset_index(drop=True)}, int(leaks.sum())


def make_splits(tables: dict[str, pd.DataFrame], cfg: DataConfig, seed: int,
                task: str = CLASSIFICATION) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Use the source's splits; carve the missing ones out of train, stratified by label (for
    regression: by score quantile bin, see `strata`).

    Also returns the training rows left out by max_train_samples: with their labels dropped
    they are an in-domain unlabelled pool for teacher-labelled augmentation.
    """
    rng = np.random.default_rng(seed)
    pool = tables.get("train", tables.get("all"))
    splits: dict[str, pd.DataFrame] = {}
    total = len(pool)
    for name, fraction in (("test", cfg.test_fraction), ("validation", cfg.validation_fraction)):
        if name in tables:
            splits[name] = tables[name]
        else:  # fractions are of the whole pool, so both held-out splits get what was asked
            splits[name], pool = _grouped_take(pool, fraction * total / len(pool), rng, task,
                                               cfg.duplicates == "group")
    splits["train"] = pool
    caps = {"train": cfg.max_train_samples, "validation": cfg.max_eval_samples,
            "test": cfg.max_eval_samples}
    unused = splits["train"].iloc[:0]
    for name, cap in caps.items():
        if cap is not None and len(splits[name]) > cap:
            splits[name], rest = _stratified_take(splits[name], cap / len(splits[name]), rng, task)
            unused = rest if name == "train" else unused
        if splits[name].empty:
            raise KdedgeError(f"The {name} split is empty; use more data or a larger "
                              f"data.{name if name != 'train' else 'validation'}_fraction.")
    return ({name: splits[name].reset_index(drop=True) for name in SPLITS},
            unused.drop(columns="label").reset_index(drop=True))


def _grouped_take(table: pd.DataFrame, fraction: float, rng: np.random.Generator, task: str,
                  grouped: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`_stratified_take` over distinct texts: every copy of a text (once normalised) goes
    where its first row goes. Without copies it takes exactly the rows `_stratified_take` does."""
    if not grouped:
        return _stratified_take(table, fraction, rng, task)
    key = checks.near_key(table)
    firsts, _ = _stratified_take(table[~key.duplicated()], fraction, rng, task)
    order = pd.Series(np.arange(len(firsts)), index=key[firsts.index].to_numpy())
    taken = key.isin(order.index)
    held = table[taken].iloc[np.argsort(key[taken].map(order).to_numpy(), kind="stable")]
    return held, table[~taken]


def _stratified_take(table: pd.DataFrame, fraction: float, rng: np.random.Generator,
                     task: str = CLASSIFICATION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Take about `fraction` of each stratum's rows (at least one where the stratum has two)."""
    taken: list[int] = []
    for _, group in sorted(table.groupby(strata(table, fraction, task)).groups.items()):
        order = rng.permutation(np.asarray(group))
        count = round(fraction * len(order))
        count = min(max(count, 1 if len(order) > 1 else 0), len(order))
        taken.extend(order[:count].tolist())
    mask = table.index.isin(taken)
    held = table[mask].sample(frac=1.0, random_state=int(rng.integers(2**31)))
    return held, table[~mask]


def strata(table: pd.DataFrame, fraction: float, task: str) -> pd.Series:
    """What a split keeps the proportions of: the label, or for regression the score's quantile
    bin. Bins are equal-sized by rank, at most SCORE_BINS of them and about one taken row per bin,
    so a small held-out split still spans low, middle and high scores without overshooting."""
    if task in GENERATION:  # every target text is its own: one stratum, a plain shuffle
        return pd.Series(0, index=table.index)
    if task != REGRESSION:
        return table["label"].astype(str)
    bins = max(1, min(SCORE_BINS, round(fraction * len(table))))
    ranks = table["label"].rank(method="first").to_numpy()
    return pd.Series(np.ceil(ranks * bins / len(table)).astype(np.int64), index=table.index)


def label_names(train: pd.DataFrame, column: str) -> list[str]:
    """Label names in a stable order: numeric labels by value, others alphabetically."""
    values = train["label"].astype(str).unique().tolist()
    if len(values) < 2:
        raise KdedgeError(f"Label column {column!r} has {len(values)} distinct value(s) in train; "
                          "classification needs at least two.")
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)

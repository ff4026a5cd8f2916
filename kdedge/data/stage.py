"""Data stage: load, clean, check (duplicates, rare classes, imbalance), split (seeded, stratified,
copies of a text kept together), map labels, write Parquet splits.

What the labels are (class ids, float scores, target texts) and what a split keeps the
proportions of is the task kind's (kdedge.tasks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdedge import tasks
from kdedge.artifacts import write_json
from kdedge.config import DataConfig
from kdedge.data import checks
from kdedge.data.dataset import LABELS_FILE, SPLITS, TEACHER_TEXT, UNUSED_FILE, split_file, views
from kdedge.data.loaders import load_tables
from kdedge.errors import KdedgeError

log = logging.getLogger("kdedge")

def run(ctx) -> dict[str, Any]:
    return prepare(ctx.cfg.data, ctx.cfg.run.seed, ctx.work)


def prepare(cfg: DataConfig, seed: int, out: Path) -> dict[str, Any]:
    """Write this data's splits and label map to `out` (also used for multi-task's other tasks)."""
    tables, identity = load_tables(cfg)
    labelled = tasks.reads_labels(cfg.task)
    selected = {name: _select(table, cfg, name, labelled) for name, table in tables.items()}
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
    kind = tasks.get(task)
    tables = kind.clean(tables, cfg)
    pooled = pd.concat(list(tables.values()), ignore_index=True)
    tables, removed = drop_leaks(tables, cfg)
    splits, unused = make_splits(tables, cfg, seed, task)
    found = checks.duplicates(pooled, splits, removed, cfg.duplicates == "group")
    warnings = checks.duplicate_warnings(found)
    unused.to_parquet(out / UNUSED_FILE, index=False)
    splits, labels, summary = kind.label_map(splits, cfg)
    if "label_counts" in summary:  # classes: a rare one, or a heavy imbalance, is said
        balance, label_warnings = checks.label_warnings(summary["label_counts"], labels, cfg)
        summary |= balance
        warnings += label_warnings
    for name, table in splits.items():
        table.to_parquet(split_file(out, name), index=False)
    read = views(cfg)
    primary = checks.primary_metric(kind.metrics, summary)
    write_json(out / LABELS_FILE, {"labels": labels, "text_columns": list(cfg.text_columns),
                                   "task": task, "primary_metric": primary,
                                   **({"views": read} if read else {})})
    log.info("  %s task; %s", task, ", ".join(f"{n}: {len(t)}" for n, t in splits.items()))
    if read:
        log.info("  paired views: the teacher reads column %r, the student column %r",
                 read["teacher"], read["student"])
    for warning in warnings:
        log.warning("  %s", warning)
    return {"source": identity, "task": task, "primary_metric": primary,
            "labels": labels, "num_labels": len(labels), **({"views": read} if read else {}),
            "splits": {n: len(t) for n, t in splits.items()}, **summary,
            "unused_unlabeled": len(unused), "dropped_rows": dropped, "duplicates": found,
            "warnings": warnings}


def resolve_task(tables: dict[str, pd.DataFrame], cfg: DataConfig) -> str:
    """data.task, with "auto" read off the labels of every table."""
    return tasks.resolve(cfg.task, pd.concat([t["label"] for t in tables.values()], ignore_index=True))


def _where(split: str) -> str:
    """A source's split in words: a single file is "the data", else "the train split"."""
    return "the data" if split == "all" else f"the {split} split"


def check_columns(columns: list[Any], cfg: DataConfig, split: str) -> None:
    """The configured text, teacher text and label columns are among `columns`, or one line
    saying which is not and what there is instead (a task kind that reads no labels needs none)."""
    wanted = [*cfg.text_columns, *[cfg.teacher_text_column][:cfg.teacher_text_column is not None],
              *[cfg.label_column][:tasks.reads_labels(cfg.task)]]
    missing = [c for c in wanted if c not in columns]
    if missing:
        available = ", ".join(c if c.isprintable() else repr(c) for c in map(str, columns))
        option = ("--text-column" if missing[0] in cfg.text_columns else "--teacher-text-column"
                  if missing[0] == cfg.teacher_text_column else "--label-column")
        raise KdedgeError(f"Column {missing[0]!r} is not in {_where(split)}; available columns: "
                          f"{available}. Name the right one with {option}.")


def _select(table: pd.DataFrame, cfg: DataConfig, split: str, labelled: bool = True,
            ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the configured columns under the names text / text_pair / teacher_text / label;
    drop the rows with a missing text or label, and those whose text (either view of it) is
    empty or only whitespace (counted). A task kind that reads no labels gets a placeholder
    label where the data has none."""
    check_columns(list(table.columns), cfg, split)
    if not labelled and cfg.label_column not in table.columns:
        table = table.assign(**{cfg.label_column: "-"})
    teacher = [cfg.teacher_text_column] if cfg.teacher_text_column is not None else []
    wanted = [*cfg.text_columns, *teacher, cfg.label_column]
    names = [*["text", "text_pair"][:len(cfg.text_columns)], *[TEACHER_TEXT][:len(teacher)],
             "label"]
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
                task: str = "classification") -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Use the source's splits; carve the missing ones out of train, stratified as the task kind
    says (by label; for regression by score quantile bin).

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
                     task: str = "classification") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Take about `fraction` of each stratum's rows (at least one where the stratum has two)."""
    taken: list[int] = []
    for _, group in sorted(table.groupby(tasks.get(task).strata(table, fraction)).groups.items()):
        order = rng.permutation(np.asarray(group))
        count = round(fraction * len(order))
        count = min(max(count, 1 if len(order) > 1 else 0), len(order))
        taken.extend(order[:count].tolist())
    mask = table.index.isin(taken)
    held = table[mask].sample(frac=1.0, random_state=int(rng.integers(2**31)))
    return held, table[~mask]

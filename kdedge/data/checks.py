"""Checks on the data before any training: what would make the scores mislead.

Duplicated texts (exact, or equal once whitespace and case are normalised) inflate the test
score when a copy lands in train; a class with a handful of examples, or one drowned by
another, makes accuracy a poor summary. Each finding is a number in the data stage's metrics
and, where it matters, one warning sentence (kept in the metrics too, for the report).
"""

from __future__ import annotations

import pandas as pd

from kdedge.config import DataConfig

PAIR_SEPARATOR = "\x1f"  # joins a sentence pair into one key; never typed in a text


def exact_key(table: pd.DataFrame) -> pd.Series:
    """The row's text (both texts of a pair) exactly as given."""
    key = table["text"].astype(str)
    if "text_pair" in table.columns:
        key = key + PAIR_SEPARATOR + table["text_pair"].astype(str)
    return key


def near_key(table: pd.DataFrame) -> pd.Series:
    """The row's text with runs of whitespace made one space and case folded."""
    return exact_key(table).str.split().str.join(" ").str.casefold()


def duplicates(pooled: pd.DataFrame, splits: dict[str, pd.DataFrame], removed: int,
               grouped: bool) -> dict[str, object]:
    """How many rows repeat another's text, before the split (`pooled`) and across the splits.

    `removed`: train rows dropped because a held-out split of the source has their text.
    """
    exact = int(exact_key(pooled).duplicated().sum())
    near = int(near_key(pooled).duplicated().sum()) - exact
    labels = pooled.assign(key=near_key(pooled), label=pooled["label"].astype(str))
    conflicting = int((labels.groupby("key")["label"].nunique() > 1).sum())
    train = set(near_key(splits["train"]))
    return {"exact": exact, "near": near, "conflicting_labels": conflicting,
            "handling": "group" if grouped else "ignore", "removed_from_train": removed,
            "within": {name: int(near_key(t).duplicated().sum()) for name, t in splits.items()},
            "in_train": {name: int(near_key(splits[name]).isin(train).sum())
                         for name in ("validation", "test")}}


def duplicate_warnings(found: dict[str, object]) -> list[str]:
    """Sentences for the log and the report; none when no text repeats."""
    exact, near = int(found["exact"]), int(found["near"])  # type: ignore[call-overload]
    in_train: dict[str, int] = found["in_train"]  # type: ignore[assignment]
    warnings = []
    if exact + near:
        kept = ("copies were kept in one split, so no validation or test text is in train"
                if found["handling"] == "group" else
                f"{in_train['test']} test and {in_train['validation']} validation rows also occur in "
                "train, which inflates their scores; set data.duplicates=group to keep copies in one "
                "split")
        removed = int(found["removed_from_train"])  # type: ignore[call-overload]
        if removed:
            kept += f" ({removed} train rows that repeat a held-out text were dropped)"
        warnings.append(f"{exact + near} rows repeat another row's text ({exact} exactly, {near} "
                        f"once whitespace and case are normalised); {kept}.")
    if found["conflicting_labels"]:
        warnings.append(f"{found['conflicting_labels']} texts occur with different labels; no model "
                        "can get all their copies right.")
    return warnings


def label_warnings(counts: dict[str, dict[str, int]], labels: list[str], cfg: DataConfig,
                   ) -> tuple[dict[str, object], list[str]]:
    """Classes under data.min_class_examples in any split, and the train split's imbalance."""
    rare = {label: {name: counts[name].get(label, 0) for name in counts} for label in labels
            if min(counts[name].get(label, 0) for name in counts) < cfg.min_class_examples}
    train = [counts["train"].get(label, 0) for label in labels]
    ratio = round(max(train) / max(min(train), 1), 2)
    heavy = ratio >= cfg.imbalance_ratio
    warnings = [f"Class {label!r} has "
                + ", ".join(f"{n} example{'s' * (n != 1)} in {name}" for name, n in where.items())
                + f", fewer than data.min_class_examples={cfg.min_class_examples} in some split; its "
                "scores there are noise: add examples or merge the class."
                for label, where in rare.items()]
    if heavy:
        shares = ", ".join(f"{label} {n / sum(train):.0%}" for label, n in zip(labels, train,
                                                                                  strict=True))
        warnings.append(f"The classes are imbalanced in train ({shares}; the largest has {ratio:g}x "
                        "the smallest): accuracy flatters a model that favours the large class, so "
                        "the run judges models by macro-F1 (raise data.imbalance_ratio to keep "
                        "accuracy).")
    return {"rare_classes": rare, "imbalance": {"ratio": ratio, "heavy": heavy}}, warnings


def primary_metric(metrics: tuple[str, ...], summary: dict[str, object]) -> str:
    """The metric every choice of the run is judged by (the teacher's and student's best epoch,
    the student search, the quantization gate, the report's verdict): the kind's first, except
    with heavily imbalanced classes, where accuracy rewards predicting the large class and
    macro-F1 takes its place."""
    imbalance = summary.get("imbalance")
    if isinstance(imbalance, dict) and imbalance.get("heavy") and "macro_f1" in metrics:
        return "macro_f1"
    return metrics[0]

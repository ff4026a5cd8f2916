"""Regression: a text (or a text pair) to a float score (STS-B style); Pearson, Spearman, MSE."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError
from kdedge.tasks.base import TaskKind
from kdedge.tasks.classification import DEMO_PRESET, LABELLED_RECIPES, LABELLED_WORK

log = logging.getLogger("kdedge")

SCORE_LABELS = ["score"]  # the label names of a regression task: one output, the score
SCORE_BINS = 10  # splits are stratified by score decile (fewer bins for small splits)


class Regression(TaskKind):
    def clean(self, tables: dict[str, Any], cfg: Any) -> dict[str, Any]:
        tables = {name: table.assign(label=scores(table["label"], cfg)) for name, table in tables.items()}
        for name in [n for n, t in tables.items() if n in ("validation", "test")
                     and t["label"].nunique() < 2]:
            log.warning("  the source's %s split gives every row the same score; carving one out of "
                        "train instead", name)
            del tables[name]  # e.g. GLUE's STS-B test split, whose scores are hidden as -1
        return tables

    def label_map(self, splits: dict[str, Any], cfg: Any) -> tuple[dict[str, Any], list[str], dict]:
        return splits, SCORE_LABELS, {"label_stats": score_stats(splits, cfg.label_column)}

    def strata(self, table: Any, fraction: float) -> Any:
        """The score's quantile bin. Bins are equal-sized by rank, at most SCORE_BINS of them and
        about one taken row per bin, so a small held-out split still spans low, middle and high
        scores without overshooting."""
        import pandas as pd

        bins = max(1, min(SCORE_BINS, round(fraction * len(table))))
        ranks = table["label"].rank(method="first").to_numpy()
        return pd.Series(np.ceil(ranks * bins / len(table)).astype(np.int64), index=table.index)


def scores(labels: Any, cfg: Any) -> Any:
    """Regression labels as float32 scores; anything that is not a finite number is refused."""
    import pandas as pd

    values = (pd.Series(np.nan, index=labels.index) if pd.api.types.is_bool_dtype(labels)
              else pd.to_numeric(labels, errors="coerce"))
    bad = labels[~np.isfinite(values.to_numpy(dtype=np.float64))]
    if len(bad):
        raise KdedgeError(f"Label column {cfg.label_column!r} holds {bad.iloc[0]!r}, not a finite "
                          f"number, so it cannot be a regression score (data.task={cfg.task}); point "
                          "--label-column at a numeric score, or set data.task to classification.")
    return values.astype(np.float32)


def score_stats(splits: dict[str, Any], column: str) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of the scores in each split."""
    if splits["train"]["label"].nunique() < 2:
        raise KdedgeError(f"Label column {column!r} has one distinct score in train; regression "
                          "needs at least two.")
    return {name: {stat: round(float(getattr(np, stat)(t["label"].to_numpy(np.float64))), 6)
                   for stat in ("mean", "std", "min", "max")}
            for name, t in splits.items()}


KIND = Regression(
    name="regression", metrics=("pearson", "spearman", "mse"), recipes=LABELLED_RECIPES,
    work=LABELLED_WORK, paired_views=True, label_dtype=np.float32, length_buckets=False,
    demo_preset=DEMO_PRESET,
    summary="a text or text pair to a float score",
    card_title="a text regression model (one score per input)",
    card_output="the predicted `score`.",
    card_limit="Scores outside the training range are extrapolations.")

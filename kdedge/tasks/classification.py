"""Classification: a text (or a text pair) to one of a few labels; accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

from kdedge.errors import KdedgeError
from kdedge.tasks.base import TaskKind

LABELLED_RECIPES = frozenset({"kd", "annealing", "two-stage", "multi-teacher", "multi-task", "gold"})
# Sized so the whole demo finishes in minutes on a 2-core CPU (see README for measured time).
DEMO_PRESET = {
    "data": {"max_train_samples": 4000, "max_eval_samples": 1000, "max_length": 64},
    # the teacher: 2 or 3 epochs (the fields not given keep their defaults); the students train
    # the default 3 epochs, which length-bucketed batches made affordable here
    "teacher": {"training": {"epochs": 3}},
}
LABELLED_WORK = {  # a model with a head over the text: one forward, logits (or a score) out
    "teacher": "kdedge.teacher.classifier:run",
    "distill": "kdedge.distill.classifier:run",
    "export": "kdedge.export.classifier:run",
    "quantize": "kdedge.quantize.classifier:run",
}


class Classification(TaskKind):
    def label_map(self, splits: dict[str, Any], cfg: Any) -> tuple[dict[str, Any], list[str], dict]:
        labels = label_names(splits["train"], cfg.label_column)
        splits = {name: label_ids(table, labels, name) for name, table in splits.items()}
        counts = {name: {labels[i]: int(n) for i, n in t["label"].value_counts().sort_index().items()}
                  for name, t in splits.items()}
        return splits, labels, {"label_counts": counts}

    def strata(self, table: Any, fraction: float) -> Any:
        return table["label"].astype(str)


def label_names(train: Any, column: str) -> list[str]:
    """Label names in a stable order: numeric labels by value, others alphabetically."""
    values = train["label"].astype(str).unique().tolist()
    if len(values) < 2:
        raise KdedgeError(f"Label column {column!r} has {len(values)} distinct value(s) in train; "
                          "classification needs at least two.")
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def label_ids(table: Any, labels: list[str], split: str) -> Any:
    """The split with label names replaced by their ids in `labels`."""
    unseen = sorted(set(table["label"].astype(str)) - set(labels))
    if unseen:
        raise KdedgeError(f"The {split} split has labels {unseen[:5]} that the train split lacks; "
                          "fix the data or merge the splits.")
    ids = table["label"].astype(str).map({name: i for i, name in enumerate(labels)})
    return table.assign(label=ids.astype("int64"))


KIND = Classification(
    name="classification", metrics=("accuracy", "macro_f1"), recipes=LABELLED_RECIPES,
    work=LABELLED_WORK, paired_views=True, demo_preset=DEMO_PRESET,
    summary="a text or text pair to one of a few labels",
    card_title="a {classes}-class text classifier",
    card_output="`label`, its probability `score`, and `probabilities` of every label.",
    card_limit="It only knows these labels: {labels}; any input gets one of them.",
    web_pipeline="text-classification")

"""What a task kind is: the facts and the work that differ between kinds of task.

A stage never asks which task it runs: it loads the task's data and calls its kind. A kind is
one module in kdedge/tasks/ holding a `TaskKind` (or a subclass, when its labels need handling
of their own) and is listed in kdedge/tasks/__init__.py.

The work of each stage is named by an entry, "module:function" taking (ctx, task), imported
when the stage runs (as pipeline.Stage does): the kind stays light to import, and the modules
that do the work may read a task kind's facts without an import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError

STAGE_WORK = ("teacher", "distill", "export", "quantize")  # the stages whose work a kind names


@dataclass(frozen=True)
class TaskKind:
    name: str
    metrics: tuple[str, ...]  # the headline metrics the report shows; the first one is primary:
    # the best epoch, retention against the teacher and the recommendation are judged by it
    recipes: frozenset[str]  # the distillation recipes that fit this kind
    work: Mapping[str, str]  # stage -> "module:function" doing that stage's work for this kind
    label_dtype: Any = np.int64  # of the labels in the data stage's splits
    generates: bool = False  # benched as a generate loop (tokens/s) rather than one forward
    unbenched: frozenset[str] = frozenset()  # bench models this kind never writes
    bundle_script: str = "predict.py"  # how the bundle runs the model: a standalone template in
    # kdedge/bundle/ (onnxruntime, numpy and tokenizers only), copied into every bundle
    bundle_describe: str = "kdedge.bundle.stage:graph_io"  # "module:function" (folder, kind, cfg)
    # -> the bundle.json fields that say what the graphs take and return
    bundle_formats: frozenset[str] = frozenset({"web", "mobile"})  # the other runtimes' layouts
    # the bundle writes for this kind (bundle/web.py, bundle/mobile.py)
    length_buckets: bool = True  # training batches rows of similar length unless the config
    # says otherwise (training.length_buckets); off where the labels may follow the length
    labelled: bool = True  # reads a label column (an unlabelled kind learns from the teacher alone)
    paired_views: bool = False  # the teacher may read another column than the student
    # (data.teacher_text_column): its outputs on one view are the targets for the other
    student_spec: bool = True  # its student is a models/students.py family picked by distill.student
    default_student: str = "auto"  # distill.student when the config gives none: auto searches
    # the candidates (labelled kinds); a spec otherwise
    output: str = "logits"  # the name of the exported graph's output that the bundle returns
    summary: str = ""  # one line for the docs
    # --- the bundle's card (bundle/card.py): format strings, filled from the bundle's facts ---
    card_title: str = "a {kind} model"  # what the model is ({classes}: the label count)
    card_output: str = "the model's `{output}`."  # what predict.py prints for each text
    card_limit: str = "Its quality on text unlike the training data is unknown."  # the kind's
    # own line under Limits ({labels}: the label names, {max_new_tokens})
    web_pipeline: str | None = None  # the transformers.js pipeline that runs this kind's model
    # (bundle/web.py writes web/ for it); None: no web/ folder
    report_sections: tuple[str, ...] = ()  # "module:function" report builders (report/sections.py)
    # of this kind's own, shown in report.md and report.html beside the common sections
    demo_preset: Mapping[str, Any] = field(default_factory=dict)  # config under the built-in
    # demo (--data demo) of this kind, sized to finish in minutes on a 2-core CPU

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def check(self, recipe: str, asked: str) -> None:
        """Refuse a recipe that does not fit this kind (data.task `asked`), before any work."""
        if recipe not in self.recipes:
            raise ValueError(f"distill.recipe {recipe} does not fit data.task {asked}; use one of "
                             f"{', '.join(sorted(self.recipes))}, or set data.task")

    def _run(self, stage: str, ctx: Any, task: Any) -> dict[str, Any]:
        entry = self.work.get(stage)
        if entry is None:
            raise KdedgeError(f"The {stage} stage has no work for a {self.name} task.")
        return _load(entry)(ctx, task)

    def bundle_fields(self, folder: Any, cfg: Any) -> dict[str, Any]:
        """bundle.json's description of the graphs in `folder` (the bundle_describe entry)."""
        return _load(self.bundle_describe)(folder, self, cfg)

    def report_builders(self) -> list[Any]:
        """This kind's own report section builders, imported."""
        return [_load(entry) for entry in self.report_sections]

    def teacher(self, ctx: Any, task: Any) -> dict[str, Any]:
        return self._run("teacher", ctx, task)

    def distill(self, ctx: Any, task: Any) -> dict[str, Any]:
        return self._run("distill", ctx, task)

    def export(self, ctx: Any, task: Any) -> dict[str, Any]:
        return self._run("export", ctx, task)

    def quantize(self, ctx: Any, task: Any) -> dict[str, Any]:
        return self._run("quantize", ctx, task)

    # --- the data stage: labels and splits ---------------------------------------------------
    def clean(self, tables: dict[str, Any], cfg: Any) -> dict[str, Any]:
        """The loaded tables with labels in this kind's form; by default as they are."""
        return tables

    def label_map(self, splits: dict[str, Any], cfg: Any) -> tuple[dict[str, Any], list[str], dict]:
        """(splits with labels as stored, label names, a summary for the data manifest)."""
        raise NotImplementedError

    def strata(self, table: Any, fraction: float) -> Any:
        """What a seeded split keeps the proportions of; by default nothing (a plain shuffle)."""
        import pandas as pd

        return pd.Series(0, index=table.index)


def _load(entry: str) -> Any:
    """The function named "module:function", imported now."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)

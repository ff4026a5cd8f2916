"""Report stage: read the upstream manifests, write report.json / .md / .html, return the verdict.

It never measures: compare.py turns manifests into report data, render.py turns that data into
text (section by section, builders.py), and this module only wires them to the run directory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge import tasks
from kdedge.artifacts import MANIFEST, Manifest, atomic_write_text
from kdedge.errors import KdedgeError
from kdedge.pipeline import stage_dirname
from kdedge.report.compare import REPORT_INPUTS, build_comparison, build_report, build_report_from_run
from kdedge.report.render import COMPARISON_FORMATS, file_name, render, render_comparison
from kdedge.report.sections import Builder
from kdedge.report.targets import load_added

if TYPE_CHECKING:
    from kdedge.pipeline import StageContext

log = logging.getLogger("kdedge")


def run(ctx: StageContext) -> dict[str, Any]:
    """Write the configured report formats into ctx.work; return the headline for the manifest."""
    manifests: dict[str, Manifest | None] = {
        name: ctx.manifest(name) if (ctx.input(name) / MANIFEST).is_file() else None
        for name in REPORT_INPUTS
    }
    data = build_report(manifests, min_retained_accuracy=ctx.cfg.report.min_retained_accuracy,
                        seed=ctx.cfg.run.seed, added=load_added(ctx.run_dir))
    kind = tasks.get(data["task"])
    paths = write_reports(data, ctx.work, ctx.cfg.report.formats, kind.report_builders())
    log.info("  %s", data["recommendation"]["summary"])
    return summarize(data, [path.name for path in paths])


def write_reports(data: dict[str, Any], folder: Path, formats: Iterable[str],
                  extra_builders: Sequence[Builder] = ()) -> list[Path]:
    """Render every format first, then write each atomically: a bad format writes nothing.
    extra_builders: sections of the caller's own (a task kind's), in every format."""
    texts = {fmt: render(fmt, data, extra_builders)
             for fmt in dict.fromkeys(formats)}  # ordered, no repeats
    paths = []
    for fmt, text in texts.items():
        path = folder / file_name(fmt)
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def write_comparison(run_dirs: Iterable[Path], out: Path,
                     formats: Iterable[str] | None = None) -> list[Path]:
    """report.json / .md / .html comparing several runs, built from each run's manifests, in
    `out`; every run is read before anything is written."""
    runs = []
    for run_dir in map(Path, run_dirs):
        if not any((run_dir / stage_dirname(name) / MANIFEST).is_file()
                   for name in REPORT_INPUTS):
            raise KdedgeError(f"{run_dir} holds no kdedge stage; pass directories written by "
                              "kdedge compress.")
        runs.append((_run_name(run_dir, [name for name, _ in runs]), build_report_from_run(run_dir)))
    data = build_comparison(runs)
    texts = {fmt: render_comparison(fmt, data)
             for fmt in dict.fromkeys(formats or COMPARISON_FORMATS.names())}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, text in texts.items():
        atomic_write_text(out / file_name(fmt), text)
        paths.append(out / file_name(fmt))
    return paths


def _run_name(run_dir: Path, taken: list[str]) -> str:
    """A run's column name: its directory name, with its parent's when two runs share it."""
    name = run_dir.resolve().name
    return f"{run_dir.resolve().parent.name}/{name}" if name in taken else name


def summarize(data: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """The few numbers worth keeping in the report manifest and printing at the end of a run."""
    rec, retained = data["recommendation"], f"retained_{data['primary_metric']}"
    headline = rec["headline"]
    return {
        "recommended": rec["artifact"],
        "fallback": rec["fallback"],
        "reference": rec["reference"],
        "batch_size": rec["batch_size"],
        retained: headline[retained],
        "speedup": headline["speedup"],
        "size_ratio": headline["size_ratio"],
        "files": files,
    }

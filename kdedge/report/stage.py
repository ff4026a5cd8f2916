"""Report stage: read the upstream manifests, write report.json / report.md, return the verdict.

It never measures: compare.py turns manifests into report data, render.py turns that data into
text, and this module only wires the two to the run directory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge.artifacts import MANIFEST, Manifest, atomic_write_text
from kdedge.report.compare import REPORT_INPUTS, build_report
from kdedge.report.render import file_name, render
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
    paths = write_reports(data, ctx.work, ctx.cfg.report.formats)
    log.info("  %s", data["recommendation"]["summary"])
    return summarize(data, [path.name for path in paths])


def write_reports(data: dict[str, Any], folder: Path, formats: Iterable[str]) -> list[Path]:
    """Render every format first, then write each atomically: a bad format writes nothing."""
    texts = {fmt: render(fmt, data) for fmt in dict.fromkeys(formats)}  # ordered, no repeats
    paths = []
    for fmt, text in texts.items():
        path = folder / file_name(fmt)
        atomic_write_text(path, text)
        paths.append(path)
    return paths


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

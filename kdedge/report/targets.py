"""Benchmarks measured elsewhere: `kdedge report RUN_DIR --add-bench results.json`.

`kdedge bench BUNDLE` on a target device writes a results file in the bench stage's layout
plus a `target` name and the device's `environment`. Adding it copies it into the run
directory's `added_bench/TARGET.json` (a later file for the same target replaces the earlier
one), and every report of that run shows its models as `model@TARGET` rows beside the
machine's own. The file is checked before anything is written, so a bad one changes nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kdedge.artifacts import atomic_write_text
from kdedge.errors import KdedgeError

ADDED_DIR = "added_bench"
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate(results: Any, source: Path) -> dict[str, Any]:
    """The results, or a one-line KdedgeError naming what is wrong and how to get a good file."""
    redo = "write it with `kdedge bench BUNDLE --output FILE` on the target"
    if not isinstance(results, dict):
        raise KdedgeError(f"{source} is not a kdedge bench results object; {redo}.")
    if "probe" in results:
        raise KdedgeError(f"{source} holds a probe bundle's times for the student search, not a "
                          "run's models; pass it to `kdedge compress --target-latency`, and "
                          "add the bench of the run's bundle here.")
    target = results.get("target")
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise KdedgeError(f"{source} names target {target!r}, which is not a short name of "
                          "letters, digits, '.', '_' or '-'; re-run `kdedge bench` with "
                          "--target NAME.")
    if target == "cpu" or target in ("cuda", "tensorrt"):
        raise KdedgeError(f"{source} names target {target!r}, which this run's own bench uses; "
                          "re-run `kdedge bench` on the device with --target DEVICE-NAME.")
    models = results.get("models")
    if not isinstance(models, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("latency"), list)
            for entry in models.values()):
        raise KdedgeError(f"{source} has no per-model latency lists under 'models'; {redo}.")
    if not models and not results.get("skipped"):
        raise KdedgeError(f"{source} holds no measured or skipped model; {redo}.")
    return results


def add_bench(run_dir: Path, source: Path) -> str:
    """Copy a checked results file into the run; return its target name."""
    source = Path(source)
    if not source.is_file():
        raise KdedgeError(f"Bench results file {source} does not exist; pass the JSON that "
                          "`kdedge bench` wrote on the target.")
    try:
        results = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KdedgeError(f"{source} is not valid JSON ({err}); pass the file `kdedge bench` "
                          "wrote, unedited.") from None
    target = validate(results, source)["target"]
    atomic_write_text(Path(run_dir) / ADDED_DIR / f"{target}.json",
                      json.dumps(results, indent=2) + "\n")
    return target


def load_added(run_dir: Path) -> list[dict[str, Any]]:
    """Every added results file of a run, in target-name order, each checked again."""
    folder = Path(run_dir) / ADDED_DIR
    if not folder.is_dir():
        return []
    added = []
    for path in sorted(folder.glob("*.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise KdedgeError(f"{path} is not valid JSON ({err}); delete it and add the "
                              "results again with --add-bench.") from None
        added.append(validate(results, path))
    return added

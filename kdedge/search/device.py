"""The student search's latencies measured on the target device instead of this machine.

1. `kdedge compress ... --student auto --probe-bundle DIR` runs the data and teacher stages and
   writes a probe bundle (`write_bundle`): every candidate the search would time, untrained at
   its real shapes, exported and quantized exactly as the local probe builds it
   (probe.build_candidate); the teacher's fp32 graph; sample texts; and probe-bundle.json naming
   each candidate, its student spec, vocabulary and graphs (with their sha256), and the probe
   settings (sequence length, protocol, opset, quantizer).
2. `kdedge bench DIR` on the device, with the runtime install only (no torch on this path),
   times every graph at batch 1 under the bench protocol, as the local probe does
   (probe.time_graph), and writes `kdedge bench`'s results layout plus a `probe` section
   (`bench_bundle`).
3. `kdedge compress ... --target-latency FILE` reads the candidates' latencies from that file
   (`read_results`) once it has checked that the file times this run's candidates; preflight
   runs the same check before any stage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdedge import __version__
from kdedge.artifacts import atomic_write_text, read_json, sha256_file, write_json
from kdedge.bench.stats import latency_at
from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE
from kdedge.search.probe import (
    BENCH_TEXTS,
    CandidateSpec,
    ProbeSettings,
    Timing,
    build_candidate,
    candidate_result,
    search_candidates,
    time_graph,
)

BUNDLE_FILE = "probe-bundle.json"  # marks a probe bundle; `kdedge bench` recognises it
FORMAT = "kdedge-probe-bundle"
TEXTS_FILE = "sample_texts.txt"
DEFAULT_OUTPUT = Path("probe-results.json")
REDO = ("re-create the probe bundle (kdedge compress ... --probe-bundle DIR) with this run's "
        "settings and bench it on the device again (kdedge bench DIR)")


def check_request(cfg: Any, out: Path) -> None:
    """`kdedge compress --probe-bundle OUT`'s checks, before any stage runs."""
    from kdedge.config import AUTO_STUDENT

    if cfg.distill.student != AUTO_STUDENT:
        raise KdedgeError(f"--probe-bundle writes the candidates of the student search, but "
                          f"distill.student is {cfg.distill.student}; pass --student auto.")
    if cfg.distill.search.target_latency is not None:
        raise KdedgeError("--probe-bundle writes the graphs to time on the device and "
                          "--target-latency reads their times back; pass only one of the two.")
    check_out(out)


def check_out(out: Path) -> None:
    """Refuse a --probe-bundle folder that holds anything but an earlier probe bundle (which
    is replaced), before any stage runs."""
    out = Path(out)
    if out.exists() and not (out / BUNDLE_FILE).is_file() and (
            not out.is_dir() or any(out.iterdir())):
        raise KdedgeError(f"--probe-bundle {out} exists and is not a probe bundle; pass a new or "
                          "empty folder (an earlier probe bundle there is replaced).")


def write_bundle(cfg: Any, run_dir: Path, out: Path) -> Path:
    """The probe bundle of a run whose data and teacher stages are complete (needs torch)."""
    from transformers import AutoConfig

    from kdedge.artifacts import MODEL_DIR
    from kdedge.data.dataset import load_task
    from kdedge.pipeline import stage_dirname

    task = load_task(run_dir / stage_dirname("data"))
    teacher_dir = run_dir / stage_dirname("teacher") / MODEL_DIR
    layers = AutoConfig.from_pretrained(teacher_dir).num_hidden_layers
    return build_bundle(search_candidates(cfg.distill.search, layers), teacher_dir,
                        task.splits["train"].texts, task.splits["validation"].texts[:BENCH_TEXTS],
                        Path(out), ProbeSettings.from_config(cfg, task, teacher_dir))


def build_bundle(candidates: Sequence[CandidateSpec], teacher_dir: Path,
                 train_texts: Sequence[Any], bench_texts: Sequence[Any], out: Path,
                 settings: ProbeSettings) -> Path:
    """Build every candidate's graphs into `out` (written beside it, then renamed, so an
    interrupted build never looks like a bundle)."""
    from kdedge.bundle.stage import text_lines

    check_out(out)
    work = out.parent / f".{out.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    entries = {}
    for candidate in candidates:
        parameters, folders = build_candidate(candidate, teacher_dir, train_texts,
                                              work / candidate.name, settings)
        entries[candidate.name] = {
            "student": candidate.student, "vocabulary": candidate.vocabulary,
            "parameters": parameters,
            "graphs": {precision: {"path": folder.relative_to(work).as_posix(),
                                   "model_sha256": sha256_file(folder / ONNX_FILE)}
                       for precision, folder in folders.items()}}
    atomic_write_text(work / TEXTS_FILE, "".join(f"{line}\n" for line in text_lines(bench_texts)))
    write_json(work / BUNDLE_FILE, {
        "format": FORMAT, "kdedge_version": __version__, "settings": settings.key(),
        "texts": TEXTS_FILE, "pairs": any(isinstance(t, tuple | list) for t in bench_texts),
        "candidates": entries})
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return out


def read_bundle(path: Path) -> dict[str, Any]:
    """A probe bundle's manifest, checked enough to time it."""
    manifest = read_json(Path(path) / BUNDLE_FILE)
    if not _well_formed(manifest):
        raise KdedgeError(f"{Path(path) / BUNDLE_FILE} is not a kdedge probe bundle manifest; copy "
                          "the folder `kdedge compress --probe-bundle DIR` wrote, unedited.")
    return manifest


def bench_bundle(path: Path, *, output: Path = DEFAULT_OUTPUT, target: str | None = None,
                 threads: int | None = None, texts_file: Path | None = None,
                 warmup_runs: int | None = None, min_runs: int | None = None,
                 min_duration_s: float | None = None) -> dict[str, Any]:
    """Time every graph of a probe bundle on this machine at batch 1 and the bundle's sequence
    length; write and return the results. Options replace the bundle's protocol; the thread
    count defaults to this machine's physical cores. Needs no torch."""
    from kdedge import environment
    from kdedge.bench.stage import results_header
    from kdedge.bench.standalone import EXECUTION_TARGET, default_target, read_texts, settings
    from kdedge.progress import progress_bar

    path = Path(path)
    manifest = read_bundle(path)
    made = manifest["settings"]
    protocol = {key: made.get(key) for key in ("warmup_runs", "min_runs", "min_duration_s")}
    cfg = settings({"bench": {"protocol": protocol}}, [1], [made.get("sequence_length")],
                   None if threads is None else [threads], warmup_runs, min_runs, min_duration_s)
    timing = Timing(cfg.sequence_lengths[0], threads or environment.physical_cores(),
                    cfg.warmup_runs, cfg.min_runs, cfg.min_duration_s)
    graphs = {}
    for name, entry in manifest["candidates"].items():
        for precision, graph in entry["graphs"].items():
            folder = path / graph["path"]
            if not (folder / ONNX_FILE).is_file() or sha256_file(folder / ONNX_FILE) != graph[
                    "model_sha256"]:
                raise KdedgeError(f"{folder / ONNX_FILE} is missing or differs from the graph "
                                  f"{BUNDLE_FILE} names; copy the whole probe bundle to the device "
                                  "again.")
            graphs[f"{name}-{precision}"] = (folder, graph)
    texts_file = texts_file or path / manifest.get("texts", TEXTS_FILE)
    texts = read_texts(texts_file, bool(manifest.get("pairs")))
    results = results_header([timing.threads], [timing.sequence_length], cfg, len(texts))
    results["targets"] = [EXECUTION_TARGET]
    with progress_bar("probe", len(graphs)) as bar:
        for key, (folder, graph) in graphs.items():
            row = time_graph(key, folder, texts, timing,
                             on_step=lambda _name, _size: bar.advance(bar.task_ids[0]))
            row |= {"path": graph["path"], "target": EXECUTION_TARGET,
                    "model_sha256": graph["model_sha256"]}
            results["models"][key] = row
    results["target"] = target or default_target()
    results["probe"] = {
        "bundle": str(path.resolve()), "kdedge_version": manifest.get("kdedge_version"),
        "settings": made,
        "candidates": {name: {"student": entry.get("student"),
                              "vocabulary": entry.get("vocabulary"),
                              "parameters": entry.get("parameters"),
                              "graphs": {precision: f"{name}-{precision}"
                                         for precision in entry["graphs"]}}
                       for name, entry in manifest["candidates"].items()}}
    results["texts_file"] = str(texts_file)
    results["environment"] = environment.capture()
    write_json(output, results)
    return results


def read_results(path: Path, candidates: Sequence[CandidateSpec], sequence_length: int | None,
                 ) -> tuple[dict[str, dict[str, Any]], str]:
    """Each candidate's probe result (probe.candidate_result's shape) as measured on the device,
    and a line saying where; a one-line KdedgeError when the file is not the results of a probe
    bundle of these candidates at this sequence length (None: not known yet, as before the data
    and teacher stages when the length comes from the texts). Needs no torch."""
    path = Path(path)
    unedited = "pass the results file `kdedge bench PROBE_BUNDLE` wrote on the device, unedited"
    if not path.is_file():
        raise KdedgeError(f"Target latency file {path} does not exist; pass the results file "
                          "`kdedge bench PROBE_BUNDLE` wrote on the device (--target-latency).")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KdedgeError(f"Target latency file {path} is not valid JSON ({err}); "
                          f"{unedited}.") from None
    section = results.get("probe") if isinstance(results, dict) else None
    if not isinstance(section, dict):
        raise KdedgeError(f"Target latency file {path} is not the results of a probe bundle (it "
                          "has no 'probe' section); bench the folder `kdedge compress "
                          "--probe-bundle DIR` wrote, with `kdedge bench DIR` on the device.")
    header = (results.get("target"), results.get("threads"), results.get("sequence_lengths"))
    named, models = section.get("candidates"), results.get("models")
    if not (isinstance(header[0], str) and _one_int(header[1]) and _one_int(header[2])
            and isinstance(named, dict) and isinstance(models, dict)):
        raise KdedgeError(f"Target latency file {path} lacks its target, thread count, sequence "
                          f"length, candidates or models; {unedited}.")
    target, [threads], [measured] = header
    if sequence_length is not None and measured != sequence_length:
        raise KdedgeError(f"Target latency file {path} was measured at sequence length {measured}, "
                          f"but this run times its candidates at {sequence_length} "
                          f"(bench.sequence_lengths, else the data's own); {REDO}.")
    probed = {}
    for candidate in candidates:
        entry = named.get(candidate.name)
        if not isinstance(entry, dict):
            raise KdedgeError(f"Target latency file {path} has no candidate {candidate.name!r} "
                              f"(student {candidate.student}); {REDO}.")
        if (entry.get("student"), entry.get("vocabulary")) != (candidate.student,
                                                               candidate.vocabulary):
            raise KdedgeError(
                f"Target latency file {path} timed candidate {candidate.name!r} as student "
                f"{entry.get('student')} with vocabulary {entry.get('vocabulary')}, but this run's "
                f"is student {candidate.student} with vocabulary {candidate.vocabulary}; {REDO}.")
        graphs = entry.get("graphs") if isinstance(entry.get("graphs"), dict) else {}
        rows = {precision: models.get(str(graphs.get(precision))) for precision in
                candidate.precisions}
        missing = [precision for precision, row in rows.items() if not _timed(row)]
        if missing:
            raise KdedgeError(f"Target latency file {path} has no batch-1 {missing[0]} time for "
                              f"candidate {candidate.name!r}; {unedited}.")
        probed[candidate.name] = candidate_result(candidate, entry.get("parameters"),
                                                  Timing(measured, threads), rows)
    return probed, (f"measured on {target} (kdedge bench on a probe bundle), {threads} "
                    f"thread(s), sequence length {measured}")


def identity(path: Path) -> dict[str, str]:
    """Which results file a search read, for its report: the path and sha256."""
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}


def _well_formed(manifest: Any) -> bool:
    """Whether a probe bundle manifest has the fields its bench reads."""
    if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT
            and isinstance(manifest.get("settings"), dict)
            and isinstance(manifest["settings"].get("sequence_length"), int)
            and isinstance(manifest.get("candidates"), dict)):
        return False
    graphs = [entry.get("graphs") if isinstance(entry, dict) else None
              for entry in manifest["candidates"].values()]
    return all(isinstance(found, dict) and found and all(
        isinstance(graph, dict) and isinstance(graph.get("path"), str)
        and isinstance(graph.get("model_sha256"), str) for graph in found.values())
        for found in graphs)


def _one_int(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 1 and isinstance(value[0], int)
            and value[0] >= 1)


def _timed(row: Any) -> bool:
    """Whether a results row holds a batch-1 time and a size."""
    try:
        point = latency_at(row)["1"]
        return (float(point["p50_ms"]) > 0 and float(point["mean_ms"]) > 0
                and int(row["size_bytes"]) > 0)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False

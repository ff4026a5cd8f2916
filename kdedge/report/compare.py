"""Build the report data from the stage manifests: every number, ratio and the recommendation.

The report never measures anything: it reads the manifests the other stages wrote. All
arithmetic happens here, in one plain dict of JSON types, so report.json and report.md are two
views of the same values and cannot disagree. A part of a run that is missing (a stage not run,
a model the bench skipped) becomes None here and "n/a" in the renderers, never a crash.

Quality is judged by the task's primary metric, read from the data stage's manifest: accuracy
for classification, Pearson for regression. Keys that name it follow it (retained_accuracy,
test_accuracy for classification; retained_pearson, test_pearson for regression), except
min_retained_accuracy, the config key, which applies to the primary metric of either task.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdedge import __version__, tasks
from kdedge.artifacts import MANIFEST, Manifest
from kdedge.bench.stats import latency_at
from kdedge.config import ReportConfig, load_config
from kdedge.evaluate import student_beats_teacher
from kdedge.pipeline import RESOLVED_CONFIG, stage_dirname
from kdedge.report.formatting import (
    dig,
    fmt_metric,
    fmt_metric_delta,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    fmt_sci,
    metric_name,
)
from kdedge.report.targets import load_added

SCHEMA_VERSION = 1
REFERENCE = "teacher-onnx"  # quality and speed reference: the teacher as it would ship
REPORT_INPUTS = ("data", "teacher", "distill", "export", "quantize", "bench")
CANDIDATES = ("teacher-onnx", "student-onnx", "student-int8")  # what can be shipped: ONNX only
LATENCY_FIELDS = ("runs", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "stdev_ms", "min_ms",
                  "max_ms", "throughput_samples_per_s")
MEMORY_FIELDS = ("baseline_rss_bytes", "load_peak_rss_bytes", "inference_peak_rss_bytes")
# Accuracies are ratios of counts; a floor like 0.95 x 0.8 must not fail on float rounding.
_EPS = 1e-9


@dataclass(frozen=True)
class ArtifactSpec:
    """Where one artifact's quality lives in the manifests, and what kind of artifact it is."""

    name: str
    family: str  # teacher | student
    runtime: str  # pytorch | onnxruntime
    precision: str  # fp32 | int8
    quality_at: tuple[str, ...]  # stage name, then keys down to the node holding test/validation


ARTIFACT_SPECS = (
    ArtifactSpec("teacher-pytorch", "teacher", "pytorch", "fp32", ("teacher",)),
    ArtifactSpec("teacher-onnx", "teacher", "onnxruntime", "fp32", ("export", "models", "teacher")),
    ArtifactSpec("student-pytorch", "student", "pytorch", "fp32", ("distill",)),
    ArtifactSpec("student-onnx", "student", "onnxruntime", "fp32", ("export", "models", "student")),
    ArtifactSpec("student-int8", "student", "onnxruntime", "int8",
                 ("quantize", "models", "student-int8")),
    ArtifactSpec("student-fp16", "student", "onnxruntime", "fp16",
                 ("quantize", "models", "student-fp16")),
)
ARTIFACTS = tuple(spec.name for spec in ARTIFACT_SPECS)
OPTIONAL = ("student-fp16",)  # a row only when the run wrote it (quantize.fp16) or benched it
_SPECS = {spec.name: spec for spec in ARTIFACT_SPECS}


def target_of(name: str) -> str:
    """The bench target of an artifact row: `student-onnx@cuda` runs on cuda, bare names on cpu."""
    return name.partition("@")[2] or "cpu"


def _spec_for(name: str, entry: Mapping[str, Any]) -> ArtifactSpec:
    """A bench entry's artifact: `model@target` is the same file (and quality) as `model`."""
    base = _SPECS.get(name.partition("@")[0])
    if base is not None:
        return dataclasses.replace(base, name=name)
    return ArtifactSpec(name, "other", str(entry.get("runtime") or "unknown"), "n/a", ())


# ---------------------------------------------------------------------------------------------
# entry points


def load_manifests(run_dir: Path) -> dict[str, Manifest | None]:
    """The manifests the report reads, None for a stage that has not completed in run_dir."""
    return {name: _load(run_dir / stage_dirname(name)) for name in REPORT_INPUTS}


def build_report_from_run(run_dir: Path, *, min_retained_accuracy: float | None = None,
                          ) -> dict[str, Any]:
    """Report data from a run directory alone, for `kdedge report RUN_DIR` and for tests.

    The accuracy floor and seed come from the run's config.resolved.yaml when it is there, so
    re-reporting an old run applies the rule that run was configured with.
    """
    run_dir = Path(run_dir)
    manifests = load_manifests(run_dir)
    config_path = run_dir / RESOLVED_CONFIG
    seed: int | None = None
    floor = ReportConfig().min_retained_accuracy
    if config_path.is_file():
        cfg = load_config(config_path)
        seed, floor = cfg.run.seed, cfg.report.min_retained_accuracy
    else:  # every stage records the seed beside its config section
        seeds = [m.config.get("seed") for m in manifests.values()
                 if m is not None and isinstance(m.config, Mapping)]
        seed = next((s for s in seeds if isinstance(s, int)), None)
    if min_retained_accuracy is not None:
        floor = min_retained_accuracy
    return build_report(manifests, min_retained_accuracy=floor, seed=seed,
                        added=load_added(run_dir))


def build_report(manifests: Mapping[str, Manifest | None], *, min_retained_accuracy: float,
                 seed: int | None, added: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The whole report as one plain JSON-ready dict (shape: the keys of `report` below).

    `artifacts` holds one row per artifact (quality, latency per batch size, memory, size,
    parameters, `vs_reference` ratios); `recommendation` holds the verdict and its reasons; the
    other keys hold the export, quantization, training, data, environment and reproducibility
    facts, each None when its stage is missing. `added` holds bench results measured on other
    devices (`--add-bench`): their models become `model@TARGET` rows.
    """
    metrics = {name: _mapping(getattr(manifests.get(name), "metrics", None))
               for name in REPORT_INPUTS}
    task, metric = task_and_metric(metrics["data"])
    known = tasks.get(task).metrics if task in tasks.KINDS else ()
    quality_metrics = (metric, *[m for m in known if m != metric])
    bench = metrics["bench"]
    bench_models = dict(_mapping(bench.get("models")))
    skipped = {str(k): str(v) for k, v in _mapping(bench.get("skipped")).items()}
    skipped_targets = {str(k): str(v) for k, v in _mapping(bench.get("skipped_targets")).items()}
    for results in added:
        target = results["target"]
        bench_models |= {f"{name}@{target}": entry for name, entry in results["models"].items()}
        skipped |= {f"{name}@{target}": str(reason)
                    for name, reason in _mapping(results.get("skipped")).items()}
    batch_sizes = _batch_sizes(bench, bench_models)
    ranking_batch = 1 if 1 in batch_sizes else (batch_sizes[0] if batch_sizes else None)

    # the CPU artifacts always have a row (n/a when absent); other targets' only when benched:
    # a row that never ran there would show the CPU's quality under a target it never saw
    extra = [str(name) for name in bench_models if name not in ARTIFACTS]
    written = _mapping(metrics["quantize"].get("models"))
    specs = [spec for spec in ARTIFACT_SPECS
             if spec.name not in OPTIONAL or spec.name in bench_models or spec.name in written]
    specs += [_spec_for(name, _mapping(bench_models.get(name))) for name in dict.fromkeys(extra)]
    rows = [_artifact_row(spec, metrics, _mapping(bench_models.get(spec.name)),
                          skipped.get(spec.name), task, quality_metrics) for spec in specs]
    by_name = {row["name"]: row for row in rows}
    _add_reference_ratios(rows, by_name, batch_sizes, metric)
    recommendation = recommend(by_name, min_retained_accuracy=min_retained_accuracy,
                               batch_size=ranking_batch, metric=metric)
    beaten = student_beats_teacher(metrics["teacher"], metrics["distill"], metric)
    if beaten:  # the verdict itself says the reference is weak, and how to fix it
        recommendation["summary"] += " Caution: " + beaten["sentence"]
    missing = [name for name in REPORT_INPUTS if manifests.get(name) is None]
    environment = _environment(manifests)
    report = {
        "schema_version": SCHEMA_VERSION,
        "reference": REFERENCE,
        "task": task,
        "primary_metric": metric,
        "quality_metrics": list(quality_metrics),
        "min_retained_accuracy": min_retained_accuracy,
        "batch_sizes": batch_sizes,
        "recommendation": recommendation,
        "notes": _notes(metrics, environment, missing, skipped, skipped_targets),
        "remarks": _remarks(environment, by_name, metrics["quantize"]),
        "artifacts": rows,
        "per_class": _per_class(metrics, rows),
        "pareto": _pareto(rows, ranking_batch, metric),
        "disagreements": _disagreements(metrics["export"]),
        "generations": _generations(metrics["export"]),
        "export": _export(metrics, metric),
        "quantization": _quantization(metrics, quality_metrics),
        "training": {**_training(metrics, manifests, metric), "student_beats_teacher": beaten},
        "data": _data(metrics),
        "benchmark": _benchmark(bench, batch_sizes, skipped, skipped_targets) if bench else None,
        "added_targets": [_added_target(results) for results in added],
        "environment": environment,
        "reproducibility": _reproducibility(manifests, seed),
        "missing_stages": missing,
    }
    return _clean(report)


def task_and_metric(data: Mapping[str, Any]) -> tuple[str, str]:
    """The task and its primary metric from the data stage's metrics; runs that predate
    regression recorded neither and were classification."""
    task = str(data.get("task") or "classification")
    metric = data.get("primary_metric")
    return task, str(metric) if metric else tasks.get(task).primary_metric


# ---------------------------------------------------------------------------------------------
# the recommendation


def recommend(rows: Mapping[str, Mapping[str, Any]], *, min_retained_accuracy: float,
              batch_size: int | None, metric: str = "accuracy") -> dict[str, Any]:
    """Pick the ONNX artifact to ship and say why, from artifact rows built by this module.

    Among the candidates whose test `metric` (the task's primary metric) is at least
    min_retained_accuracy x the reference's, the lowest p50 latency at batch_size wins (ties:
    the smaller size on disk). When no compressed artifact qualifies, the reference itself is
    recommended and the reasons say what each student lacked.
    """
    ref_acc = _test_score(rows.get(REFERENCE), metric)
    floor = None if ref_acc is None else min_retained_accuracy * ref_acc
    key = None if batch_size is None else str(batch_size)
    shown = key or "n/a"  # the batch size as the sentences print it
    name_ = metric_name(metric)
    candidates = [_candidate(rows.get(name), name, floor, key, min_retained_accuracy, metric)
                  for name in CANDIDATES]
    ranked = sorted((c for c in candidates if c["ranked"]),
                    key=lambda c: (c["p50_ms"], _inf_if_none(c["size_bytes"]),
                                   CANDIDATES.index(c["name"])))
    for rank, candidate in enumerate(ranked, start=1):
        candidate["rank"] = rank
    by_name = {c["name"]: c for c in candidates}
    reference = by_name[REFERENCE]
    best = ranked[0] if ranked else (reference if reference["produced"] else None)
    fallback = best is not None and best["name"] == REFERENCE and not any(
        c["name"] != REFERENCE for c in ranked)

    rule = (f"Among the ONNX artifacts ({', '.join(CANDIDATES)}) whose test {name_} is at least "
            f"{fmt_pct(min_retained_accuracy)} of {REFERENCE}'s ({fmt_metric(floor, metric)} here), the "
            f"lowest p50 latency at batch {shown} wins; "
            "a tie goes to the smaller artifact.")
    trade_offs = (_trade_offs(best, ranked, candidates, batch_size, metric)
                  if best is not None and best["ranked"] else [])
    if best is None:
        summary = ("No recommendation: this run has no ONNX artifact to ship (the export stage is "
                   "missing or produced none).")
        reasons = [f"{c['name']}: {c['status']}." for c in candidates]
    elif fallback:
        summary = (f"Ship {REFERENCE}: no compressed artifact keeps at least "
                   f"{fmt_pct(min_retained_accuracy)} of its test {name_} with a measured "
                   f"batch-{shown} latency, so the teacher stays.")
        reasons = [f"{c['name']}: {c['status']}." for c in candidates if c["name"] != REFERENCE]
        if not reference["ranked"]:
            reasons.append(f"{REFERENCE}: {reference['status']}.")
    else:
        summary = _summary(best, rows, reference, batch_size, metric)
        reasons = [f"{c['name']}: {c['status']}." for c in candidates]
    reasons += [t["sentence"] for t in trade_offs]
    best_row = rows.get(best["name"]) if best else None
    ratios = (best_row or {}).get("vs_reference") or {}
    return {
        "artifact": best["name"] if best else None,
        "fallback": fallback,
        "summary": summary,
        "rule": rule,
        "reasons": reasons,
        "reference": REFERENCE,
        f"reference_{metric}": ref_acc,
        "min_retained_accuracy": min_retained_accuracy,
        f"{metric}_floor": floor,
        "batch_size": batch_size,
        "headline": {
            "artifact": best["name"] if best else None,
            f"retained_{metric}": best[f"retained_{metric}"] if best else None,
            "speedup": (ratios.get("speedup") or {}).get(key) if key else None,
            "size_ratio": ratios.get("size_ratio"),
        },
        "candidates": candidates,
        "trade_offs": trade_offs,
        "per_target": per_target(rows, floor=floor, batch_size=batch_size, metric=metric),
    }


def per_target(rows: Mapping[str, Mapping[str, Any]], *, floor: float | None,
               batch_size: int | None, metric: str) -> list[dict[str, Any]]:
    """What to ship on each target that timed a candidate: this machine's CPU first, then its
    GPUs and the devices added with --add-bench, in the order their rows appear.

    Quality belongs to the file, so the floor and the gate are judged as on the CPU; speed is
    the target's own, so among the candidates that qualify and were timed there at
    `batch_size`, the lowest p50 wins (ties: the smaller artifact). The choice may differ per
    target: an int8 model that wins on a VNNI CPU may lose to fp32 on a GPU.
    """
    key = None if batch_size is None else str(batch_size)
    targets = list(dict.fromkeys(row.get("target") or "cpu" for row in rows.values()))
    verdicts = []
    for target in targets:
        timed = []
        for name in CANDIDATES:
            row = rows.get(name if target == "cpu" else f"{name}@{target}") or {}
            p50 = dig(row.get("latency"), key, "p50_ms") if key else None
            if p50 is None:
                continue
            gate_failed = dig(row, "quantization_gate", "passed") is False
            score = _test_score(row, metric)
            qualifies = (floor is not None and score is not None and score >= floor - _EPS
                         and not gate_failed)
            timed.append({"artifact": name, "p50_ms": p50, "qualifies": qualifies,
                          "size_bytes": row.get("size_bytes")})
        if not timed:
            continue
        ranked = sorted((t for t in timed if t["qualifies"]),
                        key=lambda t: (t["p50_ms"], _inf_if_none(t["size_bytes"]),
                                       CANDIDATES.index(t["artifact"])))
        best = ranked[0] if ranked else None
        slower = [t["artifact"] for t in ranked[1:]]
        below = [t["artifact"] for t in timed if not t["qualifies"]]
        if best is None:
            sentence = (f"{target}: nothing to ship; no artifact timed there "
                        f"({', '.join(below)}) keeps the {metric_name(metric)} floor.")
        else:
            against = (f"faster than {', '.join(slower)} there" if slower
                       else "the only qualifying candidate timed there")
            against += f"; below the floor: {', '.join(below)}" if below else ""
            sentence = (f"{target}: ship {best['artifact']} ({fmt_ms(best['p50_ms'])} p50 at "
                        f"batch {batch_size}, {against}).")
        verdicts.append({"target": target, "artifact": best["artifact"] if best else None,
                         "p50_ms": best["p50_ms"] if best else None, "batch_size": batch_size,
                         "timed": [t["artifact"] for t in timed], "sentence": sentence})
    return verdicts


def _candidate(row: Mapping[str, Any] | None, name: str, floor: float | None, key: str | None,
               min_retained: float, metric: str) -> dict[str, Any]:
    """One candidate's standing against the rule, with a sentence saying where it stands."""
    row, batch_size, name_ = row or {}, key or "n/a", metric_name(metric)
    accuracy = _test_score(row, metric)
    retained = row.get(f"retained_{metric}")
    p50 = dig(row.get("latency"), key, "p50_ms") if key else None
    gate_failed = dig(row, "quantization_gate", "passed") is False
    qualifies = (accuracy is not None and floor is not None and accuracy >= floor - _EPS
                 and not gate_failed)
    ranked = qualifies and p50 is not None
    if not row.get("produced"):
        status = "not produced in this run"
    elif gate_failed:
        status = (f"failed the quantization gate, so the fp32 student ships instead "
                  f"({dig(row, 'quantization_gate', 'reason')})")
    elif accuracy is None:
        status = f"no test {name_} in its manifest, so it cannot be judged"
    elif floor is None:
        status = f"{REFERENCE} has no test {name_}, so retained {name_} cannot be judged"
    elif name == REFERENCE:
        status = (f"the {name_} reference ({fmt_metric(accuracy, metric)}); "
                  + (f"p50 {fmt_ms(p50)} at batch {batch_size}" if p50 is not None
                     else f"no batch-{batch_size} latency"))
    elif not qualifies:
        status = (f"keeps {fmt_pct(retained)} of {REFERENCE}'s test {name_} "
                  f"({fmt_metric(accuracy, metric)}), below the {fmt_pct(min_retained)} floor")
    elif p50 is None:
        skipped = row.get("bench_skipped")
        status = (f"keeps {fmt_pct(retained)} but has no batch-{batch_size} latency"
                  + (f" (the bench skipped it: {skipped})" if skipped else ""))
    else:
        status = (f"keeps {fmt_pct(retained)} of {REFERENCE}'s test {name_}; "
                  f"p50 {fmt_ms(p50)} at batch {batch_size}")
    return {"name": name, "produced": bool(row.get("produced")), metric: accuracy,
            f"retained_{metric}": retained, "qualifies": qualifies, "gate_failed": gate_failed,
            "p50_ms": p50,
            "size_bytes": row.get("size_bytes"), "ranked": ranked, "rank": None, "status": status}


def _summary(best: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]],
             reference: Mapping[str, Any], batch_size: int | None, metric: str) -> str:
    """The one-line verdict for a recommendation that passed the rule."""
    name, name_ = best["name"], metric_name(metric)
    if name == REFERENCE:
        return (f"Ship {REFERENCE}: it is the fastest ONNX artifact at batch {batch_size} "
                f"({fmt_ms(best['p50_ms'])} p50) and is itself the {name_} reference "
                f"({fmt_metric(best[metric], metric)}).")
    ratios = rows[name].get("vs_reference") or {}
    speedup = (ratios.get("speedup") or {}).get(str(batch_size))
    return (f"Ship {name}: {fmt_ratio(speedup)} the speed of {REFERENCE} at batch {batch_size} "
            f"({fmt_ms(best['p50_ms'])} vs {fmt_ms(reference['p50_ms'])} p50), "
            f"{_smaller(ratios.get('size_ratio'))}, keeping {fmt_pct(best[f'retained_{metric}'])} "
            f"of its test {name_} ({fmt_metric(best[metric], metric)} vs "
            f"{fmt_metric(reference[metric], metric)}).")


def _trade_offs(best: Mapping[str, Any], ranked: list[dict[str, Any]],
                candidates: list[dict[str, Any]], batch_size: int | None, metric: str,
                ) -> list[dict[str, Any]]:
    """What choosing `best` gives up or gains against the next best, and against any faster
    artifact the floor on the primary metric excluded."""
    name_ = metric_name(metric)
    others: list[tuple[str, dict[str, Any]]] = []
    if len(ranked) > 1:
        others.append(("runner_up", ranked[1]))
    others += [("faster_but_below_floor", c) for c in candidates
               if not c["qualifies"] and c[metric] is not None and c["p50_ms"] is not None
               and c["p50_ms"] < best["p50_ms"]]
    result = []
    for kind, other in others:
        speedup = _ratio(other["p50_ms"], best["p50_ms"])
        size_ratio = _ratio(other["size_bytes"], best["size_bytes"])
        delta = _diff(best[metric], other[metric])
        if kind == "runner_up":
            sentence = (f"Against the next best, {other['name']}: {best['name']} has "
                        f"{fmt_ratio(speedup)} its speed ({fmt_ms(best['p50_ms'])} vs "
                        f"{fmt_ms(other['p50_ms'])} p50 at batch {batch_size}), is "
                        f"{_smaller(size_ratio)}, and differs by {fmt_metric_delta(delta, metric)} "
                        f"in test {name_} ({fmt_metric(best[metric], metric)} vs "
                        f"{fmt_metric(other[metric], metric)}).")
        elif other.get("gate_failed"):
            sentence = (f"{other['name']} would be faster ({fmt_ms(other['p50_ms'])} p50) but "
                        "failed the quantization gate on validation.")
        else:
            sentence = (f"{other['name']} would be faster ({fmt_ms(other['p50_ms'])} p50, "
                        f"{fmt_ratio(_ratio(best['p50_ms'], other['p50_ms']))} the speed of "
                        f"{best['name']}) but keeps only {fmt_pct(other[f'retained_{metric}'])} "
                        f"of {REFERENCE}'s test {name_}, below the floor.")
        result.append({"against": other["name"], "kind": kind, "speedup": speedup,
                       "size_ratio": size_ratio, f"{metric}_delta": delta, "sentence": sentence})
    return result


def _smaller(size_ratio: float | None) -> str:
    """'3.90× smaller' or '1.25× larger': a size ratio as a reader says it."""
    if size_ratio is None:
        return "of unknown relative size"
    if size_ratio >= 1:
        return f"{fmt_ratio(size_ratio)} smaller"
    return f"{fmt_ratio(1 / size_ratio)} larger"


# ---------------------------------------------------------------------------------------------
# artifact rows


def _artifact_row(spec: ArtifactSpec, metrics: Mapping[str, Mapping[str, Any]],
                  entry: Mapping[str, Any], skipped: str | None, task: str,
                  quality_metrics: tuple[str, ...]) -> dict[str, Any]:
    """One artifact: quality from its stage's manifest, speed/memory/size from the bench's."""
    node = _mapping(dig(metrics.get(spec.quality_at[0]), *spec.quality_at[1:])) \
        if spec.quality_at else {}
    test = _quality(node.get("test"), task, quality_metrics)
    validation = _quality(node.get("validation"), task, quality_metrics)
    primary = quality_metrics[0]
    latency = {bs: _latency(stats) for bs, stats in headline_latency(entry).items()}
    memory = _mapping(entry.get("memory"))
    file_bytes = _int(node.get("bytes")) if len(spec.quality_at) > 1 else None
    size_bytes, size_source = _int(entry.get("size_bytes")), "bench"
    if size_bytes is None and file_bytes is not None:
        size_bytes, size_source = file_bytes, spec.quality_at[0]
    parameters = _int(entry.get("parameters"))
    if parameters is None and spec.family == "teacher":
        parameters = _int(metrics["teacher"].get("parameters"))
    elif parameters is None and spec.family == "student":
        parameters = _int(dig(metrics["distill"], "student", "parameters"))
    path = entry.get("path") or node.get("path")
    produced = bool(test or validation or latency or size_bytes is not None or path)
    return {
        "name": spec.name,
        "target": target_of(spec.name),
        "family": spec.family,
        "runtime": str(entry.get("runtime") or spec.runtime),
        "precision": spec.precision,
        "produced": produced,
        "path": str(path) if path is not None else None,
        "quality_source": ".".join([*spec.quality_at, "test"]) if spec.quality_at else None,
        "test": test,
        "validation": validation,
        "evaluation": _evaluation(node.get("evaluation")),
        "batched": _batched(node.get("batched"), test, task, quality_metrics),
        f"retained_{primary}": None,  # filled against the reference once every row exists
        f"{primary}_delta": None,
        "benchmarked": bool(entry),
        "bench_skipped": skipped,
        "latency": latency,
        "memory": ({**{f: _int(memory.get(f)) for f in MEMORY_FIELDS},
                    "peak_source": memory.get("peak_source")} if memory else None),
        "runtime_info": dict(_mapping(entry.get("runtime_info"))) or None,  # EP, session options
        "size_bytes": size_bytes,
        "size_source": size_source if size_bytes is not None else None,
        "file_bytes": file_bytes,
        "parameters": parameters,
        "quantization_gate": _gate(node.get("gate")),
        "vs_reference": None,
    }


def _evaluation(evaluation: Any) -> dict[str, Any] | None:
    """How the row's quality was measured: an ONNX artifact one text per call, as a bundle is
    called (batch_size 1, no padding); None where the stage did not say (PyTorch, older runs)."""
    evaluation = _mapping(evaluation)
    return {"batch_size": _int(evaluation.get("batch_size")),
            "padding": bool(evaluation.get("padding"))} if evaluation else None


def _batched(batched: Any, test: Mapping[str, Any] | None, task: str,
             quality_metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """The same splits scored several texts per call, padded: shown beside the headline when
    `differs` (dynamic int8 scales activations per batch, so padding and neighbours count)."""
    batched = _mapping(batched)
    if not batched:
        return None
    splits = {split: {k: v for k, v in (_quality(batched.get(split), task, quality_metrics)
                                        or {}).items() if k in (*quality_metrics, "examples")}
              or None for split in ("test", "validation")}
    differs = any(dig(splits["test"], m) != dig(test, m) for m in quality_metrics)
    return {"batch_size": _int(batched.get("batch_size")), **splits, "differs": differs}


def _gate(gate: Any) -> dict[str, Any] | None:
    """The quantize stage's accuracy gate for an artifact it wrote, None for the others."""
    gate = _mapping(gate)
    if not gate:
        return None
    return {"passed": gate.get("passed"), "reason": gate.get("reason"),
            "max_drop": gate.get("max_drop"), "allowed_drop": _num(gate.get("allowed_drop")),
            "fallback_used": gate.get("fallback_used")}


def _add_reference_ratios(rows: list[dict[str, Any]], by_name: Mapping[str, Mapping[str, Any]],
                          batch_sizes: list[int], metric: str) -> None:
    """The retained primary metric (artifact / reference, for accuracy and Pearson alike) and
    the speed, size and memory ratios of each row to the reference on the same target.

    Speed, size and memory ratios read reference / artifact, so above 1 always means the
    artifact is better. A GPU row is timed against the teacher's ONNX on that GPU, never
    against the CPU: without that row its speed ratios are None.
    """
    ref_acc = _test_score(by_name[REFERENCE], metric)
    for row in rows:
        target = row["target"]
        ref = by_name.get(REFERENCE if target == "cpu" else f"{REFERENCE}@{target}") or {}
        acc = _test_score(row, metric)
        row[f"retained_{metric}"] = _ratio(acc, ref_acc)
        row[f"{metric}_delta"] = _diff(acc, ref_acc)
        speedup = {str(bs): _ratio(dig(ref.get("latency"), str(bs), "p50_ms"),
                                   dig(row["latency"], str(bs), "p50_ms")) for bs in batch_sizes}
        row["vs_reference"] = {
            "speedup": speedup,
            "size_ratio": _size_ratio(ref, row),
            "memory_ratio": _ratio(dig(ref, "memory", "inference_peak_rss_bytes"),
                                   dig(row, "memory", "inference_peak_rss_bytes")),
        }


def headline_latency(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A bench entry's latency per batch size at the sweep's first length and thread count."""
    latency = entry.get("latency")
    if isinstance(latency, Mapping):  # results written before the sweep grid
        return {str(k): v for k, v in latency.items()}
    points = [p for p in latency if isinstance(p, Mapping)] if isinstance(latency, list) else []
    return latency_at({"latency": points})


def _size_ratio(ref: Mapping[str, Any], row: Mapping[str, Any]) -> float | None:
    """Reference bytes / artifact bytes, both measured the same way.

    The bench counts everything needed to run (model + tokenizer); export and quantize count
    the model file alone. Mixing the two would flatter or punish an artifact, so the ratio uses
    bench sizes when both rows have them, else model-file sizes when both have those.
    """
    if ref.get("size_source") == "bench" and row.get("size_source") == "bench":
        return _ratio(ref["size_bytes"], row["size_bytes"])
    return _ratio(ref.get("file_bytes"), row.get("file_bytes"))


def _batch_sizes(bench: Mapping[str, Any], models: Mapping[str, Any]) -> list[int]:
    declared = bench.get("batch_sizes")
    if isinstance(declared, list) and declared:
        values = {_int(v) for v in declared}
    else:
        values = {_int(k) for entry in models.values()
                  for k in headline_latency(_mapping(entry))}
    return sorted(v for v in values if v is not None)


def _quality(metrics: Any, task: str, quality_metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """The task's metrics of one split; per-class scores and the confusion for classification."""
    if not isinstance(metrics, Mapping):
        return None
    out: dict[str, Any] = {name: _num(metrics.get(name)) for name in quality_metrics}
    out["examples"] = _int(metrics.get("examples"))
    if isinstance(metrics.get("per_class"), Mapping):  # classifiers: per-class scores, confusion
        per_class = _mapping(metrics.get("per_class"))
        out["per_class"] = {k: list(v) for k, v in per_class.items() if isinstance(v, list)} or None
        out["confusion"] = (metrics.get("confusion") if isinstance(metrics.get("confusion"), list)
                            else None)
    return out


def _latency(stats: Any) -> dict[str, Any]:
    stats = _mapping(stats)
    out: dict[str, Any] = {f: _num(stats.get(f)) for f in LATENCY_FIELDS}
    out["runs"] = _int(stats.get("runs"))
    if stats.get("tokens_per_s") is not None:  # a generator: one entry = one generate call
        out["tokens_per_s"] = _num(stats.get("tokens_per_s"))
        out["time_to_first_token_ms"] = _num(dig(stats, "time_to_first_token", "p50_ms"))
    return out


# ---------------------------------------------------------------------------------------------
# the other sections


def _per_class(metrics: Mapping[str, Mapping[str, Any]], rows: list[dict[str, Any]],
               ) -> dict[str, Any] | None:
    """Test F1 per label for every artifact that has it: a fast model that drops a rare class
    shows here even when its overall accuracy passes the floor."""
    f1 = {row["name"]: dig(row, "test", "per_class", "f1") for row in rows
          if row["target"] == "cpu"}  # another target runs the same file: no new column
    f1 = {name: values for name, values in f1.items() if isinstance(values, list)}
    if not f1:
        return None
    labels = metrics["data"].get("labels")
    width = max(len(values) for values in f1.values())
    if not isinstance(labels, list) or len(labels) != width:
        labels = [str(i) for i in range(width)]
    supports = (dig(row, "test", "per_class", "support")
                for row in sorted(rows, key=lambda r: r["name"] != REFERENCE))  # reference first
    support = next((s for s in supports if isinstance(s, list)), None)
    return {"labels": [str(label) for label in labels], "support": support, "f1": f1}


def _pareto(rows: list[dict[str, Any]], batch_size: int | None, metric: str,
            ) -> dict[str, Any] | None:
    """Test score against p50 latency at the ranking batch size, per target, with the front
    marked: an artifact is on it when no other on its target is at least as fast and at least
    as good, and strictly better in one of the two."""
    if batch_size is None:
        return None
    key = str(batch_size)
    points = [{"artifact": row["name"], "target": row["target"],
               "p50_ms": dig(row.get("latency"), key, "p50_ms"), metric: _test_score(row, metric)}
              for row in rows]
    points = [p for p in points if p["p50_ms"] is not None and p[metric] is not None]
    if not points:
        return None
    higher_better = metric != "mse"
    for p in points:
        score = p[metric] if higher_better else -p[metric]
        p["on_front"] = not any(
            q is not p and q["target"] == p["target"]
            and q["p50_ms"] <= p["p50_ms"] and _oriented(q[metric], higher_better) >= score
            and (q["p50_ms"] < p["p50_ms"] or _oriented(q[metric], higher_better) > score)
            for q in points)
    return {"batch_size": batch_size, "metric": metric, "points": points}


def _oriented(value: float, higher_better: bool) -> float:
    return value if higher_better else -value


def _generations(export: Mapping[str, Any]) -> dict[str, Any] | None:
    """Generation tasks: test sources with the gold target and every model's output."""
    found = _mapping(export.get("examples"))
    if not found:
        return None
    return {"split": str(found.get("split") or "test"),
            "examples": [{k: (_int(v) if k == "index" else str(v)) for k, v in _mapping(e).items()}
                         for e in found.get("examples") or []]}


def _disagreements(export: Mapping[str, Any]) -> dict[str, Any] | None:
    """Test examples where the teacher's and the student's ONNX answers differ (export stage)."""
    found = _mapping(export.get("disagreements"))
    if not found:
        return None
    examples = []
    for e in map(_mapping, found.get("examples") or []):
        gold = e.get("gold")
        examples.append({
            "index": _int(e.get("index")), "text": str(e.get("text") or ""),
            "text_pair": None if e.get("text_pair") is None else str(e.get("text_pair")),
            "gold": gold if isinstance(gold, (int, float)) and not isinstance(gold, bool)
            else str(gold),
            "teacher": e.get("teacher") if isinstance(e.get("teacher"), (int, float))
            else str(e.get("teacher")),
            "student": e.get("student") if isinstance(e.get("student"), (int, float))
            else str(e.get("student")),
            "teacher_confidence": _num(e.get("teacher_confidence")),
            "student_confidence": _num(e.get("student_confidence")),
            "gap": _num(e.get("gap")),
        })
    total, count = _int(found.get("examples_total")), _int(found.get("count"))
    return {"split": str(found.get("split") or "test"), "examples_total": total, "count": count,
            "rate": _ratio(count, total), "examples": examples}


def _export(metrics: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, Any] | None:
    models = _mapping(metrics["export"].get("models"))
    if not models:
        return None
    pytorch_acc = {"teacher": _num(dig(metrics["teacher"], "test", metric)),
                   "student": _num(dig(metrics["distill"], "test", metric))}
    out = {}
    for name, entry in models.items():
        entry = _mapping(entry)
        parity = _mapping(entry.get("parity"))
        onnx_acc = _num(dig(entry, "test", metric))
        out[str(name)] = {
            "path": entry.get("path"),
            "bytes": _int(entry.get("bytes")),
            "opset": _int(entry.get("opset")),
            "max_abs_diff": _num(parity.get("max_abs_diff")),
            "atol": _num(parity.get("atol")),
            "passed": parity.get("passed") if isinstance(parity.get("passed"), bool) else None,
            "shapes": parity.get("shapes"),
            f"test_{metric}": onnx_acc,
            f"pytorch_test_{metric}": pytorch_acc.get(str(name)),
            f"{metric}_delta_vs_pytorch": _diff(onnx_acc, pytorch_acc.get(str(name))),
        }
    return {"models": out}


def _quantization(metrics: Mapping[str, Mapping[str, Any]], quality_metrics: tuple[str, ...],
                  ) -> dict[str, Any] | None:
    models = _mapping(metrics["quantize"].get("models"))
    if not models:
        return None
    exported = _mapping(metrics["export"].get("models"))
    out = {}
    for name, entry in models.items():
        entry = _mapping(entry)
        source = _mapping(exported.get(entry.get("source")))
        graph = _mapping(entry.get("graph"))
        changes: dict[str, float | None] = {}
        for k in quality_metrics:  # the int8 model against its fp32 source, metric by metric
            fp32, int8 = _num(dig(source, "test", k)), _num(dig(entry, "test", k))
            changes |= {f"fp32_test_{k}": fp32, f"test_{k}": int8, f"{k}_delta": _diff(int8, fp32)}
        out[str(name)] = {
            "path": entry.get("path"),
            "source": entry.get("source"),
            "mode": entry.get("mode"),
            "preset": entry.get("preset"),
            "per_channel": entry.get("per_channel"),
            "reduce_range": entry.get("reduce_range"),
            "label": dig(entry, "spec", "label"),
            "optimization": entry.get("optimization"),
            "preprocess": entry.get("preprocess"),
            "matmul_total": _int(graph.get("matmul_total")),
            "matmul_int8": _int(graph.get("matmul_int8")),
            "quantized_nodes": dict(_mapping(graph.get("quantized"))) or None,
            "opset": _int(graph.get("opset")),
            "gate": _gate(entry.get("gate")),
            "attempts": [{"step": a.get("step"), "label": a.get("label"),
                          "validation": _num(next((v for k, v in a.items()
                                                   if k.startswith("validation_")), None)),
                          "drop": _num(a.get("drop")), "passed": a.get("passed"),
                          "bytes": _int(a.get("bytes")),
                          "batch1_p50_ms": _num(a.get("batch1_p50_ms"))}
                         for a in map(_mapping, dig(entry, "gate", "attempts") or [])],
            "fp32_bytes": _int(entry.get("fp32_bytes")),
            "bytes": _int(entry.get("bytes")),
            "size_ratio": _ratio(_int(entry.get("fp32_bytes")), _int(entry.get("bytes"))),
            **changes,
        }
    return {"models": out}


def _training(metrics: Mapping[str, Mapping[str, Any]],
              manifests: Mapping[str, Manifest | None], metric: str) -> dict[str, Any]:
    teacher, distill = metrics["teacher"], metrics["distill"]
    out: dict[str, Any] = {"teacher": None, "distill": None}
    if teacher:
        out["teacher"] = {
            "model": teacher.get("model"),
            "fine_tuned": teacher.get("fine_tuned"),
            "cache_hit": teacher.get("cache_hit"),
            "parameters": _int(teacher.get("parameters")),
            f"validation_{metric}": _num(dig(teacher, "validation", metric)),
            f"test_{metric}": _num(dig(teacher, "test", metric)),
            "history": _history(teacher.get("history"), metric),
            "best_epoch": _int(teacher.get("best_epoch")),  # kept by early stopping
            "processes": _mapping(teacher.get("processes")) or None,
            "duration_s": _duration(manifests.get("teacher")),
        }
    if distill:
        manifest = manifests.get("distill")
        section = _mapping(dig(manifest.config if manifest else None, "distill"))
        student = _mapping(distill.get("student"))
        student_params = _int(student.get("parameters"))
        out["distill"] = {
            "recipe": distill.get("recipe"),
            "temperature": _num(section.get("temperature")),
            "alpha": _num(section.get("alpha")),
            "student": {
                "source": student.get("source"),
                "layers": student.get("layers"),
                "num_layers": _int(student.get("num_layers")),
                "hidden_size": _int(student.get("hidden_size")),
                "parameters": student_params,
            },
            "parameter_ratio": _ratio(_int(teacher.get("parameters")), student_params),
            "best_epoch": _int(distill.get("best_epoch")),
            f"validation_{metric}": _num(dig(distill, "validation", metric)),
            f"test_{metric}": _num(dig(distill, "test", metric)),
            "reload_max_abs_diff": _num(distill.get("reload_max_abs_diff")),
            "history": _history(distill.get("history"), metric),
            "processes": _mapping(distill.get("processes")) or None,
            "duration_s": _duration(manifest),
            "lifelong": _mapping(distill.get("lifelong")) or None,
            "search": _mapping(distill.get("search")) or None,
            "extra_teachers": [{"model": t.get("model"), "fine_tuned": t.get("fine_tuned"),
                                f"test_{metric}": _num(dig(t, "test", metric))}
                               for t in map(_mapping, distill.get("extra_teachers") or [])],
            "other_tasks": {str(name): {
                "labels": _mapping(t).get("labels"),
                "test": _num(dig(t, "test", _first_metric(dig(t, "test")))),
                "teacher_test": _num(dig(t, "teacher_test", _first_metric(dig(t, "test")))),
                "metric": _first_metric(dig(t, "test"))}
                for name, t in _mapping(distill.get("tasks")).items()},
            "multi_task_teacher": _multi_task_teacher(distill.get("multi_task_teacher"), metric),
        }
    return out


def _multi_task_teacher(summary: Any, metric: str) -> dict[str, Any] | None:
    """The one teacher of every task (MKD): how it trained and its test score on this task."""
    summary = _mapping(summary)
    if not summary:
        return None
    return {"best_epoch": _int(summary.get("best_epoch")),
            "mean_validation_score": _num(summary.get("mean_validation_score")),
            "epochs": len(summary.get("history") or []), "cache_hit": bool(summary.get("cache_hit")),
            f"test_{metric}": _num(dig(summary, "scores", "target", "test", metric))}


def _first_metric(split: Any) -> str | None:
    """A task's primary metric: the first key of its summary metrics."""
    return next(iter(split), None) if isinstance(split, Mapping) else None


def _history(history: Any, metric: str) -> list[dict[str, Any]]:
    """Per-epoch rows; the validation score (the primary metric) under validation_<metric>."""
    if not isinstance(history, list):
        return []
    rows = []
    for h in map(_mapping, history):
        score = h.get("validation_score", h.get("validation_accuracy"))  # the older runs' key
        row: dict[str, Any] = {"epoch": _num(h.get("epoch")), "train_loss": _num(h.get("train_loss")),
                               f"validation_{metric}": _num(score), "seconds": _num(h.get("seconds"))}
        if "examples_per_s" in h:  # training throughput, all processes together
            row["examples_per_s"] = _num(h.get("examples_per_s"))
        phase = h.get("phase")
        if phase is not None:  # recipes with phases (annealing, two-stage) restart epochs
            row["phase"] = str(phase)
        used = [h[f"teacher{k}_selected"] for k in range(len(h)) if f"teacher{k}_selected" in h]
        if used:  # a teacher selector: the share of instances each teacher was used for
            row["teachers_used"] = [_num(u) for u in used]
        rows.append(row)
    return rows


def _data(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    data = metrics["data"]
    if not data:
        return None
    spread = ({"label_stats": data.get("label_stats")} if "label_stats" in data
              else {"label_counts": data.get("label_counts")})  # regression scores, or classes
    truncated = _mapping(metrics["teacher"].get("truncated"))  # counted with the teacher's tokenizer
    return {
        "source": data.get("source"),
        "labels": [str(label) for label in data.get("labels") or []],
        "num_labels": _int(data.get("num_labels")),
        "views": views_of(data),
        "splits": {str(k): _int(v) for k, v in _mapping(data.get("splits")).items()},
        **spread,
        "checks": {  # None in runs that predate the data checks
            "duplicates": _mapping(data.get("duplicates")) or None,
            "dropped_rows": _mapping(data.get("dropped_rows")) or None,
            "rare_classes": data.get("rare_classes"),
            "imbalance": _mapping(data.get("imbalance")) or None,
            "truncated": {str(k): _int(v) for k, v in truncated.items()} or None,
            "warnings": [str(w) for w in data.get("warnings") or []],
        },
    }


def views_of(data: Mapping[str, Any]) -> dict[str, str] | None:
    """Paired views from the data stage's metrics: the column each model read; None without."""
    views = _mapping(data.get("views"))
    return {"teacher": str(views["teacher"]), "student": str(views["student"])} if views else None


def views_sentence(views: Mapping[str, str]) -> str:
    """What paired views mean for the numbers, in one sentence."""
    return (f"Paired views: the teacher read column {views['teacher']!r} and the students column "
            f"{views['student']!r}, so the teacher's scores (and teacher-onnx's) are on its own "
            f"column, which a shipped model does not get: every student figure is on "
            f"{views['student']!r}, as an app would give it.")


def _benchmark(bench: Mapping[str, Any], batch_sizes: list[int], skipped: dict[str, str],
               skipped_targets: dict[str, str]) -> dict[str, Any]:
    """The grid and protocol; `sweep` lists every measured point when the grid has more than
    the headline configuration (one thread count and one sequence length)."""
    threads, lengths = _ints(bench.get("threads")), _ints(bench.get("sequence_lengths",
                                                                     bench.get("sequence_length")))
    sweep = [{"artifact": str(name), "threads": _int(p.get("threads")),
              "sequence_length": _int(p.get("sequence_length")),
              "batch_size": _int(p.get("batch_size")), "p50_ms": _num(p.get("p50_ms")),
              "p95_ms": _num(p.get("p95_ms")),
              "throughput_samples_per_s": _num(p.get("throughput_samples_per_s"))}
             for name, entry in _mapping(bench.get("models")).items()
             for p in (_mapping(entry).get("latency") if isinstance(
                 _mapping(entry).get("latency"), list) else [])
             if isinstance(p, Mapping)]
    return {
        "threads": threads[0] if threads else None,
        "sequence_length": lengths[0] if lengths else None,
        "sequence_length_basis": (str(bench["sequence_length_basis"])
                                  if bench.get("sequence_length_basis") else None),
        "threads_swept": threads,
        "sequence_lengths_swept": lengths,
        "batch_sizes": batch_sizes,
        "targets": [str(t) for t in bench.get("targets") or ["cpu"]],
        "protocol": bench.get("protocol"),
        "skipped": skipped,
        "skipped_targets": skipped_targets,
        "sweep": sweep if len(threads) > 1 or len(lengths) > 1 else [],
    }


def _added_target(results: Mapping[str, Any]) -> dict[str, Any]:
    """Where and how a device's results were measured (`kdedge bench` on the target)."""
    env = _mapping(results.get("environment"))
    cpu = _mapping(env.get("cpu"))
    return {
        "target": str(results["target"]),
        "cpu_model": cpu.get("model"),
        "arch": cpu.get("arch"),
        "isa": {k: v for k, v in _mapping(cpu.get("isa")).items() if v},
        "os": env.get("os"),
        "packages": dict(_mapping(env.get("packages"))),
        "threads": _ints(results.get("threads")),
        "sequence_lengths": _ints(results.get("sequence_lengths")),
        "batch_sizes": _ints(results.get("batch_sizes")),
        "models": sorted(str(name) for name in _mapping(results.get("models"))),
    }


def _ints(value: Any) -> list[int]:
    """A list of ints from a list or a single value (older results hold one number)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in (_int(x) for x in values) if v is not None]


def _environment(manifests: Mapping[str, Manifest | None]) -> dict[str, Any] | None:
    """The machine that measured speed (the bench's), and any stage that ran elsewhere."""
    order = ["bench", *reversed(REPORT_INPUTS[:-1])]
    source = next((n for n in order if manifests.get(n) and manifests[n].environment), None)
    if source is None:
        return None
    env = _mapping(manifests[source].environment)
    cpu = _mapping(env.get("cpu"))
    others = [{"stage": name, "cpu_model": dig(m.environment, "cpu", "model")}
              for name, m in manifests.items()
              if m is not None and m.environment and name != source
              and dig(m.environment, "cpu", "model") != cpu.get("model")]
    return {
        "stage": source,
        "cpu": {
            "model": cpu.get("model"),
            "arch": cpu.get("arch"),
            "isa": dict(_mapping(cpu.get("isa"))),
            "logical_cores": _int(cpu.get("logical_cores")),
            "physical_cores": _int(cpu.get("physical_cores")),
            "ram_bytes": _int(cpu.get("ram_bytes")),
        },
        "os": env.get("os"),
        "python": env.get("python"),
        "packages": dict(_mapping(env.get("packages"))),
        "kdedge_git_sha": env.get("kdedge_git_sha"),
        "other_machines": others,
    }


def _reproducibility(manifests: Mapping[str, Manifest | None], seed: int | None,
                     ) -> dict[str, Any]:
    stages = {name: None if m is None else {"fingerprint": m.fingerprint, "status": m.status,
                                            "started_at": m.started_at,
                                            "duration_s": _num(m.duration_s)}
              for name, m in ((n, manifests.get(n)) for n in REPORT_INPUTS)}
    shas = [dig(m.environment, "kdedge_git_sha") for m in manifests.values() if m is not None]
    return {
        "seed": seed,
        "config_path": RESOLVED_CONFIG,
        "kdedge_git_sha": next((s for s in shas if s), None),
        "report_kdedge_version": __version__,
        "stages": stages,
    }


def _notes(metrics: Mapping[str, Mapping[str, Any]], env: Mapping[str, Any] | None,
           missing: list[str], skipped: Mapping[str, str], skipped_targets: Mapping[str, str],
           ) -> list[str]:
    """Warnings a reader must see before trusting the tables."""
    notes = [f"The {name} stage has no manifest in this run; its parts of the report show n/a."
             for name in missing]
    notes += [str(w) for w in metrics["data"].get("warnings") or []]  # the data checks' findings
    read = views_of(metrics["data"])
    if read:
        notes.append(views_sentence(read))
    truncated = {str(k): _int(v) or 0 for k, v in _mapping(metrics["teacher"].get("truncated")).items()}
    if sum(truncated.values()):
        notes.append(f"{sum(truncated.values())} texts ("
                     + ", ".join(f"{k} {v}" for k, v in truncated.items())
                     + ") are longer than data.max_length tokens and were cut there; raise "
                       "data.max_length if their ends matter.")
    notes += [f"The bench skipped target {target}, which bench.targets asked for: {reason}."
              for target, reason in skipped_targets.items()]
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():  # an absent GPU skips every model on it alike
        by_reason.setdefault(reason, []).append(name)
    notes += [f"The bench skipped {', '.join(names)}: {reason}."
              for reason, names in by_reason.items()]
    for name, entry in _mapping(metrics["export"].get("models")).items():
        parity = _mapping(_mapping(entry).get("parity"))
        if parity.get("passed") is False:
            notes.append(f"Export parity FAILED for {name}: max abs diff "
                         f"{fmt_sci(_num(parity.get('max_abs_diff')))} exceeds atol "
                         f"{fmt_sci(_num(parity.get('atol')))}; its ONNX outputs do not match "
                         "PyTorch.")
    for name, entry in _mapping(metrics["quantize"].get("models")).items():
        graph = _mapping(_mapping(entry).get("graph"))
        gate = _mapping(_mapping(entry).get("gate"))
        if gate.get("passed") is False:
            notes.append(f"{name} failed the quantization gate: {gate.get('reason')}; "
                         "it is not recommended.")
        if graph.get("matmul_int8") == 0:
            notes.append(f"{name}: no MatMul was quantized to int8, so it cannot be faster than "
                         "its fp32 source.")
    if env:
        notes += [f"The {other['stage']} stage ran on another CPU ({other['cpu_model']}); the "
                  f"environment below is the {env['stage']} stage's, which measured speed."
                  for other in env["other_machines"]]
    return notes


def _remarks(env: Mapping[str, Any] | None, rows: Mapping[str, Mapping[str, Any]],
             quantize: Mapping[str, Any]) -> list[str]:
    """Facts that explain a number without casting doubt on it (the machine's int8 support)."""
    isa = dig(env, "cpu", "isa") if env else None
    if not (isinstance(isa, Mapping) and isa and rows["student-int8"].get("benchmarked")):
        return []
    remarks = []
    if not (isa.get("avx512_vnni") or isa.get("avx_vnni") or isa.get("asimddp")):
        remarks.append("This CPU has no VNNI (avx512_vnni / avx_vnni) or ARM dot-product "
                       "instructions: int8 speed-ups measured here understate what such CPUs give.")
    for name, entry in _mapping(quantize.get("models")).items():
        if _mapping(entry).get("preset") == "avx512_vnni" and not isa.get("avx512_vnni"):
            remarks.append(f"{name} was quantized for avx512_vnni, but the bench CPU lacks it.")
    return remarks


# ---------------------------------------------------------------------------------------------
# small helpers


def _load(stage_dir: Path) -> Manifest | None:
    return Manifest.load(stage_dir) if (stage_dir / MANIFEST).is_file() else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}



def _num(value: Any) -> float | None:
    """A finite number from a manifest, or None: NaN must not reach report.json."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _inf_if_none(value: float | None) -> float:
    return math.inf if value is None else value


def _test_score(row: Mapping[str, Any] | None, metric: str) -> float | None:
    return _num(dig(row, "test", metric))


def _duration(manifest: Manifest | None) -> float | None:
    return None if manifest is None else _num(manifest.duration_s)


def _clean(value: Any) -> Any:
    """Plain JSON types only: str keys, lists for tuples, None for NaN and infinity."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# several runs side by side (`kdedge report RUN_A RUN_B ...`)

COMPARISON_SCHEMA_VERSION = 1


def build_comparison(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Several runs' report data side by side: each run's verdict and, per artifact, the test
    score (the run's primary metric, `test_score`), p50 at the run's ranking batch, size and
    the ratios to that run's reference.

    `runs` pairs a run's name (its directory) with its report data. The first run is the
    baseline: each run's recommended artifact is also timed and scored against the first
    run's recommended artifact (`vs_baseline`), the question "is recipe B's pick better than
    recipe A's?" asks.
    """
    metrics = {str(data.get("primary_metric")) for _, data in runs}
    metric = metrics.pop() if len(metrics) == 1 else None
    columns = []
    for name, data in runs:
        rec = _mapping(data.get("recommendation"))
        key = None if rec.get("batch_size") is None else str(rec.get("batch_size"))
        primary = str(data.get("primary_metric"))
        artifacts = [{
            "name": row["name"], "target": row.get("target"), "produced": row.get("produced"),
            "test_score": _test_score(row, primary),
            "retained": row.get(f"retained_{primary}"),
            "p50_ms": dig(row.get("latency"), key, "p50_ms") if key else None,
            "speedup": dig(row.get("vs_reference"), "speedup", key) if key else None,
            "size_bytes": row.get("size_bytes"),
            "size_ratio": dig(row.get("vs_reference"), "size_ratio"),
            "recommended": row["name"] == rec.get("artifact"),
        } for row in map(_mapping, data.get("artifacts") or [])]
        best = next((a for a in artifacts if a["recommended"]), None)
        columns.append({
            "name": name, "task": data.get("task"), "primary_metric": primary,
            "recipe": dig(data, "training", "distill", "recipe"),
            "student": dig(data, "training", "distill", "student", "source"),
            "targets": dig(data, "benchmark", "targets"),
            "cpu_model": dig(data, "environment", "cpu", "model"),
            "seed": dig(data, "reproducibility", "seed"),
            "recommended": rec.get("artifact"), "fallback": rec.get("fallback"),
            "summary": rec.get("summary"), "batch_size": rec.get("batch_size"),
            "headline": dict(_mapping(rec.get("headline"))),
            "recommended_p50_ms": best["p50_ms"] if best else None,
            "recommended_test_score": best["test_score"] if best else None,
            "recommended_size_bytes": best["size_bytes"] if best else None,
            "artifacts": artifacts,
        })
    base = columns[0] if columns else None
    for column in columns:
        same = base is not None and metric is not None and column["batch_size"] == base["batch_size"]
        column["vs_baseline"] = {
            "speedup": _ratio(base["recommended_p50_ms"], column["recommended_p50_ms"])
            if same else None,
            "size_ratio": _ratio(base["recommended_size_bytes"], column["recommended_size_bytes"])
            if base else None,
            "score_delta": _diff(column["recommended_test_score"],
                                 base["recommended_test_score"]) if same else None,
        }
    return _clean({"schema_version": COMPARISON_SCHEMA_VERSION, "kind": "comparison",
                   "primary_metric": metric, "baseline": base["name"] if base else None,
                   "runs": columns})

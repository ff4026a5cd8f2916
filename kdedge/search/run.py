"""distill.student auto: the student search, run inside the distill stage.

1. Latency first: every candidate (distill.search.candidates, each with the search's vocabulary
   setting) and the teacher are built untrained at their real shapes, exported, quantized and
   timed under the bench protocol: on this machine (probe.py), or read from the results of a
   probe bundle benched on the target device (distill.search.target_latency, device.py). A
   candidate's latency is that of its faster precision. Candidates over the latency budget are
   never trained.
2. Successive halving: every remaining candidate trains `first_epochs` epochs of its recipe's
   schedule on the shared, cached teacher outputs, which times an epoch of each; then, in the
   order of their promise (selection.promise), they train to the schedule's end from their
   checkpoints while the whole search, the probe included, stays within `cost` times the
   costliest candidate's own distillation (the most promising always finishes).
3. The rule (selection.select): the fastest candidate keeping min_retention of the teacher's
   validation score; if none does, the most accurate one, and the report says so.

Each candidate is a unit of its own under the stage's checkpoints (search/NAME): its probe
result and its per-epoch training checkpoints, so an interrupted search resumes where it
stopped and reaches the same winner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdedge.artifacts import MODEL_DIR
from kdedge.errors import KdedgeError
from kdedge.models.students import learning_rate
from kdedge.search import device, selection
from kdedge.search.probe import (
    BENCH_TEXTS,
    TEACHER,
    CandidateSpec,
    ProbeSettings,
    probe,
    search_candidates,
)

log = logging.getLogger("kdedge")

PROBE_DIR = "probe"
SEARCH_DIR = "search"


def search(ctx: Any, task: Any, shared: Any, distill_student: Callable[..., Any],
           ) -> tuple[Any, dict[str, Any]]:
    """(the winner, trained and restored to its kept state; what the search did, for the
    report). `distill_student` is the distill stage's (distill/classifier.py): (ctx, task,
    shared, spec, vocabulary, checkpoints, stop_after) -> a trained student."""
    cfg = ctx.cfg.distill.search
    root = (ctx.checkpoints if ctx.checkpoints is not None else ctx.work) / SEARCH_DIR
    teacher_layers = shared.teacher.config.num_hidden_layers
    timed = search_candidates(cfg, teacher_layers)
    specs = {c.name: c.student for c in timed if c.name != TEACHER}
    latencies, source, probe_s = _latencies(ctx, task, timed, root)
    teacher_latency = latencies[TEACHER]["latency_ms"]
    teacher_score = _teacher_score(ctx, task)
    budget = selection.Budget(cfg.min_retention, cfg.max_latency_ms, cfg.min_speedup)
    ranked = [selection.Candidate(name, latencies[name]["latency_ms"]) for name in specs]
    feasible = {c.name for c in selection.within_latency(ranked, budget, teacher_latency)}
    pruned = [name for name in specs if name not in feasible]
    if pruned:
        log.info("  search: %s over the latency budget, not trained", ", ".join(pruned))

    def trained(name: str, stop_after: int | None) -> Any:
        log.info("  search: %s (%s)", name, "to the end" if stop_after is None
                 else f"{stop_after} epoch(s)")
        return distill_student(ctx, task, shared, specs[name], cfg.vocabulary, root / name,
                               stop_after, rates[name])

    rates = {name: learning_rate(spec, teacher_layers) for name, spec in specs.items()}
    rows: dict[str, dict[str, Any]] = {}
    for name in specs:  # in the configured order, so a resumed search retraces its steps
        if name in feasible:
            result = trained(name, cfg.first_epochs)
            rows[name] = _row(result)
    first_round = [selection.Candidate(n, latencies[n]["latency_ms"], rows[n]["validation_score"])
                   for n in rows]
    # seconds per epoch, from the first epochs; the schedule's epochs (per phase for recipes of
    # several phases: an estimate)
    epochs = ctx.cfg.distill.training.epochs
    per_epoch = {n: rows[n]["seconds"] / max(rows[n]["epochs"], 1) for n in rows}
    allowed = cfg.cost * max((per_epoch[n] * epochs for n in rows), default=0.0)
    spent = probe_s + sum(rows[n]["seconds"] for n in rows)
    for rank, name in enumerate(selection.promise(first_round, teacher_score, budget, cfg.margin)):
        rest = per_epoch[name] * max(epochs - rows[name]["epochs"], 0)
        if rank > 0 and spent + rest > allowed:
            continue  # a cheaper one further down may still fit
        if rows[name]["paused"]:
            spent -= rows[name]["seconds"]
            rows[name] = _row(trained(name, None))
            spent += rows[name]["seconds"]
        rows[name]["finalist"] = True
    scored = [selection.Candidate(n, latencies[n]["latency_ms"], rows[n]["validation_score"])
              for n in rows]
    choice = selection.select(scored, teacher_score, teacher_latency, budget)
    log.info("  search: %s", choice.reason)
    winner = trained(choice.winner, None if rows[choice.winner].get("finalist")
                     else cfg.first_epochs)  # restored from its checkpoint, not trained again
    limit = budget.latency_limit_ms(teacher_latency)
    report = {
        "winner": choice.winner, "student": specs[choice.winner], "within_budget": choice.within_budget,
        "reason": choice.reason, "latency_source": source,
        **({"latency_file": device.identity(cfg.target_latency)} if cfg.target_latency else {}),
        "budget": {"min_retention": cfg.min_retention, "max_latency_ms": cfg.max_latency_ms,
                   "min_speedup": cfg.min_speedup, "latency_limit_ms": limit},
        "schedule": {"first_epochs": cfg.first_epochs, "epochs": epochs, "cost": cfg.cost,
                     "margin": cfg.margin, "vocabulary": cfg.vocabulary,
                     "allowed_s": round(allowed, 1), "spent_s": round(spent, 1),
                     "probe_s": round(probe_s, 1)},
        "teacher": {"latency_ms": teacher_latency, "validation_score": teacher_score,
                    **{k: latencies[TEACHER][k] for k in ("precision", "size_bytes", "parameters")}},
        "candidates": [{
            "name": name, "student": spec, **latencies[name],
            "pruned_by_latency": name in pruned,
            "learning_rate": rates[name] or ctx.cfg.distill.training.learning_rate,
            "speedup": teacher_latency / latencies[name]["latency_ms"],
            **rows.get(name, {"validation_score": None, "epochs": 0, "finalist": False}),
            "retention": (rows[name]["validation_score"] / teacher_score if name in rows else None),
            "winner": name == choice.winner,
        } for name, spec in specs.items()],
    }
    return winner, report


def _row(result: Any) -> dict[str, Any]:
    return {"validation_score": result.best_score, "epochs": len(result.history),
            "seconds": round(sum(row.get("seconds", 0.0) for row in result.history), 2),
            "paused": result.paused, "finalist": False, "best_epoch": result.best_epoch,
            "trained_parameters": result.info.get("parameters")}


def _teacher_score(ctx: Any, task: Any) -> float:
    score = ((ctx.manifest("teacher").metrics.get("validation") or {}).get(task.primary_metric))
    if not isinstance(score, int | float):
        raise KdedgeError(f"The teacher stage recorded no validation {task.primary_metric}; "
                          "re-run it (kdedge teacher RUN_DIR --force) before the student search.")
    return float(score)


def _latencies(ctx: Any, task: Any, candidates: list[CandidateSpec], root: Path,
               ) -> tuple[dict[str, dict[str, Any]], str, float]:
    """{name: latency_ms, precision, size_bytes, parameters} for the teacher (fp32 ONNX, what
    the report compares with) and every candidate (its faster precision); how they were timed:
    here, or on the target device when distill.search.target_latency names its results; and
    the seconds probing took here (as recorded, so a resumed search counts the same; none
    for the device's)."""
    teacher_dir = ctx.input("teacher") / MODEL_DIR
    settings = ProbeSettings.from_config(ctx.cfg, task, teacher_dir)
    results = ctx.cfg.distill.search.target_latency
    if results is not None:
        probed, source = device.read_results(results, candidates, settings.sequence_length)
    else:
        probed = probe(candidates, teacher_dir, task.splits["train"].texts,
                       task.splits["validation"].texts[:BENCH_TEXTS], root / PROBE_DIR, settings)
        source = (f"probed here, {settings.threads} thread(s), sequence length "
                  f"{settings.sequence_length}")
    out = {}
    for candidate in candidates:
        precisions = probed[candidate.name]["precisions"]
        precision = min(candidate.precisions, key=lambda p: precisions[p]["p50_ms"])
        out[candidate.name] = {"latency_ms": precisions[precision]["p50_ms"], "precision": precision,
                               "size_bytes": precisions[precision]["size_bytes"],
                               "parameters": probed[candidate.name].get("parameters")}
    return out, source, sum(result.get("seconds", 0.0) for result in probed.values())

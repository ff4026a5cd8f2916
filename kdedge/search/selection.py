"""The selection rule: the fastest candidate within the retention budget; if none qualifies,
the most accurate one, with the reason. Pure: scores and latencies in, a choice out.

Retention is a candidate's validation score over the teacher's (the task's primary metric,
higher is better). The latency budget is the tighter of `max_latency_ms` and the teacher's
latency over `min_speedup`, both at batch 1 on the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdedge.errors import KdedgeError

DEFAULT_MIN_RETENTION = 0.97


@dataclass(frozen=True)
class Budget:
    min_retention: float = DEFAULT_MIN_RETENTION  # of the teacher's primary validation metric
    max_latency_ms: float | None = None  # batch-1 p50 on the target
    min_speedup: float | None = None  # teacher latency / candidate latency, on the same target

    def latency_limit_ms(self, teacher_latency_ms: float) -> float | None:
        """The largest batch-1 latency a candidate may have, or None when there is no bound."""
        limits = [limit for limit in (self.max_latency_ms, None if self.min_speedup is None
                                      else teacher_latency_ms / self.min_speedup) if limit is not None]
        return min(limits) if limits else None


@dataclass(frozen=True)
class Candidate:
    name: str
    latency_ms: float  # batch-1 p50 on the target
    score: float | None = None  # primary validation metric; None when it was never trained


@dataclass(frozen=True)
class Choice:
    winner: str
    within_budget: bool
    reason: str


def within_latency(candidates: Sequence[Candidate], budget: Budget, teacher_latency_ms: float,
                   ) -> list[Candidate]:
    """The candidates worth training: those that meet the latency budget (all, without one)."""
    limit = budget.latency_limit_ms(teacher_latency_ms)
    return [c for c in candidates if limit is None or c.latency_ms <= limit]


def select(candidates: Sequence[Candidate], teacher_score: float, teacher_latency_ms: float,
           budget: Budget) -> Choice:
    """Apply the rule to the trained candidates (those with a score); ties on latency go to the
    higher score, ties on score to the faster one, then to the name, so the choice is stable."""
    if teacher_score <= 0:
        raise KdedgeError(f"The teacher's validation score is {teacher_score}; retention needs a "
                          "positive score, so pick a positive primary metric for this task.")
    kept = {c.name: c.score / teacher_score for c in candidates if c.score is not None}
    trained = [c for c in candidates if c.name in kept]
    if not trained:
        raise KdedgeError("No candidate student meets the latency budget, so none was trained; "
                          "raise --max-latency-ms, lower --min-speedup or widen the candidates.")
    limit = budget.latency_limit_ms(teacher_latency_ms)
    fast = [c for c in trained if limit is None or c.latency_ms <= limit]
    good = [c for c in fast if kept[c.name] >= budget.min_retention]
    if good:
        best = min(good, key=lambda c: (c.latency_ms, -kept[c.name], c.name))
        return Choice(best.name, True, (
            f"the fastest of {len(good)} candidate(s) keeping at least {budget.min_retention:.1%} "
            f"of the teacher's score: {_facts(best, kept, teacher_latency_ms)}"))
    best = min(fast or trained, key=lambda c: (-kept[c.name], c.latency_ms, c.name))
    missed = (f"no candidate keeps {budget.min_retention:.1%} of the teacher's score" if fast else
              f"no trained candidate meets the latency budget of {limit:.2f} ms")
    return Choice(best.name, False, f"{missed}, so the most accurate one ships: "
                                    f"{_facts(best, kept, teacher_latency_ms)}")


def _facts(best: Candidate, kept: dict[str, float], teacher_latency_ms: float) -> str:
    return (f"{best.name} keeps {kept[best.name]:.1%} at {best.latency_ms:.2f} ms, "
            f"{teacher_latency_ms / best.latency_ms:.2f}x the teacher's speed")


def promise(candidates: Sequence[Candidate], teacher_score: float, budget: Budget,
            margin: float) -> list[str]:
    """The trained candidates, scored after the first epochs, in the order they deserve the
    rest of their training (successive halving).

    The rule ships the fastest candidate that keeps the retention budget, so the fastest ones
    that may still reach it come first: those within `margin` of it now, fastest first. The
    others follow, most accurate first (the rule's fallback)."""
    kept = {c.name: c.score / teacher_score for c in candidates if c.score is not None}
    ranked = [c for c in candidates if c.name in kept]
    hopeful = sorted((c for c in ranked if kept[c.name] >= budget.min_retention - margin),
                     key=lambda c: (c.latency_ms, -kept[c.name], c.name))
    rest = sorted((c for c in ranked if c not in hopeful),
                  key=lambda c: (-kept[c.name], c.latency_ms, c.name))
    return [c.name for c in [*hopeful, *rest]]

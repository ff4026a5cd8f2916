"""The selection rule on synthetic scores and latencies: budget met, none met, ties."""

from __future__ import annotations

import pytest

from kdedge.errors import KdedgeError
from kdedge.search.selection import Budget, Candidate, select, within_latency

TEACHER_SCORE, TEACHER_MS = 0.80, 14.0
CANDIDATES = [
    Candidate("cut-3", latency_ms=6.0, score=0.790),  # keeps 98.75 %
    Candidate("narrow", latency_ms=3.0, score=0.780),  # keeps 97.5 %
    Candidate("bilstm", latency_ms=1.0, score=0.760),  # keeps 95.0 %
    Candidate("cut-1", latency_ms=0.5, score=None),  # pruned before training
]


def test_the_fastest_candidate_within_the_retention_budget_wins() -> None:
    choice = select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget())
    assert choice.winner == "narrow" and choice.within_budget
    assert choice.reason == ("the fastest of 2 candidate(s) keeping at least 97.0% of the teacher's "
                             "score: narrow keeps 97.5% at 3.00 ms, 4.67x the teacher's speed")
    assert select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget(min_retention=0.95)).winner == "bilstm"
    assert select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget(min_retention=0.98)).winner == "cut-3"


def test_when_none_keeps_enough_the_most_accurate_one_ships_with_the_reason() -> None:
    choice = select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget(min_retention=0.99))
    assert choice == type(choice)("cut-3", False, (
        "no candidate keeps 99.0% of the teacher's score, so the most accurate one ships: cut-3 keeps "
        "98.8% at 6.00 ms, 2.33x the teacher's speed"))


def test_latency_budgets_prune_and_bound_the_choice() -> None:
    assert Budget(max_latency_ms=5.0, min_speedup=2.0).latency_limit_ms(TEACHER_MS) == 5.0
    assert Budget(max_latency_ms=9.0, min_speedup=2.0).latency_limit_ms(TEACHER_MS) == 7.0
    assert Budget().latency_limit_ms(TEACHER_MS) is None
    fast = within_latency(CANDIDATES, Budget(min_speedup=4.0), TEACHER_MS)  # at most 3.5 ms
    assert [c.name for c in fast] == ["narrow", "bilstm", "cut-1"]
    assert len(within_latency(CANDIDATES, Budget(), TEACHER_MS)) == 4
    # retention met only by a candidate too slow for the budget: the most accurate fast one ships
    choice = select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget(min_retention=0.98, max_latency_ms=4.0))
    assert (choice.winner, choice.within_budget) == ("narrow", False)
    assert choice.reason.startswith("no candidate keeps 98.0% of the teacher's score")
    choice = select(CANDIDATES, TEACHER_SCORE, TEACHER_MS, Budget(max_latency_ms=0.9))
    assert (choice.winner, choice.within_budget) == ("cut-3", False)
    assert choice.reason.startswith("no trained candidate meets the latency budget of 0.90 ms, so the "
                                    "most accurate one ships: cut-3 keeps 98.8%")


def test_ties_go_to_the_better_score_then_the_faster_then_the_name() -> None:
    same_speed = [Candidate("b", 2.0, 0.79), Candidate("a", 2.0, 0.78), Candidate("c", 2.0, 0.79)]
    assert select(same_speed, TEACHER_SCORE, TEACHER_MS, Budget()).winner == "b"
    same_score = [Candidate("slow", 5.0, 0.70), Candidate("fast", 4.0, 0.70), Candidate("z", 4.0, 0.70)]
    choice = select(same_score, TEACHER_SCORE, TEACHER_MS, Budget())
    assert (choice.winner, choice.within_budget) == ("fast", False)
    exact = [Candidate("edge", 3.5, 0.776), Candidate("slower", 3.6, 0.79)]  # 0.776 = 97.0 % exactly
    assert select(exact, TEACHER_SCORE, TEACHER_MS, Budget(min_speedup=4.0)).winner == "edge"


def test_nothing_trained_or_a_non_positive_teacher_score_is_refused() -> None:
    with pytest.raises(KdedgeError, match=r"^No candidate student meets the latency budget, so none "
                                          r"was trained; raise --max-latency-ms"):
        select([Candidate("cut-1", 0.5)], TEACHER_SCORE, TEACHER_MS, Budget())
    with pytest.raises(KdedgeError, match=r"^The teacher's validation score is 0.0; retention needs"):
        select(CANDIDATES, 0.0, TEACHER_MS, Budget())


def test_promise_puts_the_fastest_that_may_still_reach_the_budget_first() -> None:
    from kdedge.search.selection import promise

    scored = [Candidate("cut-3", 6.0, 0.96), Candidate("cut-2", 4.0, 0.90),
              Candidate("narrow", 2.0, 0.955), Candidate("bilstm", 1.0, 0.94)]
    budget = Budget(min_retention=0.97)
    # within 0.02 of 0.97 (teacher 1.0): narrow (0.955) and cut-3 (0.96), fastest first; then
    # the rest, most accurate first
    assert promise(scored, 1.0, budget, 0.02) == ["narrow", "cut-3", "bilstm", "cut-2"]
    # a wider margin lets the fastest in first
    assert promise(scored, 1.0, budget, 0.04) == ["bilstm", "narrow", "cut-3", "cut-2"]
    # nobody close: most accurate first
    assert promise(scored, 1.0, Budget(min_retention=0.999), 0.001) == ["cut-3", "narrow",
                                                                        "bilstm", "cut-2"]
    assert promise([Candidate("x", 1.0)], 1.0, budget, 0.02) == []  # untrained: none

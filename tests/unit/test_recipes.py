"""Recipes name their loss terms per phase; regression swaps the class-based terms for MSE."""

from __future__ import annotations

import pytest

from kdedge.config import DistillConfig
from kdedge.distill.recipes import RECIPES, Dims

CLASSES, SCORES = Dims(32, 32), Dims(32, 32, regression=True)


def terms(recipe: str, dims: Dims, **options: object) -> list[list[tuple[str, float]]]:
    cfg = DistillConfig(recipe=recipe, **options)
    return [[(name, weight) for name, weight, _ in phase.losses] for phase in RECIPES.get(recipe)(cfg, dims)]


def test_classification_terms_are_kl_and_ce() -> None:
    assert terms("kd", CLASSES, alpha=0.3) == [[("kl", 0.3), ("ce", pytest.approx(0.7))]]
    assert terms("kd", CLASSES, logit_loss="mse") == [[("mse_logits", 0.5), ("ce", 0.5)]]
    assert terms("annealing", CLASSES) == [[("annealed_mse", 1.0)], [("ce", 1.0)]]
    assert terms("two-stage", CLASSES, logit_loss="l1")[1] == [("l1_logits", 0.5), ("ce", 0.5)]


@pytest.mark.parametrize("logit_loss", ["kl", "mse"])
def test_regression_kd_is_mse_to_the_teacher_and_to_gold(logit_loss: str) -> None:
    assert terms("kd", SCORES, alpha=0.3, logit_loss=logit_loss) == [
        [("mse_logits", 0.3), ("mse_gold", pytest.approx(0.7))]]


def test_regression_keeps_l1_and_ends_annealing_on_gold_mse() -> None:
    assert terms("kd", SCORES, logit_loss="l1") == [[("l1_logits", 0.5), ("mse_gold", 0.5)]]
    assert terms("annealing", SCORES) == [[("annealed_mse", 1.0)], [("mse_gold", 1.0)]]
    assert terms("two-stage", SCORES)[1] == [("mse_logits", 0.5), ("mse_gold", 0.5)]

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



def test_two_stage_defaults_are_the_papers() -> None:
    """Stage 1: L1 between sentence vectors; stage 2: CE + L1 between logits, each weight 1, no
    temperature, on span-masked student inputs (select_prob 0.2, spans of 5)."""
    represent, logits = RECIPES.get("two-stage")(DistillConfig(recipe="two-stage"), CLASSES)
    assert [(n, w, k["distance"]) for n, w, k in represent.losses] == [("representation", 1.0, "l1")]
    assert represent.span_mask is None and represent.keep == "last"
    assert [(n, w, k) for n, w, k in logits.losses] == [("l1_logits", 1.0, {}), ("ce", 1.0, {})]
    assert logits.span_mask == (0.2, 5)
    assert terms("two-stage", SCORES)[1] == [("l1_logits", 1.0), ("mse_gold", 1.0)]
    # our variant: logit KD with alpha and temperature; masking off
    variant = {"two_stage": {"stage2": "kd", "span_mask_prob": 0.0}}
    assert terms("two-stage", CLASSES, **variant)[1] == [("kl", 0.5), ("ce", 0.5)]
    assert terms("two-stage", CLASSES, logit_loss="l1", **variant)[1] == [("l1_logits", 0.5),
                                                                          ("ce", 0.5)]
    assert RECIPES.get("two-stage")(DistillConfig(recipe="two-stage", **variant),
                                    CLASSES)[1].span_mask is None


@pytest.mark.parametrize("logit_loss", ["kl", "mse"])
def test_regression_kd_is_mse_to_the_teacher_and_to_gold(logit_loss: str) -> None:
    assert terms("kd", SCORES, alpha=0.3, logit_loss=logit_loss) == [
        [("mse_logits", 0.3), ("mse_gold", pytest.approx(0.7))]]


def test_regression_keeps_l1_and_ends_annealing_on_gold_mse() -> None:
    assert terms("kd", SCORES, logit_loss="l1") == [[("l1_logits", 0.5), ("mse_gold", 0.5)]]
    assert terms("annealing", SCORES) == [[("annealed_mse", 1.0)], [("mse_gold", 1.0)]]
    assert terms("two-stage", SCORES, two_stage={"stage2": "kd"})[1] == [("mse_logits", 0.5),
                                                                         ("mse_gold", 0.5)]

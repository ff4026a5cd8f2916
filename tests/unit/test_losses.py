"""Golden values for the loss modules, computed by hand for fixed logits."""

import math

import pytest
import torch

from kdedge.distill import losses
from kdedge.errors import KdedgeError
from kdedge.training.outputs import Outputs

STUDENT = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
TEACHER = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
BATCH = {"labels": torch.tensor([0, 1])}


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_kl_matches_hinton_formula_with_t_squared() -> None:
    t = 2.0
    expected = t * t * sum(_kl(_softmax(tr, t), _softmax(sr, t))
                           for tr, sr in zip(TEACHER.tolist(), STUDENT.tolist(), strict=True)) / 2
    got = losses.SoftTargetKL(temperature=t)(Outputs(STUDENT), Outputs(TEACHER), BATCH)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(got) == pytest.approx(0.2363863, abs=1e-6)  # golden value


def test_kl_is_zero_when_student_equals_teacher() -> None:
    got = losses.SoftTargetKL(4.0)(Outputs(TEACHER), Outputs(TEACHER), BATCH)
    assert float(got) == pytest.approx(0.0, abs=1e-7)


def test_ce_and_weighted_sum() -> None:
    ce = float(losses.HardLabelCE()(Outputs(STUDENT), None, BATCH))
    assert ce == pytest.approx(0.2200948, abs=1e-6)  # (ln(1+e^-2) + ln(1+e^-1)) / 2
    combined = losses.build([("kl", 0.5, {"temperature": 2.0}), ("ce", 0.5, {})])
    total, parts = combined(Outputs(STUDENT), Outputs(TEACHER), BATCH)
    assert float(total) == pytest.approx(0.5 * 0.2363863 + 0.5 * ce, abs=1e-6)
    assert set(parts) == {"kl", "ce"}


def test_logit_mse() -> None:
    got = losses.LogitMSE()(Outputs(STUDENT), Outputs(TEACHER), BATCH)
    assert float(got) == pytest.approx((1 + 0 + 0 + 4) / 4)


def test_mse_gold_golden_value() -> None:
    scores = Outputs(torch.tensor([[1.0], [2.5], [-0.5]]))
    gold = {"labels": torch.tensor([2.0, 2.0, 1.5])}
    # ((1 - 2)^2 + (2.5 - 2)^2 + (-0.5 - 1.5)^2) / 3 = (1 + 0.25 + 4) / 3
    assert float(losses.GoldMSE()(scores, None, gold)) == pytest.approx(1.75)


def test_mse_gold_skips_rows_without_a_gold_score() -> None:
    scores = Outputs(torch.tensor([[1.0], [2.5], [-0.5]], requires_grad=True))
    mixed = {"labels": torch.tensor([2.0, float("nan"), 1.5])}
    got = losses.GoldMSE()(scores, None, mixed)
    assert float(got.detach()) == pytest.approx((1 + 4) / 2)  # the NaN row is left out
    got.backward()  # and gets no gradient: d/ds of ((s - y)^2 summed over gold rows) / 2 = s - y
    assert scores.logits.grad.squeeze(-1).tolist() == pytest.approx([-1.0, 0.0, -2.0])
    none = losses.GoldMSE()(scores, None, {"labels": torch.tensor([float("nan")] * 3)})
    assert float(none.detach()) == 0.0


def test_mse_logits_on_one_output_is_mse_to_the_teachers_score() -> None:
    got = losses.LogitMSE()(Outputs(torch.tensor([[1.0], [3.0]])), Outputs(torch.tensor([[0.5], [4.0]])),
                            {"labels": torch.tensor([0.0, 0.0])})
    assert float(got) == pytest.approx((0.25 + 1.0) / 2)


def test_unknown_loss_lists_the_known_ones() -> None:
    with pytest.raises(KdedgeError, match="Unknown loss 'kld'; known: annealed_mse, ce, "
                                          "imitation_ce, kl, l1_logits, l2kd_word, mse_gold, "
                                          "mse_logits, multi_teacher_kd, per_task, prompt_lm, "
                                          "representation, token_ce, word_kd"):
        losses.build([("kld", 1.0, {})])


def test_annealing_phi_is_the_papers_staircase() -> None:
    phis = [losses.annealing_phi(epoch, tau_max=7, epochs=14) for epoch in range(1, 15)]
    assert phis == pytest.approx([k / 7 for k in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)])
    assert [losses.annealing_phi(e, 3, 3) for e in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_annealing_phi_is_clamped_where_the_reference_code_overshoots() -> None:
    # 20 epochs, tau_max 7: a step every 2 epochs, so the unclamped factor reaches 10/7
    assert losses.annealing_phi(20, 7, 20, clamp=False) == pytest.approx(10 / 7)
    assert losses.annealing_phi(20, 7, 20, clamp=True) == 1.0
    assert losses.annealing_phi(13, 7, 20, clamp=True) == 1.0


def test_annealed_mse_golden_value_follows_the_epoch() -> None:
    loss = losses.AnnealedLogitMSE(tau_max=2, epochs=2)
    combined = losses.WeightedSum([("annealed_mse", 1.0, loss)])
    assert combined.begin_epoch(1) == {"annealed_mse_phi": 0.5}
    # epoch 1: targets are 0.5 x teacher = [[0.5, 0], [0, 1.5]]
    first = float(loss(Outputs(STUDENT), Outputs(TEACHER), BATCH))
    assert first == pytest.approx((1.5**2 + 0 + 0 + 0.5**2) / 4)
    combined.begin_epoch(2)
    assert float(loss(Outputs(STUDENT), Outputs(TEACHER), BATCH)) == pytest.approx(1.25)


def test_l1_logits_sums_classes_and_averages_the_batch() -> None:
    got = losses.LogitL1()(Outputs(STUDENT), Outputs(TEACHER), BATCH)
    assert float(got) == pytest.approx(((1 + 0) + (0 + 2)) / 2)


def test_representation_loss_on_cached_and_pooled_vectors() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1, 3 tokens, 2)
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    student = Outputs(torch.zeros(1, 2), hidden_states=(hidden,))
    teacher = Outputs(torch.zeros(1, 2), sentence={"cls": torch.tensor([[1.0, 0.0]]),
                                                   "mean": torch.tensor([[2.0, 3.0]])})
    batch = {"attention_mask": mask}
    mean_mse = losses.SentenceMatch(2, 2, pooling="mean", distance="mse")
    assert float(mean_mse(student, teacher, batch)) == 0.0  # mean of the two real tokens
    cls_mse = losses.SentenceMatch(2, 2, pooling="cls", distance="mse")
    assert float(cls_mse(student, teacher, batch)) == pytest.approx((0 + 4) / 2)
    cosine = losses.SentenceMatch(2, 2, pooling="cls", distance="cosine")
    assert float(cosine(student, teacher, batch)) == pytest.approx(1 - 1 / 5**0.5)
    projected = losses.SentenceMatch(2, 3)
    assert projected.projection is not None and projected.projection.out_features == 3
    assert losses.SentenceMatch(2, 2).projection is None

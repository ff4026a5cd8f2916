"""Distillation recipes: which losses, with which weights, over the one training loop.

A recipe names its loss terms and the teacher outputs they need; the loop is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdedge.config import DistillConfig
from kdedge.registry import Registry


@dataclass(frozen=True)
class Phase:
    """One run of the training loop: fresh optimizer, starting from the previous phase's best."""

    name: str
    losses: tuple[tuple[str, float, dict[str, Any]], ...]  # (loss name, weight, kwargs)
    teacher_outputs: tuple[str, ...]  # what the losses read from the teacher, e.g. ("logits",)
    epochs: int | None = None  # None: distill.training.epochs


RECIPES: Registry[Any] = Registry("distillation recipe")


@RECIPES.register("kd")
def vanilla_kd(cfg: DistillConfig) -> list[Phase]:
    """Hinton et al. (2015): alpha * T^2 KL(soft teacher || soft student) + (1 - alpha) * CE.

    With logit_loss "mse" the soft term is the MSE between raw logits instead (Ba & Caruana).
    """
    soft = ("kl", cfg.alpha, {"temperature": cfg.temperature}) if cfg.logit_loss == "kl" else (
        "mse_logits", cfg.alpha, {})
    return [Phase("kd", (soft, ("ce", 1.0 - cfg.alpha, {})), ("logits",))]


@RECIPES.register("annealing")
def annealing_kd(cfg: DistillConfig) -> list[Phase]:
    """Jafari et al. (2021): phase I regresses raw logits on Phi(epoch) x teacher logits (Phi a
    staircase from 1/tau_max to 1); phase II trains on gold labels only, from the best phase-I
    checkpoint with a fresh optimizer. No alpha: the two losses never meet."""
    a = cfg.annealing
    anneal = ("annealed_mse", 1.0, {"tau_max": a.tau_max, "epochs": a.phase1_epochs,
                                     "clamp": a.clamp_phi})
    return [Phase("anneal", (anneal,), ("logits",), a.phase1_epochs),
            Phase("finetune", (("ce", 1.0, {}),), (), a.phase2_epochs)]

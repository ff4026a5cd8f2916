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
    name: str
    losses: tuple[tuple[str, float, dict[str, Any]], ...]  # (loss name, weight, kwargs)
    teacher_outputs: tuple[str, ...]  # what the losses read from the teacher, e.g. ("logits",)


RECIPES: Registry[Any] = Registry("distillation recipe")


@RECIPES.register("kd")
def vanilla_kd(cfg: DistillConfig) -> list[Phase]:
    """Hinton et al. (2015): alpha * T^2 KL(soft teacher || soft student) + (1 - alpha) * CE."""
    return [Phase("kd", (("kl", cfg.alpha, {"temperature": cfg.temperature}),
                         ("ce", 1.0 - cfg.alpha, {})), ("logits",))]

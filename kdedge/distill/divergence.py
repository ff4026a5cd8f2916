"""The tempered KL divergence every soft-target loss shares (Hinton et al. 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tempered_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) over the last dimension, one value
    per row (the leading dimensions broadcast: one student against several teachers). The T^2
    keeps the gradient's scale comparable across temperatures, so a loss weight means the same
    at every T."""
    t = temperature
    log_s = F.log_softmax(student.float() / t, dim=-1)
    log_t = F.log_softmax(teacher.float() / t, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * t * t

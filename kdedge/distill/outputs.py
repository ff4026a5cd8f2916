"""Model outputs normalized once, so losses never index into architecture-specific tuples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Outputs:
    logits: torch.Tensor  # (batch, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # each (batch, seq, hidden)
    attentions: tuple[torch.Tensor, ...] | None = None  # each (batch, heads, seq, seq)

    @classmethod
    def from_hf(cls, out: Any) -> Outputs:
        return cls(out.logits, getattr(out, "hidden_states", None), getattr(out, "attentions", None))

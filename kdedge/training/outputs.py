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
    sentence: dict[str, torch.Tensor] | None = None  # pooled vectors by pooling, e.g. cached
    ensemble: torch.Tensor | None = None  # (batch, teachers, num_labels): every teacher's logits
    layers: dict[int, dict[str, torch.Tensor]] | None = None  # cached pooled vectors of some
    # intermediate layers, by layer (0 = the embeddings) and pooling ("cls", "mean")

    @classmethod
    def from_hf(cls, out: Any) -> Outputs:
        return cls(out.logits, getattr(out, "hidden_states", None), getattr(out, "attentions", None))

    def sentence_vector(self, pooling: str, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, hidden): the cached vector if there is one, else pooled from the last layer."""
        if self.sentence is not None and pooling in self.sentence:
            return self.sentence[pooling]
        if not self.hidden_states:
            raise ValueError("this loss needs hidden states or pooled sentence vectors")
        return pool(self.hidden_states[-1], attention_mask, pooling)


@dataclass(frozen=True)
class Feedback:
    """One accumulation pass of an optimizer step, for a loss that learns from the step's effect
    (a teacher selector): the student's outputs on the pass's rows just before and just after
    the step, both in eval mode. `counted` is False for the pass of a process without rows."""

    batch: dict[str, Any]
    before: Outputs
    after: Outputs
    counted: bool = True


def pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The first token's vector ("cls") or the mean over real tokens ("mean")."""
    if pooling == "cls":
        return last_hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (batch, seq, 1)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

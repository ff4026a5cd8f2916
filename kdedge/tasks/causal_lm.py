"""causal-lm: a prompt to its continuation, by a decoder-only language model (GPT-2 style)."""

from kdedge.tasks.classification import DEMO_PRESET
from kdedge.tasks.generation import generation_kind

KIND = generation_kind("causal-lm", "a prompt to its continuation, by a decoder-only model",
                       DEMO_PRESET)

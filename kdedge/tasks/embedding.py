"""embedding: a text to its sentence embedding, for on-device semantic search.

The student learns to reproduce the teacher's pooled, L2-normalised sentence embedding (cosine
to the teacher's vector, with a projection when the widths differ). No labels are needed: any
text column will do, and the teacher (a sentence encoder such as the demo's all-MiniLM-L6-v2)
is used as it is, without fine-tuning. The work of each stage is in embedding_work.py.

Metrics, each against the teacher's embeddings of the same split:
- cosine: mean cosine between the student's and the teacher's embedding of each text;
- spearman: Spearman correlation of the similarities of every pair of texts with the teacher's;
- recall_at_10: the share of each text's 10 nearest neighbours (by the teacher) that the
  student also ranks among its 10 nearest.
"""

from __future__ import annotations

from typing import Any

from kdedge.tasks.base import TaskKind
from kdedge.tasks.classification import DEMO_PRESET as CLASSIFICATION_DEMO

WORK = "kdedge.tasks.embedding_work"
# The demo's review texts (the ones past max_train_samples train the student too) at a rate
# a cosine loss on a layer cut can take: 2e-4 reached 0.88 validation cosine in 2 epochs where
# 5e-5 reached 0.84
DEMO_PRESET = {"data": CLASSIFICATION_DEMO["data"],
               "distill": {"training": {"epochs": 3, "learning_rate": 2e-4}}}


class Embedding(TaskKind):
    def label_map(self, splits: dict[str, Any], cfg: Any) -> tuple[dict[str, Any], list[str], dict]:
        """No labels: the teacher's embedding is the target, computed where it is needed."""
        return {name: table.assign(label=0) for name, table in splits.items()}, [], {}


KIND = Embedding(
    name="embedding", metrics=("cosine", "spearman", "recall_at_10"),
    recipes=frozenset({"kd"}),  # the student matches the teacher's embedding
    work={stage: f"{WORK}:{stage}" for stage in ("teacher", "distill", "export", "quantize")},
    labelled=False, output="embedding", default_student="3", report_sections=(f"{WORK}:report_section",),
    # the PyTorch rows would time a classifier built around the encoder, not the embedding
    unbenched=frozenset({"teacher-pytorch", "student-pytorch", "student-fp16"}),
    demo_preset=DEMO_PRESET, summary="a text to its sentence embedding, for semantic search",
    card_title="a sentence encoder (one embedding per input)",
    card_output="the `embedding` vector.",
    card_limit="Its embeddings are close to the teacher's; compare them with each other, not "
               "with the teacher's.")

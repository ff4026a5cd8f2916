"""What the generation kinds (seq2seq, causal-lm) share: the label column holds target texts,
models generate token by token, and the recipes are the sequence-level ones."""

from __future__ import annotations

from typing import Any

from kdedge.tasks.base import TaskKind

GENERATION_RECIPES = frozenset({"word-kd", "seq-kd", "imitkd", "lifelong", "gold"})
GENERATION_WORK = {
    "teacher": "kdedge.teacher.generator:run",
    "distill": "kdedge.distill.generator:run",
    "export": "kdedge.export.generation:run",
    "quantize": "kdedge.quantize.generation:run",
}
GENERATION_METRICS = ("rougeL", "bleu", "rouge1", "rouge2")


class Generation(TaskKind):
    def label_map(self, splits: dict[str, Any], cfg: Any) -> tuple[dict[str, Any], list[str], dict]:
        words = {name: round(float(t["label"].str.split().str.len().mean()), 2)
                 for name, t in splits.items()}
        return splits, [], {"target_words": words}


def generation_kind(name: str, summary: str, demo_preset: dict[str, Any]) -> Generation:
    return Generation(name=name, metrics=GENERATION_METRICS, recipes=GENERATION_RECIPES,
                      demo_preset=demo_preset, student_spec=False, default_student="3",
                      work=GENERATION_WORK, label_dtype=object, generates=True,
                      unbenched=frozenset({"student-fp16"}),  # no fp16 generator is written yet
                      bundle_script="generate.py",
                      bundle_describe="kdedge.bundle.generator:describe",
                      bundle_formats=frozenset(),  # transformers.js and mobile: not yet written
                      summary=summary, card_title="a text generator ({kind})",
                      card_output=(
                          "the generated `text` and its `tokens` (greedy search, as the numbers "
                          "above were measured; `--beams 4` for beam search)."),
                      card_limit="A generation stops at EOS or after {max_new_tokens} tokens.")

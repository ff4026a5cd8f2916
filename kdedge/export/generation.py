"""Generation models to ONNX: encoder and decoder (with the key/value cache) through optimum.

A classifier's parity is a logit difference; a generator's is the tokens it produces. The
check here decodes the same inputs greedily, for a fixed number of tokens, with PyTorch and
with onnxruntime (optimum's ORTModelForSeq2SeqLM / ORTModelForCausalLM), and compares the ids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("kdedge")

GenerationTask = Literal["seq2seq", "causal-lm"]
# optimum's task names; "-with-past" adds the key/value cache so decoding does not recompute
# the prefix at every token
OPTIMUM_TASKS = {"seq2seq": "text2text-generation", "causal-lm": "text-generation"}
WITH_PAST = "-with-past"


def export_generator(source: Path, out: Path, task: GenerationTask) -> dict[str, Any]:
    """Write the ONNX graphs (and config files) of the model in `source` to `out`.

    With the key/value cache where optimum's configuration of the decoder has one; a BERT
    decoder (bert2bert) has none, so its decoder recomputes the prefix at each token.
    Returns {"files": [...], "key_value_cache": bool}.
    """
    from optimum.exporters.onnx import main_export

    try:
        main_export(str(source), output=str(out), task=OPTIMUM_TASKS[task] + WITH_PAST)
        cached = True
    except ValueError as err:
        if "past key values" not in str(err):
            raise
        log.info("  %s; exporting without the key/value cache", str(err).rstrip("."))
        main_export(str(source), output=str(out), task=OPTIMUM_TASKS[task])
        cached = False
    return {"files": onnx_files(out), "key_value_cache": cached}


def onnx_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*.onnx"))


def load_onnx_generator(folder: Path, task: GenerationTask, provider: str | None = None) -> Any:
    """optimum's onnxruntime generator over the graphs in `folder` (with or without a cache)."""
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSeq2SeqLM

    family = ORTModelForSeq2SeqLM if task == "seq2seq" else ORTModelForCausalLM
    cached = any("with_past" in name or "merged" in name for name in onnx_files(folder))
    kwargs = {"provider": provider} if provider else {}
    return family.from_pretrained(str(folder), use_cache=cached, **kwargs)


def greedy_tokens(model: Any, batch: dict[str, Any], new_tokens: int) -> list[list[int]]:
    """Exactly `new_tokens` greedy tokens per row (EOS suppressed until then)."""
    out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         num_beams=1, do_sample=False)
    return out.tolist()


def generation_parity(pytorch_model: Any, onnx_model: Any, batch: dict[str, Any],
                      new_tokens: int = 16) -> dict[str, Any]:
    """Whether onnxruntime generates the same ids as PyTorch on `batch`, row by row."""
    expected = greedy_tokens(pytorch_model, batch, new_tokens)
    got = greedy_tokens(onnx_model, batch, new_tokens)
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b]
    return {"rows": len(expected), "new_tokens": new_tokens, "mismatched_rows": mismatched,
            "passed": not mismatched}

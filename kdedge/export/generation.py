"""Generation models to ONNX: encoder and decoder (with the key/value cache) through optimum.

A classifier's parity is a logit difference; a generator's is the tokens it produces. The
check here decodes the same inputs greedily, for a fixed number of tokens, with PyTorch and
with onnxruntime (optimum's ORTModelForSeq2SeqLM / ORTModelForCausalLM), and compares the ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

GenerationTask = Literal["seq2seq", "causal-lm"]
# optimum's task names, with the key/value cache so decoding does not recompute the prefix
OPTIMUM_TASKS = {"seq2seq": "text2text-generation-with-past",
                 "causal-lm": "text-generation-with-past"}


def export_generator(source: Path, out: Path, task: GenerationTask) -> list[str]:
    """Write the ONNX graphs (and config files) of the model in `source` to `out`."""
    from optimum.exporters.onnx import main_export

    main_export(str(source), output=str(out), task=OPTIMUM_TASKS[task])
    return sorted(p.name for p in Path(out).glob("*.onnx"))


def load_onnx_generator(folder: Path, task: GenerationTask) -> Any:
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSeq2SeqLM

    family = ORTModelForSeq2SeqLM if task == "seq2seq" else ORTModelForCausalLM
    return family.from_pretrained(str(folder))


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

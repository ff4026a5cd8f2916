"""ONNX export through `torch.onnx` for kdedge's own students, which optimum does not know.

Writes the same folder layout as optimum (model.onnx, config.json, tokenizer files), so
`kdedge.runtime.ort_session`, the parity check and `ORTQuantizer` treat both alike. Uses the
TorchScript exporter (`dynamo=False`): the dynamo exporter needs onnxscript, and the
TorchScript one maps packed LSTM / GRU calls onto ONNX RNN nodes with `sequence_lens`.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE

log = logging.getLogger("kdedge")

# config.json model_type values that this exporter handles instead of optimum's.
TORCH_EXPORT_MODEL_TYPES = frozenset({"kdedge-birnn"})

# Files of a saved tokenizer, whatever its kind (WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "chat_template.jinja")

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def needs_torch_export(model_dir: Path) -> bool:
    """True for a saved model whose type only this exporter handles (reads config.json only)."""
    config = model_dir / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("model_type") in TORCH_EXPORT_MODEL_TYPES


def export_torch_onnx(model_dir: Path, out: Path, opset: int) -> None:
    """model_dir (save_pretrained output) -> out/model.onnx + config.json + tokenizer files.

    Batch and sequence axes are dynamic. Inputs the graph never reads (token_type_ids for a
    BiRNN) are dropped by the exporter, and `ort_feed` feeds only the inputs a graph has.
    """
    from transformers import AutoModelForSequenceClassification

    from kdedge.models import register_auto_classes

    register_auto_classes()

    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    except (OSError, ValueError, KeyError) as err:
        raise KdedgeError(f"Cannot load {model_dir} for torch.onnx export "
                          f"({str(err).splitlines()[0][:200]}).") from None
    trace(LogitsOnly(model), out / ONNX_FILE, "logits", opset, model.config, str(model_dir))
    copied = copy_model_files(model_dir, out)
    log.debug("torch.onnx export of %s: inputs %s, copied %s", model_dir, graph_inputs(out / ONNX_FILE),
              copied)


def trace(module: nn.Module, path: Path, output: str, opset: int, config: Any, what: str) -> None:
    """`module(input_ids, attention_mask, token_type_ids) -> tensor` traced into `path` with
    dynamic batch and sequence axes and one output named `output`; written under a temporary
    name, so a failed export leaves nothing that looks whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = dummy_inputs(config.vocab_size, config.pad_token_id or 0)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in INPUT_NAMES}
    axes[output] = {0: "batch_size"}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Expected: the legacy-exporter deprecation note, tracer notes on masks and packing,
            # and the LSTM batch-size note (initial states are zeros built from the dynamic batch).
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), tuple(inputs[name] for name in INPUT_NAMES), str(tmp),
                              input_names=list(INPUT_NAMES), output_names=[output],
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                              dynamo=False)
    except Exception as err:  # the exporter raises many untyped errors
        tmp.unlink(missing_ok=True)
        raise KdedgeError(f"torch.onnx cannot export {what} "
                          f"({str(err).splitlines()[0][:200]}).") from None
    tmp.replace(path)


def dummy_inputs(vocab_size: int, pad_token_id: int = 0, batch: int = 2, length: int = 8,
                 ) -> dict[str, torch.Tensor]:
    """Batch and length above 1, with a padded row: the tracer specializes size-1 dimensions
    and a batch without padding would not exercise the per-row lengths."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1, length // 2:] = 0
    return {"input_ids": input_ids.masked_fill(attention_mask == 0, pad_token_id),
            "attention_mask": attention_mask,
            "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}


def copy_model_files(model_dir: Path, out: Path) -> list[str]:
    """config.json and the tokenizer files, as optimum leaves them next to model.onnx."""
    names = [name for name in ("config.json", *TOKENIZER_FILES) if (model_dir / name).is_file()]
    if "config.json" not in names:
        raise KdedgeError(f"{model_dir} has no config.json; pass a folder written by save_pretrained.")
    for name in names:
        tmp = out / f".{name}.tmp"
        shutil.copy2(model_dir / name, tmp)
        tmp.replace(out / name)
    return names


def graph_inputs(path: Path) -> list[str]:
    import onnx

    return [inp.name for inp in onnx.load(str(path), load_external_data=False).graph.input]


class LogitsOnly(nn.Module):
    """Adapter so the tracer sees a plain tensor output instead of a ModelOutput dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits

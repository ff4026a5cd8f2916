"""Encoder-decoder teachers and students for the generation recipes.

- `bert2bert`: an EncoderDecoderModel whose encoder and decoder both start from one BERT-like
  checkpoint (the decoder gains randomly initialised cross-attention), with the special tokens
  generation needs set on the config and the generation config alike: decoding starts with
  [CLS], ends with [SEP], pads with [PAD]. The demo's MiniLM teacher becomes a 49M-parameter
  seq2seq model this way (DEMO_ASSETS.md).
- `fewer_layers`: a student that keeps chosen encoder and decoder layers of the teacher, with
  the embeddings and the output head copied, like the classification students.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from kdedge.errors import KdedgeError
from kdedge.models.transformer import evenly_spaced, layer_stack


def bert2bert(checkpoint: Path, tokenizer: Any) -> Any:
    """A BERT-to-BERT encoder-decoder from one checkpoint, ready to train and generate."""
    from transformers import EncoderDecoderModel

    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(checkpoint), str(checkpoint))
    ids = {"decoder_start_token_id": tokenizer.cls_token_id, "bos_token_id": tokenizer.cls_token_id,
           "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id}
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise KdedgeError(f"The tokenizer of {checkpoint} has no {', '.join(missing)}; a "
                          "bert2bert model needs [CLS], [SEP] and [PAD] tokens.")
    for name, value in ids.items():
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    model.config.vocab_size = model.config.decoder.vocab_size
    return model


def _keep(stack_owner: nn.Module, num_layers: int, keep: Sequence[int]) -> None:
    name, stack = layer_stack(stack_owner, num_layers)
    if not keep or max(keep) >= num_layers or min(keep) < 0:
        raise KdedgeError(f"Layers {list(keep)} do not exist in a {num_layers}-layer stack; give "
                          f"indices from 0 to {num_layers - 1}.")
    parent_name, _, attr = name.rpartition(".")
    parent = stack_owner.get_submodule(parent_name) if parent_name else stack_owner
    setattr(parent, attr, nn.ModuleList([stack[i] for i in keep]))
    for position, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():  # the key/value cache is indexed by position in the stack
            if getattr(module, "layer_idx", None) is not None:
                module.layer_idx = position


def fewer_layers(teacher: Any, encoder_layers: int | Sequence[int],
                 decoder_layers: int | Sequence[int]) -> Any:
    """A copy of an EncoderDecoderModel keeping some layers of each side.

    A count keeps that many evenly spaced layers ending at the top one; a list keeps exactly
    those. Embeddings, cross-attention of the kept decoder layers and the LM head come along.
    """
    student = copy.deepcopy(teacher)
    sides = (("encoder", student.encoder, encoder_layers),
             ("decoder", student.decoder, decoder_layers))
    for side, module, wanted in sides:
        total = module.config.num_hidden_layers
        keep = evenly_spaced(total, wanted) if isinstance(wanted, int) else tuple(wanted)
        _keep(module, total, keep)
        module.config.num_hidden_layers = len(keep)
        getattr(student.config, side).num_hidden_layers = len(keep)
    return student


def fewer_decoder_layers(teacher: Any, layers: int | Sequence[int]) -> Any:
    """A copy of a decoder-only language model keeping some of its layers (as fewer_layers)."""
    student = copy.deepcopy(teacher)
    total = student.config.num_hidden_layers
    keep = evenly_spaced(total, layers) if isinstance(layers, int) else tuple(layers)
    _keep(student, total, keep)
    student.config.num_hidden_layers = len(keep)
    return student

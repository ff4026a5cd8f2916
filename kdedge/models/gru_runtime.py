"""The GRU-decoder student's two ONNX graphs (gru_decoder.export_gru_onnx) run with onnxruntime
and numpy alone: what the bench and a shipped generator need, with no torch installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.runtime import ort_session

ENCODER_ONNX = "encoder_model.onnx"
DECODER_ONNX = "decoder_model.onnx"


class GruOnnxRunner:
    """Greedy decoding over the encoder graph and the one-step decoder graph, the decoder's
    state carried between steps."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        folder = Path(folder)
        config = folder / "config.json"
        self.tokens = json.loads(config.read_text()) if config.is_file() else {}
        self.encoder = ort_session(folder / ENCODER_ONNX, threads)
        self.decoder = ort_session(folder / DECODER_ONNX, threads)

    def greedy(self, input_ids: Any, attention_mask: Any, max_new_tokens: int, start: int,
               eos: int, pad: int, min_new_tokens: int = 0) -> np.ndarray:
        """int64 [batch, 1 + steps]: the start token, then one token per step; a row that has
        produced eos continues with pad, and decoding stops once every row has (so steps may
        be fewer than max_new_tokens), matching transformers' greedy search; eos cannot be
        chosen in the first `min_new_tokens` steps."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.asarray(attention_mask, dtype=np.int64)
        states, state = self.encoder.run(None, {"input_ids": input_ids,
                                                "attention_mask": attention_mask})
        tokens = np.full((input_ids.shape[0], 1), start, dtype=np.int64)
        finished = np.zeros(input_ids.shape[0], dtype=bool)
        for position in range(max_new_tokens):
            logits, state = self.decoder.run(None, {"decoder_input_ids": tokens[:, -1:],
                                                    "decoder_state": state,
                                                    "encoder_hidden_states": states,
                                                    "encoder_attention_mask": attention_mask})
            logits = logits[:, -1]
            if position < min_new_tokens:
                logits[:, eos] = -np.inf
            step = np.where(finished, pad, logits.argmax(-1)).astype(np.int64)
            tokens = np.concatenate([tokens, step[:, None]], axis=1)
            finished |= step == eos
            if finished.all():
                break
        return tokens


def greedy_onnx(folder: Path, input_ids: Any, attention_mask: Any, max_new_tokens: int,
                start: int, eos: int, pad: int, threads: int | None = None) -> np.ndarray:
    """Greedy decoding over the two graphs of `export_gru_onnx`, as `generate` does it."""
    return GruOnnxRunner(folder, threads).greedy(input_ids, attention_mask, max_new_tokens,
                                                  start, eos, pad)

"""A seq2seq student with the teacher's (shallower) encoder and a small GRU decoder.

The encoder is the teacher's encoder module, optionally keeping fewer layers (evenly spaced,
top one included, as `seq2seq_models.fewer_layers` keeps them). The decoder is a
unidirectional GRU over the teacher's decoder word embeddings (copied), with Luong
dot-product attention over the encoder states (padded source positions get exactly zero
weight) and an output layer initialised from the teacher's LM head:

    h_0     = tanh(W_b masked_mean(encoder states))            (one slice per GRU layer)
    s_t     = GRU(embed(y_<t+1), s_t-1)
    a_t     = softmax_j(s_t . K e_j)   (K = identity when the GRU is as wide as the encoder)
    c_t     = sum_j a_t,j e_j
    logit_t = lm_head(tanh(W_c [s_t; c_t]))                     (W_c maps to the embedding width)

It is a `PreTrainedModel` with its own config type ("kdedge-gru-seq2seq"), registered with
AutoConfig and AutoModelForSeq2SeqLM when this module is imported, and it follows the
transformers seq2seq contract (forward with decoder_input_ids or labels -> Seq2SeqLMOutput,
`generate` through GenerationMixin), so the generation recipes' losses take it unchanged.
`generate` keeps no cache: each step reruns the GRU over the whole decoder prefix, which is
cheap for a GRU and keeps teacher forcing and decoding on one code path.

ONNX: optimum does not know this model, so `export_gru_onnx` writes two graphs with the
TorchScript exporter, encoder_model.onnx (encoder states and h_0) and decoder_model.onnx (one
step: new tokens and the GRU state in, their logits and the next state out; the state is the
decoder's cache); the bundle's generate.py (kdedge/bundle/generate.py, torch-free) decodes over
them with onnxruntime, one token and one projection onto the vocabulary per step.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import ModelOutput

from kdedge.bundle.generate import DECODER as DECODER_ONNX
from kdedge.bundle.generate import ENCODER as ENCODER_ONNX
from kdedge.bundle.generate import Generator
from kdedge.distill.generation import IGNORE, shift_right
from kdedge.errors import KdedgeError
from kdedge.models.seq2seq import _keep
from kdedge.models.transformer import evenly_spaced

MODEL_TYPE = "kdedge-gru-seq2seq"
ENCODER_INPUTS = ("input_ids", "attention_mask")
ENCODER_OUTPUTS = ("last_hidden_state", "decoder_state")
DECODER_INPUTS = ("decoder_input_ids", "decoder_state", "encoder_hidden_states",
                  "encoder_attention_mask")
DECODER_OUTPUTS = ("logits", "next_decoder_state")


class GruSeq2SeqConfig(PretrainedConfig):
    """The encoder's own config (nested, any AutoConfig type) and the GRU decoder's sizes.

    Defaults must stay valid: transformers builds a default instance to write only the
    non-default fields to config.json (the default encoder is a default BERT config).
    """

    model_type = MODEL_TYPE
    sub_configs = {"encoder": AutoConfig}  # noqa: RUF012 (transformers API)

    def __init__(self, encoder: PretrainedConfig | dict[str, Any] | None = None,
                 vocab_size: int = 30522, embedding_dim: int = 768, hidden_size: int = 768,
                 num_layers: int = 1, dropout: float = 0.1, **kwargs: Any) -> None:
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"GRU seq2seq {name} must be at least 1, got {value}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GRU seq2seq dropout must be in [0, 1), got {dropout}.")
        if encoder is None:
            encoder = AutoConfig.for_model("bert")
        elif isinstance(encoder, dict):
            encoder = dict(encoder)
            encoder = AutoConfig.for_model(encoder.pop("model_type", "bert"), **encoder)
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        kwargs["is_encoder_decoder"] = True
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def encoder_hidden_size(self) -> int:
        return self.encoder.hidden_size


class GruSeq2SeqModel(PreTrainedModel, GenerationMixin):
    """Teacher encoder -> GRU decoder with Luong attention -> LM head."""

    config_class = GruSeq2SeqConfig
    base_model_prefix = "gru_seq2seq"
    main_input_name = "input_ids"
    _tied_weights_keys = ["lm_head.weight"]  # noqa: RUF012 (only tied with tie_word_embeddings)
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: GruSeq2SeqConfig) -> None:
        super().__init__(config)
        width, enc = config.hidden_size, config.encoder_hidden_size
        self.encoder = AutoModel.from_config(config.encoder)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.bridge = nn.Linear(enc, config.num_layers * width)
        between = config.dropout if config.num_layers > 1 else 0.0
        self.gru = nn.GRU(config.embedding_dim, width, num_layers=config.num_layers,
                          batch_first=True, dropout=between)
        # Plain dot product when the widths agree, else a learned key map ("general" score).
        self.attention_keys = nn.Identity() if width == enc else nn.Linear(enc, width, bias=False)
        self.combine = nn.Linear(width + enc, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.embedding_dim, config.vocab_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The decoder's own layers; the encoder's are its own model's business (and copied)."""
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_hh"):
                    for gate in param.data.chunk(3, dim=0):
                        nn.init.orthogonal_(gate)
                elif name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param.data)
                elif name.startswith("bias"):
                    nn.init.zeros_(param.data)

    # --- the transformers plumbing -------------------------------------------------------------

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_input_embeddings(self) -> nn.Embedding:
        """The decoder's table (the encoder keeps its own, as in a bert2bert teacher)."""
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No key/value cache: generate() reruns the GRU over the prefix at every step."""
        return False

    def prepare_inputs_for_generation(self, decoder_input_ids: torch.Tensor,
                                      encoder_outputs: Any = None,
                                      attention_mask: torch.Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        return {"decoder_input_ids": decoder_input_ids, "encoder_outputs": encoder_outputs,
                "attention_mask": attention_mask}

    # --- the model -----------------------------------------------------------------------------

    def initial_state(self, encoder_hidden_states: torch.Tensor,
                      encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        """h_0 [layers, batch, hidden] from the masked mean of the encoder states."""
        mask = encoder_attention_mask.to(encoder_hidden_states.dtype)
        pooled = ((encoder_hidden_states * mask[..., None]).sum(1)
                  / mask.sum(1, keepdim=True).clamp(min=1.0))
        batch = encoder_hidden_states.shape[0]
        # [batch, layers * hidden] -> [layers, batch, hidden]
        initial = torch.tanh(self.bridge(pooled)).view(batch, self.config.num_layers, -1)
        return initial.transpose(0, 1).contiguous()

    def step(self, decoder_input_ids: torch.Tensor, state: torch.Tensor,
             encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [batch, new, vocab] of the tokens that follow `state`, and the state after
        them: the GRU's state is the decoder's whole memory of its prefix, so generation feeds
        one new token and the last state per step instead of the prefix."""
        embedded = self.dropout(self.embed_tokens(decoder_input_ids))
        states, state = self.gru(embedded, state)  # [batch, new, hidden]
        keys = self.attention_keys(encoder_hidden_states)  # [batch, source, hidden]
        scores = torch.bmm(states, keys.transpose(1, 2))  # [batch, new, source]
        scores = scores.masked_fill(encoder_attention_mask[:, None, :] == 0,
                                    torch.finfo(scores.dtype).min)
        context = torch.bmm(torch.softmax(scores, dim=-1), encoder_hidden_states)
        combined = torch.tanh(self.combine(torch.cat([states, context], dim=-1)))
        return self.lm_head(self.dropout(combined)), state

    def decode(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
               encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [batch, target_len, vocab] for every decoder prefix.

        Decoder padding needs no mask: the GRU runs left to right, so padding after the text
        cannot change the logits of the positions before it.
        """
        initial = self.initial_state(encoder_hidden_states, encoder_attention_mask)
        return self.step(decoder_input_ids, initial, encoder_hidden_states,
                         encoder_attention_mask)[0]

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: ModelOutput | tuple[torch.Tensor, ...] | None = None,
                labels: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs: Any) -> Seq2SeqLMOutput:
        """The transformers seq2seq contract. With labels and no decoder_input_ids, the
        contexts are the labels shifted right (decoder start token first, IGNORE as pad);
        the loss is the mean cross-entropy over labels other than IGNORE (-100).
        decoder_attention_mask is accepted and unused (see `decode`)."""
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("GruSeq2SeqModel needs input_ids or encoder_outputs.")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                           output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states,
                                           return_dict=True)
        elif not isinstance(encoder_outputs, ModelOutput):  # a tuple: (states, hidden, attentions)
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        states = encoder_outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("GruSeq2SeqModel needs decoder_input_ids or labels.")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id,
                                            self.config.pad_token_id)
        logits = self.decode(decoder_input_ids, states, attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE)
        return Seq2SeqLMOutput(
            loss=loss, logits=logits, encoder_last_hidden_state=states,
            encoder_hidden_states=getattr(encoder_outputs, "hidden_states", None),
            encoder_attentions=getattr(encoder_outputs, "attentions", None))


def register_auto() -> None:
    """Let transformers' Auto classes load a saved GRU student (model_type kdedge-gru-seq2seq)."""
    AutoConfig.register(MODEL_TYPE, GruSeq2SeqConfig, exist_ok=True)
    AutoModelForSeq2SeqLM.register(GruSeq2SeqConfig, GruSeq2SeqModel, exist_ok=True)


def gru_student(teacher: Any, encoder_layers: int | Sequence[int], hidden: int | None = None,
                layers: int = 1, dropout: float = 0.1) -> GruSeq2SeqModel:
    """A GRU-decoder student of an EncoderDecoderModel teacher (bert2bert).

    encoder_layers: a count keeps that many evenly spaced layers of the teacher's encoder
    ending at the top one, a list keeps exactly those. hidden: the GRU width (None: the
    teacher decoder's hidden size); layers: the GRU depth. The decoder word embeddings are
    copied; the LM head is copied where its shape fits (vocab, embedding width), else the
    output layer is tied to the copied embeddings. Special token ids and the generation
    config's ids come from the teacher.
    """
    encoder = copy.deepcopy(teacher.get_encoder())
    total = encoder.config.num_hidden_layers
    keep = (evenly_spaced(total, encoder_layers) if isinstance(encoder_layers, int)
            else tuple(encoder_layers))
    _keep(encoder, total, keep)
    encoder.config.num_hidden_layers = len(keep)
    encoder.config.architectures = [type(encoder).__name__]
    table = teacher.get_decoder().get_input_embeddings().weight.detach()
    head = teacher.get_output_embeddings()
    fits = head is not None and tuple(head.weight.shape) == tuple(table.shape)
    ids = {name: getattr(teacher.config, name, None)
           for name in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")}
    if ids["decoder_start_token_id"] is None or ids["pad_token_id"] is None:
        raise KdedgeError("The teacher's config has no decoder_start_token_id / pad_token_id; "
                          "build it with kdedge.models.seq2seq.bert2bert.")
    config = GruSeq2SeqConfig(
        encoder=copy.deepcopy(encoder.config), vocab_size=table.shape[0],
        embedding_dim=table.shape[1],
        hidden_size=hidden or teacher.get_decoder().config.hidden_size, num_layers=layers,
        dropout=dropout, tie_word_embeddings=not fits, **ids)
    student = GruSeq2SeqModel(config)
    with torch.no_grad():
        student.encoder.load_state_dict(encoder.state_dict())
        student.embed_tokens.weight.copy_(table)
        if fits:
            student.lm_head.weight.copy_(head.weight)
            if head.bias is not None:
                student.lm_head.bias.copy_(head.bias)
    return student


# --- ONNX ---------------------------------------------------------------------------------------


class _EncoderGraph(nn.Module):
    def __init__(self, model: GruSeq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                          return_dict=True).last_hidden_state
        return states, self.model.initial_state(states, attention_mask)


class _DecoderGraph(nn.Module):
    def __init__(self, model: GruSeq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids: torch.Tensor, decoder_state: torch.Tensor,
                encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.step(decoder_input_ids, decoder_state, encoder_hidden_states,
                               encoder_attention_mask)


def export_gru_onnx(model: GruSeq2SeqModel, out_dir: Path, opset: int = 18) -> list[str]:
    """out_dir/encoder_model.onnx and out_dir/decoder_model.onnx (TorchScript exporter).

    encoder: input_ids, attention_mask [batch, source] int64 -> last_hidden_state
    [batch, source, encoder width], decoder_state [GRU layers, batch, GRU width] (h_0).
    decoder: decoder_input_ids [batch, new] int64, decoder_state, encoder_hidden_states,
    encoder_attention_mask [batch, source] int64 -> logits [batch, new, vocab] of the new
    tokens and next_decoder_state, the state after them. The state is the decoder's cache:
    generation feeds one token per step, never the prefix. Batch and lengths are dynamic.
    Returns the file names written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    # Sizes above 1 and a padded row: the tracer specializes size-1 dimensions.
    input_ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=generator)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 4:] = 0
    decoder_input_ids = torch.randint(0, model.config.vocab_size, (2, 3), generator=generator)
    source = {0: "batch_size", 1: "encoder_sequence_length"}
    state = {1: "batch_size"}
    encoder = _EncoderGraph(model)
    graphs = [
        (encoder, (input_ids, attention_mask), ENCODER_ONNX, ENCODER_INPUTS,
         ENCODER_OUTPUTS, {"input_ids": source, "attention_mask": source,
                           "last_hidden_state": source, "decoder_state": state}),
        (_DecoderGraph(model), None, DECODER_ONNX, DECODER_INPUTS, DECODER_OUTPUTS,
         {"decoder_input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
          "decoder_state": state, "encoder_hidden_states": source,
          "encoder_attention_mask": source,
          "logits": {0: "batch_size", 1: "decoder_sequence_length"},
          "next_decoder_state": state}),
    ]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # Expected: the legacy-exporter deprecation note and tracer notes.
            warnings.simplefilter("ignore")
            states, initial = encoder(input_ids, attention_mask)
            for module, args, name, inputs, outputs, axes in graphs:
                args = args or (decoder_input_ids, initial, states, attention_mask)
                tmp = out_dir / f".{name}.tmp"
                try:
                    torch.onnx.export(module, args, str(tmp), input_names=list(inputs),
                                      output_names=list(outputs), dynamic_axes=axes,
                                      opset_version=opset, do_constant_folding=True, dynamo=False)
                except Exception as err:  # the exporter raises many untyped errors
                    tmp.unlink(missing_ok=True)
                    raise KdedgeError(f"torch.onnx cannot export the GRU seq2seq {name} "
                                      f"({str(err).splitlines()[0][:200]}).") from None
                tmp.replace(out_dir / name)
    finally:
        model.train(was_training)
    return [ENCODER_ONNX, DECODER_ONNX]


class GruOnnxGenerator:
    """The bundle's torch-free Generator behind a `generate` like optimum's generators, so
    evaluation drives it the same way: greedy, EOS-stopped, or exactly `min_new_tokens` tokens
    when that equals `max_new_tokens` (EOS never ends a row then)."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.config = GruSeq2SeqConfig.from_pretrained(folder)
        cfg = self.config
        self.runner = Generator(folder, threads, settings={
            "layout": "seq2seq", "start": cfg.decoder_start_token_id, "eos": cfg.eos_token_id,
            "pad": cfg.pad_token_id, "max_length": None, "max_new_tokens": 20})

    def generate(self, input_ids: Any, attention_mask: Any, max_new_tokens: int = 20,
                 min_new_tokens: int | None = 0, **_: Any) -> torch.Tensor:
        return torch.from_numpy(self.runner.greedy(np.asarray(input_ids, dtype=np.int64),
                                                   np.asarray(attention_mask, dtype=np.int64),
                                                   max_new_tokens, min_new_tokens or 0))

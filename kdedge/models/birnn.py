"""A bidirectional LSTM / GRU classifier with attention pooling: the small, architecturally
different student of the QE-distillation (Gajbhiye et al. 2021) and MKD (Liu et al. 2019) papers.

It is a `transformers.PreTrainedModel` with its own config type ("kdedge-birnn"), registered with
the Auto classes by `kdedge.models.register_auto_classes()`, so the rest of kdedge (the training loop,
`save_verified`, parity checks, the quantizer) handles it like any Hugging Face classifier:
`save_pretrained` writes safetensors and `AutoModelForSequenceClassification.from_pretrained`
reads them back.

Padding invariance: the recurrent layers run on packed sequences (`pack_padded_sequence`), so
the backward direction of every text starts at its own last token, not at the end of the
padding, and attention pooling gives padded steps exactly zero weight. The TorchScript ONNX
exporter turns the packed call into ONNX LSTM / GRU nodes with `sequence_lens`, which
onnxruntime honours, so the exported graph keeps the same property at any batch and length.
Inputs must be right-padded (valid tokens first), as BERT-style tokenizers do.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "kdedge-birnn"
CELLS = ("lstm", "gru")


class BiRNNConfig(PretrainedConfig):
    """Sizes of the BiRNN student. Defaults must stay valid: transformers builds a default
    instance to write only the non-default fields to config.json."""

    model_type = MODEL_TYPE
    # build_student reports num_hidden_layers for every student; here that is the RNN depth.
    attribute_map = {"num_hidden_layers": "num_layers"}  # noqa: RUF012 (transformers API)

    def __init__(self, vocab_size: int = 30522, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, cell: str = "lstm", dropout: float = 0.1,
                 attention_dim: int | None = None, **kwargs: Any) -> None:
        if cell not in CELLS:
            raise ValueError(f"BiRNN cell {cell!r} is not one of {CELLS}.")
        for name, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"BiRNN {name} must be at least 1, got {value}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BiRNN dropout must be in [0, 1), got {dropout}.")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.dropout = dropout
        self.attention_dim = attention_dim or hidden_size
        super().__init__(**kwargs)

    @property
    def output_size(self) -> int:
        """Width of the recurrent states and the pooled vector: both directions concatenated."""
        return 2 * self.hidden_size


class AttentionPooling(nn.Module):
    """Additive attention over time, score_t = v . tanh(W h_t + b) (Bahdanau-style).

    Padded steps get a score of the dtype's minimum, so after softmax their weight is exactly
    0 and the pooled vector does not depend on how much padding follows a text.
    """

    def __init__(self, input_size: int, attention_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, attention_dim)
        self.context = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Indexing, not squeeze(): squeeze on a dynamic axis exports as an ONNX If node.
        scores = self.context(torch.tanh(self.proj(states)))[..., 0]  # (batch, time)
        scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), states)[:, 0], weights


class BiRNNForSequenceClassification(PreTrainedModel):
    """Embedding -> bidirectional LSTM/GRU stack (packed) -> attention pooling -> linear head."""

    config_class = BiRNNConfig
    base_model_prefix = "birnn"
    main_input_name = "input_ids"

    def __init__(self, config: BiRNNConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                       bidirectional=True, batch_first=True,
                       dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.pooling = AttentionPooling(config.output_size, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Recurrent-network defaults rather than BERT's N(0, 0.02) everywhere: orthogonal
        recurrent matrices and an LSTM forget-gate bias of 1 keep gradients alive over time."""
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)
        elif isinstance(module, nn.LSTM | nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_hh"):
                    for gate in param.data.chunk(4 if isinstance(module, nn.LSTM) else 3, dim=0):
                        nn.init.orthogonal_(gate)
                elif name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param.data)
                elif name.startswith("bias"):
                    nn.init.zeros_(param.data)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        size = module.hidden_size
                        param.data[size:2 * size].fill_(1.0)  # gate order: input, forget, cell, output

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs: Any) -> SequenceClassifierOutput:
        """token_type_ids is accepted so the shared loop can pass tokenizer output unchanged; a
        BiRNN reads a sentence pair as one token stream, so it is ignored.

        With output_hidden_states, hidden_states is (embeddings, recurrent states); the last one
        is (batch, seq, 2 * hidden_size), zero at padded steps, for representation losses.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not torch.jit.is_tracing():
            _check_right_padded(attention_mask)
        # A row of pure padding would have length 0, which packing rejects; give it one step.
        lengths = attention_mask.sum(dim=1).clamp(min=1)
        embedded = self.dropout(self.embeddings(input_ids))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])
        pooled, _ = self.pooling(states, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else self._loss(logits, labels)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden = (embedded, states) if output_hidden_states else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The Hugging Face classifier convention, so Trainer-style callers get the same loss."""
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.float())


def _check_right_padded(mask: torch.Tensor) -> None:
    """Packing takes the first `length` steps of each row; left padding would drop real tokens."""
    if mask.shape[1] > 1 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("The BiRNN student needs right-padded inputs (attention_mask 1s first); "
                         "set tokenizer.padding_side = 'right'.")


def register_auto() -> None:
    """Let transformers' Auto classes load a saved BiRNN (config.json model_type kdedge-birnn)."""
    AutoConfig.register(MODEL_TYPE, BiRNNConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(BiRNNConfig, BiRNNForSequenceClassification,
                                                exist_ok=True)


def _flag(value: str) -> bool:
    return {"true": True, "false": False}[value.lower()]


# "bilstm:key=value,..." options and their parsers
# mostly new weights (only the embeddings may come from the teacher): trained at 2e-3, where the
# demo's BiLSTM kept 97.3% of the teacher (benchmarks/results/methods.md); a copy of teacher
# layers trains at distill.training.learning_rate
LEARNING_RATE = 2e-3

OPTIONS: dict[str, Any] = {"embedding_dim": int, "hidden_size": int, "num_layers": int,
                           "dropout": float, "init_embeddings": _flag}


def build(spec: Any, teacher: nn.Module, **_: Any) -> nn.Module:
    """A BiLSTM / BiGRU with attention pooling (the QE-distillation and MKD students)."""
    return build_birnn(teacher, **dict(spec.options))


def build_birnn(teacher: PreTrainedModel, *, cell: str = "lstm", embedding_dim: int | None = None,
                hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.1,
                init_embeddings: bool = False) -> BiRNNForSequenceClassification:
    """A BiRNN student for the teacher's tokenizer and labels.

    embedding_dim None means the teacher's embedding width. With init_embeddings, the table
    starts from the teacher's input embeddings: copied when the widths match, else projected
    (see `project_embeddings`), so the student begins with the teacher's lexical similarity
    structure instead of noise, which matters most when distillation data is small.
    """
    source = teacher.get_input_embeddings().weight.detach()
    config = teacher.config
    model_config = BiRNNConfig(
        vocab_size=source.shape[0], embedding_dim=embedding_dim or source.shape[1],
        hidden_size=hidden_size, num_layers=num_layers, cell=cell, dropout=dropout,
        num_labels=config.num_labels, id2label=dict(config.id2label), label2id=dict(config.label2id),
        pad_token_id=config.pad_token_id, problem_type=config.problem_type,
    )
    student = BiRNNForSequenceClassification(model_config)
    if init_embeddings:
        with torch.no_grad():
            student.embeddings.weight.copy_(project_embeddings(source.float(), model_config.embedding_dim))
    return student


def project_embeddings(table: torch.Tensor, dim: int) -> torch.Tensor:
    """The (vocab, d) table as (vocab, dim) through a fixed linear map.

    Equal widths: an exact copy. Narrower: principal components (centered table onto its top
    `dim` right singular vectors), the linear map that keeps the most variance. Wider: a
    seeded map with orthonormal rows, which keeps every inner product between tokens.
    """
    width = table.shape[1]
    if dim == width:
        return table.clone()
    if dim < width:
        centered = table - table.mean(dim=0, keepdim=True)
        _, _, vh = torch.linalg.svd(centered, full_matrices=False)
        return centered @ vh[:dim].T
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(dim, width, generator=generator))  # (dim, width), orthonormal cols
    return table @ q.T

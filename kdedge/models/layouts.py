"""How a generator sees a (source, target) pair: encoder-decoder or decoder-only.

Everything the generation recipes do is written once against a `Layout`:

- `targets`: gold target texts as token ids, each ending with EOS;
- `batch`: teacher-forced tensors from sources and target ids. `labels[i, t]` is the token
  position t must predict and `mask[i, t]` says whether it counts: the target's positions, up
  to and including its EOS, nothing on the source, the prompt or padding;
- `continuations`: what a model generates after each source, as target ids (up to and
  including EOS), from PyTorch or onnxruntime generators alike, greedy, sampled or beam.

Encoder-decoder (`Seq2SeqLayout`): the source goes to the encoder, the decoder's context is the
start token followed by the target. Decoder-only (`CausalLayout`): one sequence, prompt +
separator + target; generation starts after the separator, with the prompts padded on the left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kdedge.distill.generation import IGNORE, shift_right
from kdedge.errors import KdedgeError


@dataclass(frozen=True)
class Layout:
    tokenizer: Any
    max_length: int  # source (prompt) tokens kept
    pad: int
    eos: int

    def targets(self, texts: Sequence[str], max_target_length: int) -> list[list[int]]:
        """Gold target ids, at most `max_target_length` long, ending with EOS."""
        out = []
        for text in texts:
            ids = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
            out.append([*ids[:max_target_length - 1], self.eos])
        return out

    def batch(self, sources: Sequence[str], targets: Sequence[Sequence[int]],
              rolled: torch.Tensor | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def _generate(self, model: Any, sources: Sequence[str], **kwargs: Any) -> list[list[int]]:
        raise NotImplementedError

    def continuations(self, model: Any, sources: Sequence[str], max_new_tokens: int, *,
                      beams: int = 1, sample: bool = False, top_k: int | None = None,
                      min_new_tokens: int = 0) -> list[list[int]]:
        """The model's generation after each source, as target ids: cut after the first EOS,
        padding dropped. PyTorch models run in eval mode without gradient (mode restored)."""
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                rows = self._generate(model, sources, max_new_tokens=max_new_tokens,
                                      num_beams=beams, do_sample=sample,
                                      top_k=top_k if sample else None,
                                      min_new_tokens=min_new_tokens or None,
                                      pad_token_id=self.pad, eos_token_id=self.eos)
        finally:
            if was_training:
                model.train()
        return [self._cut(row) for row in rows]

    def _cut(self, row: list[int]) -> list[int]:
        return row[:row.index(self.eos) + 1] if self.eos in row else [t for t in row
                                                                         if t != self.pad]

    def texts(self, model: Any, sources: Sequence[str], max_new_tokens: int,
              batch_size: int = 32) -> list[str]:
        """Greedy generations, decoded without special tokens."""
        out: list[str] = []
        for start in range(0, len(sources), batch_size):
            ids = self.continuations(model, sources[start:start + batch_size], max_new_tokens)
            out += [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def _encode(self, texts: Sequence[str], max_length: int, **kwargs: Any) -> Any:
        return self.tokenizer([str(t) for t in texts], truncation=True, max_length=max_length,
                              **kwargs)


@dataclass(frozen=True)
class Seq2SeqLayout(Layout):
    start: int = 0  # the decoder's first context token

    def batch(self, sources: Sequence[str], targets: Sequence[Sequence[int]],
              rolled: torch.Tensor | None = None) -> dict[str, Any]:
        enc = self._encode(sources, self.max_length, padding=True, return_tensors="pt")
        labels, mask = _aligned(targets, [0] * len(targets))
        rolled = torch.zeros(len(targets), dtype=torch.bool) if rolled is None else rolled
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "decoder_input_ids": shift_right(labels, self.start, self.pad),
                "labels": labels.masked_fill(rolled[:, None], IGNORE), "mask": mask,
                "rollout": rolled}

    def _generate(self, model: Any, sources: Sequence[str], **kwargs: Any) -> list[list[int]]:
        enc = self._encode(sources, self.max_length, padding=True, return_tensors="pt")
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             decoder_start_token_id=self.start, **kwargs)
        return [row[1:] for row in out.tolist()]  # the start token is not a target token


@dataclass(frozen=True)
class CausalLayout(Layout):
    separator: int = 0  # between the prompt and the target
    start: int | None = None  # begins every sequence (BOS), so a model can generate whole
    # examples from it (LAMOL's pseudo-samples)

    def _prompts(self, sources: Sequence[str]) -> list[list[int]]:
        ids = self._encode(sources, self.max_length, add_special_tokens=False)["input_ids"]
        head = [] if self.start is None else [self.start]
        return [[*head, *row, self.separator] for row in ids]

    def batch(self, sources: Sequence[str], targets: Sequence[Sequence[int]],
              rolled: torch.Tensor | None = None) -> dict[str, Any]:
        prompts = self._prompts(sources)
        rows = [p + list(t) for p, t in zip(prompts, targets, strict=True)]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, :len(row)] = 1
        # position t predicts token t + 1: the target's first token is predicted at the separator
        labels, mask = _aligned(targets, [len(p) - 1 for p in prompts], width)
        rolled = torch.zeros(len(targets), dtype=torch.bool) if rolled is None else rolled
        labels = labels.masked_fill(rolled[:, None], IGNORE)
        # the prompt's own next tokens (up to the separator) as labels too, counted by
        # prompt_mask: a language-model term on the prompt (lifelong replay)
        prompt_labels, prompt_mask = _aligned([p[1:] for p in prompts], [0] * len(prompts), width)
        return {"input_ids": input_ids, "attention_mask": attention,
                "labels": torch.where(prompt_mask, prompt_labels, labels), "mask": mask,
                "prompt_mask": prompt_mask, "rollout": rolled}

    def _generate(self, model: Any, sources: Sequence[str], **kwargs: Any) -> list[list[int]]:
        prompts = self._prompts(sources)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):  # padded on the left, so generation continues
            input_ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[i, width - len(prompt):] = 1
        out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        return [row[width:] for row in out.tolist()]


def _aligned(targets: Sequence[Sequence[int]], offsets: Sequence[int], width: int | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """labels (IGNORE elsewhere) and mask with target i placed from column offsets[i]."""
    width = width or max(o + len(t) for o, t in zip(offsets, targets, strict=True))
    labels = torch.full((len(targets), width), IGNORE, dtype=torch.long)
    for i, (offset, target) in enumerate(zip(offsets, targets, strict=True)):
        labels[i, offset:offset + len(target)] = torch.tensor(list(target), dtype=torch.long)
    return labels, labels != IGNORE


def layout_for(config: Any, tokenizer: Any, max_length: int) -> Layout:
    """The layout of a model (its config: encoder-decoder or not) with its tokenizer."""
    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    if pad is None:
        pad = eos
    if eos is None or pad is None:
        raise KdedgeError("The model and its tokenizer name no EOS token; generation needs one "
                          "(set eos_token_id in the model's config).")
    if getattr(config, "is_encoder_decoder", False):
        start = config.decoder_start_token_id
        if start is None:
            raise KdedgeError("The encoder-decoder model has no decoder_start_token_id; set it "
                              "in its config.")
        return Seq2SeqLayout(tokenizer, max_length, int(pad), int(eos), int(start))
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else eos
    start = config.bos_token_id if config.bos_token_id is not None else tokenizer.bos_token_id
    return CausalLayout(tokenizer, max_length, int(pad), int(eos), int(separator),
                        None if start is None else int(start))

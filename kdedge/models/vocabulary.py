"""Vocabulary trimming: a student that shares the teacher's WordPiece tokenizer keeps only the
pieces its training texts use, so its embedding matrix (most of a small student) shrinks.

Kept: the special tokens, every single-character piece ("a" and "##a", so any word of the
kept alphabet still splits into pieces and never becomes [UNK]) and the pieces the texts use
(all of them, or the most frequent up to a size). Kept pieces keep their teacher order, so the
new ids are their ranks. WordPiece matches the longest piece first; a subset of the vocabulary
that keeps every piece of a word therefore splits it exactly as the full one did.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kdedge.errors import KdedgeError

if TYPE_CHECKING:
    from torch import nn


def vocabulary_setting(value: str) -> str | int:
    """`distill.vocabulary` as "full", "trim" or a size (an int)."""
    text = str(value).strip()
    if text in ("full", "trim"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise KdedgeError(f"distill.vocabulary {text!r} is not valid; use full, trim or a vocabulary "
                      "size such as 12000.")


def piece_counts(tokenizer: Any, texts: Sequence[Any]) -> Counter[int]:
    """How often each piece id occurs in the texts (sentence pairs count both sides)."""
    backend = tokenizer.backend_tokenizer
    flat = [part for text in texts for part in (text if isinstance(text, tuple) else (text,))]
    counts: Counter[int] = Counter()
    for encoding in backend.encode_batch(flat, add_special_tokens=False):
        counts.update(encoding.ids)
    return counts


def kept_ids(tokenizer: Any, texts: Sequence[Any], size: int | None = None) -> list[int]:
    """The teacher ids the trimmed vocabulary keeps, in teacher order.

    `size` caps the total: the always-kept pieces first, then the most frequent used pieces.
    """
    model = _wordpiece(tokenizer)
    vocab, prefix = model["vocab"], model["continuing_subword_prefix"]
    always = set(tokenizer.all_special_ids) | {
        index for piece, index in vocab.items()
        if len(piece.removeprefix(prefix)) == 1 or index in tokenizer.added_tokens_decoder}
    counts = piece_counts(tokenizer, texts)
    used = [index for index, _ in counts.most_common() if index not in always]
    if size is not None:
        if size < len(always):
            raise KdedgeError(f"distill.vocabulary {size} is smaller than the {len(always)} special "
                              "and single-character pieces every trimmed vocabulary keeps; use a "
                              f"size of at least {len(always)}, or trim.")
        used = used[:size - len(always)]
    return sorted(always | set(used))


def trimmed_tokenizer(tokenizer: Any, keep: Sequence[int]) -> Any:
    """The same fast tokenizer (normalizer, pre-tokenizer, post-processor) over the kept pieces,
    with the special tokens' ids remapped to their new ranks."""
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    new_id = {old: new for new, old in enumerate(keep)}
    pieces = {index: piece for piece, index in state["model"]["vocab"].items()}
    state["model"]["vocab"] = {pieces[old]: new for new, old in enumerate(keep)}
    for token in state["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _remap_processor(state.get("post_processor"), new_id)
    backend = Tokenizer.from_str(json.dumps(state))
    kwargs = {key: value for key, value in tokenizer.init_kwargs.items()
              if key not in ("name_or_path", "vocab_file", "tokenizer_file", "added_tokens_decoder")}
    return type(tokenizer)(tokenizer_object=backend, **kwargs)


def _remap_processor(processor: dict[str, Any] | None, new_id: dict[int, int]) -> None:
    """Special-token ids inside a post-processor (template, BERT / RoBERTa style, or a sequence)."""
    if not processor:
        return
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [new_id[index] for index in special["ids"]]
    for key in ("sep", "cls"):
        if key in processor:
            processor[key][1] = new_id[processor[key][1]]
    for inner in processor.get("processors", []):
        _remap_processor(inner, new_id)


def trim_embeddings(model: nn.Module, keep: Sequence[int]) -> None:
    """Replace the input embedding matrix by its kept rows, in place (the config follows)."""
    import torch
    from torch import nn

    old = model.get_input_embeddings()
    new_id = {o: n for n, o in enumerate(keep)}
    padding = None if old.padding_idx is None else new_id.get(old.padding_idx)
    table = nn.Embedding(len(keep), old.embedding_dim, padding_idx=padding)
    with torch.no_grad():
        table.weight.copy_(old.weight[torch.as_tensor(list(keep))])
    model.set_input_embeddings(table)
    model.config.vocab_size = len(keep)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is not None:
        model.config.pad_token_id = new_id.get(pad)


def apply(setting: str, student: nn.Module, tokenizer: Any, texts: Sequence[Any],
          ) -> tuple[Any, dict[str, Any]]:
    """Trim the student's vocabulary in place per `distill.vocabulary`; returns the tokenizer
    the student reads with from now on, and what was kept."""
    choice = vocabulary_setting(setting)
    full = len(tokenizer)
    if choice == "full":
        return tokenizer, {"vocabulary": "full", "size": full}
    if student.get_input_embeddings().num_embeddings != full:
        raise KdedgeError(f"distill.vocabulary={setting} needs a student that reads the teacher's "
                          f"tokenizer ({full} pieces); this student has its own, so use full.")
    keep = kept_ids(tokenizer, texts, None if choice == "trim" else choice)
    trim_embeddings(student, keep)
    return trimmed_tokenizer(tokenizer, keep), {"vocabulary": str(choice), "size": len(keep),
                                                "teacher_size": full}


def _wordpiece(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's WordPiece model as stored in tokenizer.json."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"] if getattr(
        tokenizer, "is_fast", False) else {}
    if model.get("type") != "WordPiece":
        raise KdedgeError("distill.vocabulary can trim only a WordPiece tokenizer (BERT-style); "
                          f"this teacher's is {model.get('type') or 'not a fast tokenizer'}, so use full.")
    return model

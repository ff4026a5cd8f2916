"""Hugging Face checkpoints: load a classifier (demo, directory or hub id), save and verify."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError


def resolve_source(source: str) -> str:
    """"demo" -> the cached demo teacher; a path must exist; anything else is a hub id."""
    if source == "demo":
        from kdedge import demo

        return str(demo.teacher_dir())
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise KdedgeError(f"Model directory {path} has no config.json; pass a folder written by "
                              "save_pretrained, or a hub id.")
        return str(path)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise KdedgeError(f"Model path {source!r} does not exist; check the path, or pass a hub id "
                          "such as 'bert-base-uncased'.")
    return source


def is_regression(labels: dict[int, str]) -> bool:
    """One output is a regression score: classification always has at least two labels."""
    return len(labels) == 1


def has_matching_head(config: Any, labels: dict[int, str]) -> bool:
    """True when the checkpoint already classifies into exactly these labels, in this order,
    or, for regression, already has a one-output regression head (whatever its label name)."""
    theirs = _head(config)
    if theirs is not None and is_regression(labels):
        return config.num_labels == 1 and getattr(config, "problem_type", None) in (None, "regression")
    return theirs == labels


def _head(config: Any) -> dict[int, str] | None:
    """The checkpoint's own label map, or None when it has no sequence-classification head."""
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        return None
    return {int(k): str(v) for k, v in (config.id2label or {}).items()}


def head_labels(source: str, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """The checkpoint's label names in id order, as words for an error message."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    head = _head(AutoConfig.from_pretrained(resolve_source(source), **kwargs))
    return "no classification head" if head is None else str([head[i] for i in sorted(head)])


def load_classifier(source: str, id2label: dict[int, str], *, revision: str | None,
                    trust_remote_code: bool) -> tuple[Any, Any, bool]:
    """(model, tokenizer, head matched) with a sequence-classification head for these labels.

    A one-label map ({0: "score"}) asks for a regression head: one output, problem_type
    "regression".
    """
    import pickle

    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    location = resolve_source(source)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        common["revision"] = revision
    try:
        config = AutoConfig.from_pretrained(location, **common)
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise KdedgeError(f"Model {source!r} needs its own code to load; pass "
                              "--trust-remote-code only if you trust its authors.") from None
        raise KdedgeError(f"Cannot load model {source!r} ({str(err).splitlines()[0]}).") from None
    except OSError as err:
        raise KdedgeError(f"Cannot load model {source!r} ({str(err).splitlines()[0][:160]}); check "
                          "the hub id and the network, or pass a local directory.") from None
    matched = has_matching_head(config, {int(k): v for k, v in id2label.items()})
    label2id = {v: k for k, v in id2label.items()}
    head = {"problem_type": "regression"} if is_regression(id2label) else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            location, **common, num_labels=len(id2label), id2label=dict(id2label),
            label2id=label2id, ignore_mismatched_sizes=not matched, **head)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError) as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise KdedgeError(f"The weights of model {source!r} cannot be read ({first}); the file is "
                          "corrupt or incomplete: download or save the model again.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    logging.getLogger("kdedge").debug("loaded %s from %s", type(model).__name__, location)
    return model, tokenizer, matched


def save_verified(model: Any, tokenizer: Any, folder: Path, probe_texts: list[Any],
                  max_length: int) -> float:
    """save_pretrained model and tokenizer, reload them, and return the max |logit| difference.

    Catches a checkpoint that does not reload into the same function (a dropped layer, a
    config that disagrees with the weights) before anything is exported from it.
    """
    from transformers import AutoModelForSequenceClassification

    from kdedge.evaluate import torch_logits
    from kdedge.models import register_auto_classes

    register_auto_classes()  # a BiRNN student reloads through the Auto classes
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    before = torch_logits(model, tokenizer, probe_texts, max_length)
    after = torch_logits(reloaded, tokenizer, probe_texts, max_length)
    diff = float(abs(before - after).max())
    if diff > 1e-5:
        raise KdedgeError(f"The model saved to {folder} reloads with logits off by {diff:.2e}; "
                          "its config does not match its weights.")
    return diff

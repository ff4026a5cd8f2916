"""Hugging Face checkpoints: load a classifier (demo, directory or hub id), save and verify."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kdedge.errors import KdedgeError

PROBE_TIMEOUT_S = 1.5  # how long the hub may take to accept a connection before we call it offline
DEFAULT_ENDPOINT = "https://huggingface.co"


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
    with _loading(source, "model"):
        config = AutoConfig.from_pretrained(location, **common)
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
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


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """save_pretrained, without the padding and truncation that its last call happened to use:
    a fast tokenizer writes them into tokenizer.json, so the file would depend on what the
    run last encoded (a resumed run encodes other batches last). Every reader sets its own."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    tokenizer.save_pretrained(folder)


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
    save_tokenizer(tokenizer, folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    before = torch_logits(model, tokenizer, probe_texts, max_length)
    after = torch_logits(reloaded, tokenizer, probe_texts, max_length)
    diff = float(abs(before - after).max())
    if diff > 1e-5:
        raise KdedgeError(f"The model saved to {folder} reloads with logits off by {diff:.2e}; "
                          "its config does not match its weights.")
    return diff


def offline_requested() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value: use the cache only."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one connection attempt, at most PROBE_TIMEOUT_S), or None.

    Asked once per process, before anything loads from the hub: huggingface_hub would retry a
    dead connection for half a minute, printing each failure.
    """
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname or "", port), timeout=PROBE_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or type(err).__name__)

    probe = threading.Thread(target=connect, daemon=True)  # name resolution has no timeout
    probe.start()
    probe.join(PROBE_TIMEOUT_S + 0.2)
    if not outcome:
        return f"no answer from {endpoint} within {PROBE_TIMEOUT_S:g} s"
    return None if outcome[0] is None else f"{endpoint}: {outcome[0].lower()}"


def go_offline() -> None:
    """Make every later hub call read the local cache only (as HF_HUB_OFFLINE=1 would)."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module in ("huggingface_hub.constants", "datasets.config"):  # already imported: they
        if module in sys.modules:  # read the variables at import time
            sys.modules[module].HF_HUB_OFFLINE = True


def model_config(source: str, what: str, revision: str | None = None,
                 trust_remote_code: bool = False) -> Any:
    """The config of a model ("demo", a directory or a hub id), without downloading weights.

    A hub id needs the hub or the local cache: with no network (or HF_HUB_OFFLINE) a model not in
    the cache fails at once with one line, and one in the cache is used offline.
    """
    location = resolve_source(source)
    hub = not Path(location).is_dir()
    if hub and offline_requested() and not _in_cache(location, revision):
        raise KdedgeError(f"HF_HUB_OFFLINE is set, so {what} {source!r} cannot be downloaded from "
                          "the Hugging Face hub, and it is not in its cache; unset HF_HUB_OFFLINE, "
                          "or pass a local model directory.")
    if hub and not offline_requested():
        reason = hub_unreachable()
        if reason is not None:
            if not _in_cache(location, revision):
                raise KdedgeError(f"No network ({reason}), so {what} {source!r} cannot be "
                                  "downloaded from the Hugging Face hub, and it is not in its "
                                  "cache; connect, or pass a local model directory.")
            logging.getLogger("kdedge").warning(
                "  no network (%s): models are read from the Hugging Face cache only", reason)
            go_offline()
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    with _loading(source, what):
        return AutoConfig.from_pretrained(location, **kwargs)


@contextlib.contextmanager
def _loading(source: str, what: str) -> Iterator[None]:
    """transformers' loading errors as one line naming the model and the fix."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise KdedgeError(f"Model {source!r} needs its own code to load; pass "
                              "--trust-remote-code only if you trust its authors.") from None
        raise KdedgeError(f"Cannot load model {source!r} ({str(err).splitlines()[0]}).") from None
    except OSError as err:
        raise KdedgeError(f"Cannot load {what} {source!r} ({str(err).splitlines()[0][:160]}); check "
                          "the hub id and the network, or pass a local directory.") from None


def _in_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the hub cache holds this model's config (huggingface_hub alone: no transformers
    import, so a run with no network fails in about a second)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: the loader names that problem itself
        return False
    return isinstance(found, str)

"""The teacher of a seq2seq task: an encoder-decoder checkpoint, or one assembled from an encoder.

- An encoder-decoder checkpoint (BART, T5, a saved bert2bert) loads as it is.
- An encoder-only checkpoint (BERT, the demo's MiniLM) becomes a bert2bert model: the decoder
  starts from the same weights and gains cross-attention (seq2seq_models.bert2bert); it needs
  fine-tuning before it says anything, so fine_tune "auto" trains it.

Fine-tuning is gold-target cross-entropy through the one training loop; the result is cached
like a classification teacher's (teacher/cache.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kdedge.artifacts import MODEL_DIR, copy_tree, read_json
from kdedge.config import DataConfig, TeacherConfig
from kdedge.data.dataset import TaskData
from kdedge.distill import losses
from kdedge.distill.generation_training import TargetSplit, fit, score
from kdedge.errors import KdedgeError
from kdedge.evaluate import truncated
from kdedge.hf import resolve_source, save_tokenizer
from kdedge.models.layouts import layout_for
from kdedge.models.seq2seq import bert2bert
from kdedge.teacher.cache import cache_entry, store

log = logging.getLogger("kdedge")


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The teacher stage for a generation task."""
    cfg = ctx.cfg.teacher
    return prepare(cfg, ctx.cfg.data, task, ctx.cfg.run.seed,
                   cache_entry(ctx.fingerprint, cfg.model, cfg.revision), ctx.work / MODEL_DIR,
                   ctx.checkpoints)


def load_generator(cfg: TeacherConfig, task_kind: str) -> tuple[Any, Any, bool]:
    """(model, tokenizer, assembled): assembled is True for a bert2bert built from an encoder.

    causal-lm: a decoder-only checkpoint (GPT-2 and the like); without a pad token it pads
    with EOS."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    location = resolve_source(cfg.model)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    config = AutoConfig.from_pretrained(location, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if task_kind == "causal-lm":
        if getattr(config, "is_encoder_decoder", False) or config.model_type == "bert":
            raise KdedgeError(f"Teacher {cfg.model!r} ({config.model_type}) is not a decoder-only "
                              "language model; for data.task causal-lm give a GPT-2-like "
                              "checkpoint with --teacher, or use --task seq2seq.")
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = model.generation_config.pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                else model.config.eos_token_id)
        return model, tokenizer, False
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM.from_pretrained(location, **kwargs), tokenizer, False
    if getattr(config, "is_decoder", False) or not hasattr(config, "num_hidden_layers"):
        raise KdedgeError(f"Teacher {cfg.model!r} ({config.model_type}) is neither an "
                          "encoder-decoder nor an encoder that bert2bert can pair; give a "
                          "seq2seq checkpoint (BART, T5) or a BERT-like encoder.")
    return bert2bert(Path(location), tokenizer), tokenizer, True


def prepare(cfg: TeacherConfig, data: DataConfig, task: TaskData, seed: int, cached: Path,
            out: Path, checkpoints: Path | None) -> dict[str, Any]:
    """Write the fine-tuned (or as-is) generator to `out`, with its BLEU / ROUGE; cached."""
    if (cached / "metrics.json").is_file():
        log.info("  fine-tuned teacher %r found in the cache (%s)", cfg.model, cached)
        copy_tree(cached / MODEL_DIR, out)
        return {**read_json(cached / "metrics.json"), "cache_hit": True}
    model, tokenizer, assembled = load_generator(cfg, task.kind)
    # a language model learns the task's prompt format; a seq2seq checkpoint may know the task
    fine_tune = cfg.fine_tune == "always" or (cfg.fine_tune == "auto" and (
        assembled or task.kind == "causal-lm"))
    history: list[dict[str, Any]] = []
    layout = layout_for(model.config, tokenizer, data.max_length)
    if fine_tune:
        train_split = task.splits["train"]
        split = TargetSplit(list(train_split.texts),
                            layout.targets(train_split.labels, data.max_target_length))
        log.info("  fine-tuning teacher %r on %d pairs (%d epoch(s))", cfg.model, len(split),
                 cfg.training.epochs)
        terms = [("token_ce", 1.0, {})]
        if task.kind == "causal-lm" and cfg.lm_weight > 0:  # LAMOL's objective (lifelong)
            terms.append(("prompt_lm", cfg.lm_weight, {}))
        result = fit(model, layout, task, split, losses.build(terms),
                     teacher=lambda batch: None, cfg=cfg.training,
                     max_new_tokens=data.max_target_length, seed=seed, description="teacher",
                     checkpoints=checkpoints, config_key="teacher.training")
        history = result.history
    metrics = {
        "model": cfg.model,
        "architecture": "bert2bert" if assembled else model.config.model_type,
        "fine_tuned": fine_tune,
        "cache_hit": False,
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_layers": _layers(model),
        "truncated": {name: truncated(tokenizer, split.texts, data.max_length)
                      for name, split in task.splits.items()},
        "history": history,
        **{name: score(model, layout, task, name, data.max_target_length,
                       cfg.training.eval_batch_size) for name in ("validation", "test")},
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    store(cached, out, metrics)
    return metrics


def _layers(model: Any) -> dict[str, int]:
    """Encoder and decoder depth, whatever the family calls them."""
    config = model.config
    if hasattr(config, "encoder") and hasattr(config, "decoder"):  # EncoderDecoderModel
        return {"encoder": config.encoder.num_hidden_layers,
                "decoder": config.decoder.num_hidden_layers}
    if not getattr(config, "is_encoder_decoder", False):
        return {"decoder": config.num_hidden_layers}
    return {"encoder": getattr(config, "encoder_layers", getattr(config, "num_layers", 0)),
            "decoder": getattr(config, "decoder_layers", getattr(config, "num_decoder_layers", 0))}

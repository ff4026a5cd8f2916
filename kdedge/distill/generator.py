"""Distill stage for seq2seq tasks: a shallower encoder-decoder student, trained by the recipe.

The recipe's phases name token-level loss terms (token_ce, word_kd, imitation_ce); a phase may
train on the teacher's beam outputs instead of the gold targets (seq-kd, generated once and
cached) or mix in the student's own rollouts (imitkd). Everything runs through the one loop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kdedge.artifacts import MODEL_DIR, STUDENT_DIR
from kdedge.config import DistillConfig, KdedgeConfig
from kdedge.data.dataset import TaskData
from kdedge.distill import losses
from kdedge.distill.generation_training import (
    ImitationContexts,
    TargetSplit,
    fit,
    score,
    teacher_logits,
)
from kdedge.distill.recipes import RECIPES, Dims
from kdedge.errors import KdedgeError
from kdedge.hf import save_tokenizer
from kdedge.models.layouts import layout_for
from kdedge.models.seq2seq import fewer_decoder_layers, fewer_layers
from kdedge.training import teacher_cache

log = logging.getLogger("kdedge")

TEACHER_TERMS = ("word_kd", "imitation_ce", "l2kd_word")  # loss terms that read the teacher's logits


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The distill stage for a generation task."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    teacher_dir = ctx.input("teacher") / MODEL_DIR
    family = AutoModelForCausalLM if task.kind == "causal-lm" else AutoModelForSeq2SeqLM
    teacher = family.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher_weights = [meta["sha256"] for rel, meta in ctx.manifest("teacher").outputs.items()
                       if rel.endswith((".safetensors", ".bin"))]
    student, metrics = distill(ctx.cfg, teacher, tokenizer, task, teacher_weights,
                               ctx.checkpoints, ctx.work)
    out = ctx.work / STUDENT_DIR
    student.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return metrics


def distill(cfg: KdedgeConfig, teacher: Any, tokenizer: Any, task: TaskData,
            teacher_weights: list[str], checkpoints: Path | None = None,
            work: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Build the student and train it phase by phase; returns it (at its best epoch) and the
    stage's metrics. `teacher_weights` key the cache of the teacher's beam outputs; `work`
    holds the lifelong recipe's earlier tasks."""
    distill_cfg, data = cfg.distill, cfg.data
    if distill_cfg.recipe == "lifelong":
        from kdedge.distill import lifelong

        layout = layout_for(teacher.config, tokenizer, data.max_length)
        if work is None:
            raise ValueError("the lifelong recipe needs a work folder for its earlier tasks")
        student, metrics = lifelong.distill(cfg, teacher, tokenizer, task, work, build_student)
        return student, {"recipe": "lifelong", **metrics, "training_examples": len(task.splits[
            "train"]), **{name: score(student, layout, task, name, data.max_target_length,
                                      distill_cfg.training.eval_batch_size)
                          for name in ("validation", "test")}}
    layout = layout_for(teacher.config, tokenizer, data.max_length)
    student, info = build_student(distill_cfg, teacher)
    log.info("  student: %s, %.1fM parameters", info["source"], info["parameters"] / 1e6)
    train_split = task.splits["train"]
    sources = list(train_split.texts)
    gold = layout.targets(train_split.labels, data.max_target_length)
    history: list[dict[str, Any]] = []
    best_epoch, sequences_cache = 0, None
    phases = RECIPES.get(distill_cfg.recipe)(distill_cfg, Dims(0, 0, generation=True))
    for number, phase in enumerate(phases, start=1):
        targets = gold
        if phase.targets == "teacher":
            beams = distill_cfg.generation.beams

            def beam_search(chunk: list[str], beams: int = beams) -> list[list[int]]:
                return layout.continuations(teacher, chunk, data.max_target_length, beams=beams)

            targets, hit = teacher_cache.teacher_sequences(
                teacher_cache.sequence_cache_file(teacher_weights, sources, data.max_length,
                                                  beams, data.max_target_length),
                beam_search, sources)
            sequences_cache = "hit" if hit else "miss"
        needs_teacher = any(name in TEACHER_TERMS and weight > 0
                            for name, weight, _ in phase.losses)
        contexts = (ImitationContexts(distill_cfg.generation, layout, data.max_target_length,
                                      cfg.run.seed) if phase.rollout else None)
        training = distill_cfg.training.model_copy(
            update={"epochs": phase.epochs or distill_cfg.training.epochs})
        result = fit(student, layout, task, TargetSplit(sources, targets),
                     losses.build(phase.losses),
                     teacher=teacher_logits(teacher) if needs_teacher else (lambda batch: None),
                     cfg=training, max_new_tokens=data.max_target_length, seed=cfg.run.seed,
                     description=f"student ({phase.name})", contexts=contexts,
                     checkpoints=None if checkpoints is None
                     else checkpoints / f"{number}-{phase.name}")
        history += [{"phase": phase.name, **row} for row in result.history]
        best_epoch = result.best_epoch
    return student, {
        "recipe": distill_cfg.recipe,
        "student": info,
        "teacher_sequences_cache": sequences_cache,
        "training_examples": len(sources),
        "history": history,
        "best_epoch": best_epoch,
        **{name: score(student, layout, task, name, data.max_target_length,
                       distill_cfg.training.eval_batch_size) for name in ("validation", "test")},
    }


def build_student(cfg: DistillConfig, teacher: Any) -> tuple[Any, dict[str, Any]]:
    """Fewer layers of the teacher. distill.student is the encoder's layer count ("2") or its
    layers ("0,5"), or for a decoder-only teacher its layers; distill.generation.decoder_layers
    the decoder's count (default: as many as the encoder keeps). With
    distill.generation.decoder "gru", the decoder is a GRU with attention (decoder_layers deep,
    gru_hidden wide) instead."""
    spec = cfg.student.strip()
    try:
        encoder: int | list[int] = (int(spec) if "," not in spec
                                    else [int(p) for p in spec.split(",") if p.strip()])
    except ValueError:
        raise KdedgeError(f"distill.student {cfg.student!r} is not a layer count or list for a "
                          "seq2seq student; give e.g. 2 or 0,5.") from None
    count = encoder if isinstance(encoder, int) else len(encoder)
    if count < 1:
        raise KdedgeError(f"distill.student {cfg.student!r} keeps no layer; give at least 1.")
    if not getattr(teacher.config, "is_encoder_decoder", False):  # a decoder-only LM
        total = teacher.config.num_hidden_layers
        if isinstance(encoder, int) and encoder > total:
            raise KdedgeError(f"distill.student asks for {count} layers of a teacher with "
                              f"{total}; ask for fewer.")
        student = fewer_decoder_layers(teacher, encoder)
        return student, {"source": f"{count} of the teacher's {total} layers",
                         "parameters": sum(p.numel() for p in student.parameters()),
                         "layers": {"decoder": count}}
    g = cfg.generation
    if not hasattr(teacher, "encoder") or not hasattr(teacher, "decoder") or not hasattr(
            teacher.config, "encoder"):
        raise KdedgeError("A seq2seq student from fewer layers needs a bert2bert-style teacher "
                          f"(EncoderDecoderModel); this teacher is {teacher.config.model_type}.")
    total = (teacher.config.encoder.num_hidden_layers, teacher.config.decoder.num_hidden_layers)
    if isinstance(encoder, int) and encoder > total[0]:
        raise KdedgeError(f"distill.student asks for {count} encoder layers of a teacher with "
                          f"{total[0]}; ask for fewer.")
    if g.decoder == "gru":
        from kdedge.models.gru_decoder import gru_student

        student = gru_student(teacher, encoder, hidden=g.gru_hidden, layers=g.decoder_layers or 1)
        return student, {"source": f"{count} encoder layers of the teacher + a "
                                   f"{student.config.num_layers}-layer GRU decoder "
                                   f"({student.config.hidden_size} wide)",
                         "parameters": sum(p.numel() for p in student.parameters()),
                         "layers": {"encoder": count, "decoder": student.config.num_layers}}
    decoder = g.decoder_layers or count
    if decoder > total[1]:
        raise KdedgeError(f"distill.student asks for {count} encoder / {decoder} decoder layers "
                          f"of a teacher with {total[0]} / {total[1]}; ask for fewer.")
    student = fewer_layers(teacher, encoder, decoder)
    return student, {"source": f"{count} encoder + {decoder} decoder layers of the teacher",
                     "parameters": sum(p.numel() for p in student.parameters()),
                     "layers": {"encoder": count, "decoder": decoder}}

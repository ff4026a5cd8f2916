"""L2KD (Chuang, Su & Chen 2020) on LAMOL: one decoder-only model learns a stream of tasks.

For task m of the stream (distill.lifelong.tasks, then the run's own data last):

1. a disposable teacher is fine-tuned on task m's data alone (the teacher stage's model for the
   run's task; the earlier tasks' teachers are prepared the same way and cached);
2. the lifelong model (the student, started from the untrained teacher checkpoint's layers)
   trains on task m with KD from that teacher (word-level: the KL between the teacher's and
   its next-token distributions on the answer and, weighted by lambda, on the prompt;
   sequence-level; or both; or, with kd none, the gold targets alone: LAMOL without KD), plus
   gamma x |task m| replayed rows of the earlier tasks with plain NLL: pseudo-samples the model
   generates itself from each earlier task's generation token (LAMOL), or real rows (an
   upper bound);
3. the epoch kept is the one with the best mean validation ROUGE-L over every task seen so
   far; every task's test ROUGE-L is measured after the step.

A language-model term on the prompt (lambda) teaches the model to write whole examples, which is
what makes its pseudo-samples possible. Every sequence of an earlier task starts with that
task's own generation token (`__gen_NAME__`, added to the tokenizer), in training, in its
pseudo-samples and when it is scored; the run's own task starts with BOS, so the shipped model
needs no new token. The task teachers read BOS there, as they were trained. The same student
trained on every task at once (multitask) is the reference the paper compares against.
Everything trains through the one loop.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdedge.config import KdedgeConfig, TaskConfig
from kdedge.data.dataset import TaskData, load_task
from kdedge.distill import losses
from kdedge.distill.generation_training import TargetSplit, collate, fit, score
from kdedge.distill.recipes import RECIPES, Dims
from kdedge.errors import KdedgeError
from kdedge.models.layouts import CausalLayout, Layout, layout_for
from kdedge.training.outputs import Outputs
from kdedge.training.trainer import model_inputs

log = logging.getLogger("kdedge")

TASKS_DIR = "lifelong"  # earlier tasks' data and teachers, under the distill stage's folder


@dataclass
class StreamTask:
    name: str
    data: TaskData
    teacher: Any  # fine-tuned on this task's data alone
    teacher_test: dict[str, Any]


def distill(cfg: KdedgeConfig, teacher: Any, tokenizer: Any, task: TaskData, work: Path,
            build_student: Any) -> tuple[Any, dict[str, Any]]:
    """Run the stream; returns the lifelong model after its last task, and the metrics."""
    from transformers import AutoModelForCausalLM

    from kdedge.hf import resolve_source

    life, data = cfg.distill.lifelong, cfg.data
    if task.kind != "causal-lm":
        raise KdedgeError(f"The lifelong recipe trains a decoder-only model (data.task "
                          f"causal-lm), not {task.kind}; set data.task to causal-lm.")
    stream = [*(earlier_task(t, cfg, work / TASKS_DIR / t.name) for t in life.tasks),
              StreamTask("target", task, teacher, score(teacher, layout_for(
                  teacher.config, tokenizer, data.max_length), task, "test",
                  data.max_target_length))]
    base = AutoModelForCausalLM.from_pretrained(resolve_source(cfg.teacher.model))
    if base.config.pad_token_id is None:
        base.config.pad_token_id = teacher.config.pad_token_id
    layout = layout_for(teacher.config, tokenizer, data.max_length)
    if not isinstance(layout, CausalLayout) or layout.start is None:
        raise KdedgeError("The lifelong recipe needs a tokenizer or model with a BOS token to "
                          "generate pseudo-samples from; set bos_token_id in the model's config.")
    student, info = build_student(cfg.distill, base)
    layouts = task_layouts(stream, layout, tokenizer, student)
    phase = RECIPES.get("lifelong")(cfg.distill, Dims(0, 0, generation=True))[0]
    needs_teacher = life.kd in ("word", "seq-soft")  # seq and none read no teacher logits
    width = student.get_input_embeddings().num_embeddings
    rng = random.Random(cfg.run.seed)
    steps, history = [], []
    for number, current in enumerate(stream):
        mine = layouts[current.name]
        sources = list(current.data.splits["train"].texts)
        targets = layout.targets(current.data.splits["train"].labels, data.max_target_length)
        if phase.targets == "teacher":
            targets = _teacher_outputs(current, layout, sources, data.max_target_length)
        replayed = _replay(life, student, layouts, stream[:number], len(sources), rng,
                           data.max_length + data.max_target_length, data.max_target_length,
                           cfg.run.seed + number)
        split = TargetSplit(sources + [s for s, _, _ in replayed],
                            targets + [t for _, t, _ in replayed],
                            pseudo=[False] * len(sources) + [True] * len(replayed))
        starts = [mine.start] * len(sources) + [start for _, _, start in replayed]
        log.info("  lifelong step %d/%d: task %r, %d rows + %d replayed", number + 1,
                 len(stream), current.name, len(sources), len(replayed))
        result = fit(student, mine, current.data, split, losses.build(phase.losses),
                     teacher=teacher_at_bos(current.teacher, layout, width) if needs_teacher
                     else (lambda batch: None), cfg=cfg.distill.training,
                     max_new_tokens=data.max_target_length, seed=cfg.run.seed + number,
                     description=f"lifelong model ({current.name})",
                     evaluate=seen_so_far(stream[:number + 1], layouts, data.max_target_length,
                                          cfg.distill.training.eval_batch_size),
                     batches=starting_with(mine, split, starts))
        history += [{"phase": current.name, **row} for row in result.history]
        steps.append({"step": number + 1, "task": current.name, "replayed": len(replayed),
                      "test_rougeL": {t.name: score(student, layouts[t.name], t.data, "test",
                                                    data.max_target_length)["rougeL"]
                                      for t in stream}})
    metrics = {
        "stream": [t.name for t in stream],
        "kd": life.kd, "replay": life.replay,
        "teachers_test_rougeL": {t.name: t.teacher_test["rougeL"] for t in stream},
        "after_step": steps,
        "multitask_test_rougeL": (_multitask(cfg, base, layout, stream, build_student)
                                  if life.multitask_baseline else None),
    }
    return student, {"student": info, "history": history, "lifelong": metrics,
                     "best_epoch": history[-1]["epoch"] if history else 0}


def seen_so_far(tasks: list[StreamTask], layouts: dict[str, CausalLayout], max_new_tokens: int,
                batch_size: int) -> Callable[[Any], float]:
    """The model-selection score of a step: the mean validation ROUGE-L over every task seen so
    far (each behind its generation token), so the epoch kept is not the one that learnt the
    new task by forgetting the old."""
    def evaluate(model: Any) -> float:
        return sum(float(score(model, layouts[t.name], t.data, "validation", max_new_tokens,
                               batch_size)["rougeL"]) for t in tasks) / len(tasks)
    return evaluate


def gen_token(name: str) -> str:
    return f"__gen_{name}__"


def task_layouts(stream: list[StreamTask], layout: CausalLayout, tokenizer: Any, student: Any,
                 ) -> dict[str, CausalLayout]:
    """Each task's layout, starting its sequences with the task's generation token (LAMOL's
    [GEN_task]): an added token `__gen_NAME__` for every earlier task, the student's embeddings
    grown to hold them. The run's own task, the last, keeps the BOS token, so the shipped model
    reads its prompts as any decoder-only model does."""
    names = [gen_token(t.name) for t in stream[:-1]]
    if names:
        tokenizer.add_special_tokens({"additional_special_tokens": names},
                                     replace_additional_special_tokens=False)
        if len(tokenizer) > student.get_input_embeddings().num_embeddings:
            student.resize_token_embeddings(len(tokenizer))
    out = {t.name: replace(layout, start=tokenizer.convert_tokens_to_ids(n))
           for t, n in zip(stream[:-1], names, strict=True)}
    return {**out, stream[-1].name: layout}


def starting_with(layout: CausalLayout, split: TargetSplit, starts: list[int],
                  ) -> Callable[[Sequence[int]], dict[str, Any]]:
    """Batches whose rows each begin with their own task's generation token (a causal layout
    puts the start token in the first column of every row)."""
    def batch(rows: Sequence[int]) -> dict[str, Any]:
        out = collate(layout, split, rows)
        out["input_ids"][:, 0] = torch.tensor([starts[i] for i in rows], dtype=torch.long)
        return out
    return batch


def teacher_at_bos(teacher: Any, layout: CausalLayout, width: int) -> Callable[[dict[str, Any]], Outputs]:
    """A task teacher's next-token logits on a batch as it was trained: its rows starting with
    BOS (it never saw the generation tokens), its vocabulary padded to the student's `width`
    with tokens of no probability."""
    def run(batch: dict[str, Any]) -> Outputs:
        ids = batch["input_ids"].clone()
        ids[:, 0] = layout.start
        with torch.no_grad():
            logits = teacher(**model_inputs({**batch, "input_ids": ids})).logits
        if logits.shape[-1] < width:  # -1e4, not -inf: 0 x log 0 terms must stay 0, not nan
            logits = F.pad(logits, (0, width - logits.shape[-1]), value=-1e4)
        return Outputs(logits)
    return run


def earlier_task(spec: TaskConfig, cfg: KdedgeConfig, folder: Path) -> StreamTask:
    """An earlier task's data (the run's task kind and lengths) and its teacher, fine-tuned on
    that data alone."""
    from transformers import AutoModelForCausalLM

    from kdedge.artifacts import MODEL_DIR, fingerprint
    from kdedge.data import stage as data_stage
    from kdedge.teacher import generator as teacher_generator
    from kdedge.teacher.cache import cache_entry, teacher_key

    data_cfg = spec.data.model_copy(update={
        "task": cfg.data.task, "max_length": cfg.data.max_length,
        "max_target_length": cfg.data.max_target_length})
    folder.mkdir(parents=True, exist_ok=True)
    data_stage.prepare(data_cfg, cfg.run.seed, folder)
    task = load_task(folder)
    data_fp = fingerprint("data", {"data": data_cfg.model_dump(mode="json"),
                                   "seed": cfg.run.seed}, {})
    key = teacher_key(spec.teacher, cfg.run.seed, data_fp)
    metrics = teacher_generator.prepare(spec.teacher, data_cfg, task, cfg.run.seed,
                                        cache_entry(key, spec.teacher.model, spec.teacher.revision),
                                        folder / MODEL_DIR, None)
    teacher = AutoModelForCausalLM.from_pretrained(folder / MODEL_DIR).eval()
    return StreamTask(spec.name, task, teacher, metrics["test"])


def pseudo_samples(model: Any, layout: CausalLayout, count: int, top_k: int, max_tokens: int,
                   seed: int, batch_size: int = 32) -> list[tuple[str, list[int]]]:
    """LAMOL's replay: whole examples the model writes from the layout's start token (a task's
    generation token), top-k sampled, cut into (prompt text, target ids) at the separator;
    those without a prompt, a separator or a target are dropped."""
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    out: list[tuple[str, list[int]]] = []
    settings = GenerationConfig(max_new_tokens=max_tokens, do_sample=True, top_k=top_k,
                                pad_token_id=layout.pad, eos_token_id=None)
    was_training = model.training
    model.eval()
    # The separator is the EOS token whenever the tokenizer has no SEP (GPT-2) or its SEP is the
    # EOS (BERT's): generate() fills an unset eos_token_id from the model's own generation
    # config, so it stopped every sample at its separator, before the answer, and every sample
    # was dropped. The model's EOS is cleared while sampling and put back after.
    own = getattr(model, "generation_config", None)
    saved = getattr(own, "eos_token_id", None)
    if own is not None:
        own.eos_token_id = None
    try:
        with torch.no_grad():
            for start in range(0, count, batch_size):
                n = min(batch_size, count - start)
                ids = torch.full((n, 1), layout.start, dtype=torch.long)
                rows = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      generation_config=settings)[:, 1:].tolist()
                for row in rows:
                    sample = _split_sample(row, layout)
                    if sample is not None:
                        out.append(sample)
    finally:
        if own is not None:
            own.eos_token_id = saved
        model.train(was_training)
    return out


def _split_sample(row: list[int], layout: CausalLayout) -> tuple[str, list[int]] | None:
    if layout.separator not in row:
        return None
    cut = row.index(layout.separator)
    prompt, rest = row[:cut], row[cut + 1:]
    if layout.eos not in rest:
        return None
    target = rest[:rest.index(layout.eos) + 1]
    text = layout.tokenizer.decode(prompt, skip_special_tokens=True).strip()
    return (text, target) if text and len(target) > 1 else None


def _replay(life: Any, student: Any, layouts: dict[str, CausalLayout], earlier: list[StreamTask],
            new_rows: int, rng: random.Random, max_tokens: int, max_target_length: int,
            seed: int) -> list[tuple[str, list[int], int]]:
    """gamma x new_rows replayed rows of the earlier tasks, split evenly between them, generated
    from each task's generation token or real: (prompt, target ids, the task's start token)."""
    if not earlier or life.replay == "none":
        return []
    count = math.ceil(life.replay_ratio * new_rows)
    per_task = math.ceil(count / len(earlier))
    rows = []
    for number, task in enumerate(earlier):
        layout = layouts[task.name]
        if life.replay == "generated":
            rows += [(text, target, layout.start) for text, target in pseudo_samples(
                student, layout, per_task, life.replay_top_k, max_tokens, seed + number)]
            continue
        train = task.data.splits["train"]
        picked = rng.sample(range(len(train)), min(per_task, len(train)))
        targets = layout.targets([train.labels[i] for i in picked], max_target_length)
        rows += [(train.texts[i], t, layout.start) for i, t in zip(picked, targets, strict=True)]
    return rows[:count]


def _teacher_outputs(task: StreamTask, layout: Layout, sources: list[str],
                     max_new_tokens: int) -> list[list[int]]:
    """Sequence-level KD targets: the task teacher's greedy outputs (L2KD decodes greedily)."""
    out: list[list[int]] = []
    for start in range(0, len(sources), 32):
        out += layout.continuations(task.teacher, sources[start:start + 32], max_new_tokens)
    return out


def _multitask(cfg: KdedgeConfig, base: Any, layout: Layout, stream: list[StreamTask],
               build_student: Any) -> dict[str, float]:
    """The reference: the same student trained on every task's gold data at once."""
    data = cfg.data
    student, _ = build_student(cfg.distill, base)
    sources, targets = [], []
    for task in stream:
        train = task.data.splits["train"]
        sources += list(train.texts)
        targets += layout.targets(train.labels, data.max_target_length)
    loss = losses.build([("token_ce", 1.0, {}), ("prompt_lm", cfg.distill.lifelong.lm_weight, {})])
    fit(student, layout, stream[-1].data, TargetSplit(sources, targets), loss,
        teacher=lambda batch: None, cfg=cfg.distill.training,
        max_new_tokens=data.max_target_length, seed=cfg.run.seed, description="multitask model",
        evaluate=seen_so_far(stream, {t.name: layout for t in stream}, data.max_target_length,
                             cfg.distill.training.eval_batch_size))  # the epoch best on every task
    return {t.name: score(student, layout, t.data, "test", data.max_target_length)["rougeL"]
            for t in stream}


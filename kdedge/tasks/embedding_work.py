"""The work of the embedding task kind (tasks/embedding.py), stage by stage.

- teacher: the sentence encoder as it is (pooling read from its sentence-transformers
  1_Pooling/config.json, mean otherwise), and its embeddings of the validation and test texts,
  the reference every later score is measured against (teacher stage's reference.safetensors);
- distill: a student built like any other (a layer cut or a narrower transformer), trained
  through the one loop to the cosine of the teacher's cached embeddings of the training texts,
  with a projection when the widths differ; the best epoch by validation cosine is kept;
- export: both encoders to ONNX (torch.onnx: pooling, projection and normalisation are in the
  graph, whose output is `embedding`), parity-checked against PyTorch;
- quantize: the labelled tasks' quantizer and accuracy gate, scored by cosine to the reference.

A `SentenceEncoder` answers like a Hugging Face model whose `logits` are the embedding, so the
training loop, the teacher-output cache and the evaluation helpers need nothing new.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdedge.artifacts import MODEL_DIR, STUDENT_DIR
from kdedge.data.dataset import TaskData, TaskSplit, load_unlabeled
from kdedge.distill.losses import WeightedSum
from kdedge.errors import KdedgeError
from kdedge.evaluate import onnx_logits, regression_metrics, torch_logits, truncated
from kdedge.runtime import ONNX_FILE
from kdedge.training import teacher_cache
from kdedge.training.outputs import Outputs, pool

log = logging.getLogger("kdedge")

OUTPUT = "embedding"  # the exported graph's output (tasks/embedding.py KIND.output)
REFERENCE_FILE = "reference.safetensors"  # the teacher's embeddings of validation and test
ENCODER_FILE = "sentence_encoder.json"  # pooling, and whether a projection follows
PROJECTION_FILE = "projection.safetensors"
NEIGHBOURS = 10  # recall@10
EVAL_SPLITS = ("validation", "test")
STUDENT_BUILDERS = ("teacher-layers", "transformer")  # students that are encoders themselves


@dataclass
class EncoderOutput:
    logits: torch.Tensor  # (batch, dim): the L2-normalised sentence embedding
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class SentenceEncoder(nn.Module):
    """A transformer encoder, pooled over its real tokens, projected to `width` when given (and
    different from the encoder's), and L2-normalised: the vector semantic search compares."""

    def __init__(self, encoder: nn.Module, pooling: str = "mean", width: int | None = None) -> None:
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        hidden = encoder.config.hidden_size
        self.projection = nn.Linear(hidden, width) if width and width != hidden else None

    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def dim(self) -> int:
        return self.projection.out_features if self.projection else self.encoder.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                **_: Any) -> EncoderOutput:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states, **extra)
        vector = pool(out.last_hidden_state, attention_mask, self.pooling)
        if self.projection is not None:
            vector = self.projection(vector)
        return EncoderOutput(F.normalize(vector, dim=-1), out.hidden_states)

    def save(self, folder: Path, tokenizer: Any) -> None:
        from safetensors.torch import save_file

        from kdedge.hf import save_tokenizer

        self.encoder.save_pretrained(folder, safe_serialization=True)
        save_tokenizer(tokenizer, folder)
        (folder / ENCODER_FILE).write_text(json.dumps(
            {"pooling": self.pooling, "projection": self.projection is not None, "dim": self.dim}))
        if self.projection is not None:
            save_file({k: v.contiguous() for k, v in self.projection.state_dict().items()},
                      str(folder / PROJECTION_FILE))

    @classmethod
    def load(cls, folder: Path) -> SentenceEncoder:
        from safetensors.torch import load_file

        meta = json.loads((folder / ENCODER_FILE).read_text())
        model = cls(load_encoder(folder), meta["pooling"], meta["dim"])
        if model.projection is not None:
            model.projection.load_state_dict(load_file(str(folder / PROJECTION_FILE)))
        return model.eval()


def load_encoder(location: Path, **kwargs: Any) -> nn.Module:
    """The encoder without the pooler that BERT-like checkpoints carry: the embedding never reads
    it, so it stays out of the student, its gradients and the ONNX graph. Saying that the
    checkpoint's pooler weights went unused would only alarm the user."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    model_type = AutoConfig.from_pretrained(location, **kwargs).model_type
    if model_type in ("bert", "roberta", "xlm-roberta", "camembert", "ernie"):
        kwargs["add_pooling_layer"] = False
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModel.from_pretrained(location, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def teacher_pooling(folder: Path) -> str:
    """The pooling a sentence-transformers folder declares (cls or mean); mean otherwise."""
    config = folder / "1_Pooling" / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def embedding_metrics(student: np.ndarray, teacher: np.ndarray, k: int = NEIGHBOURS,
                      ) -> dict[str, Any]:
    """Mean cosine to the teacher's embeddings, Spearman of every pair's similarity against the
    teacher's, and recall@k of the teacher's k nearest neighbours (each text itself excluded)."""
    s = _unit(student)
    t = _unit(teacher)
    n = len(t)
    k = min(k, n - 1)
    sim_s, sim_t = s @ s.T, t @ t.T
    upper = np.triu_indices(n, 1)
    np.fill_diagonal(sim_s, -np.inf)
    np.fill_diagonal(sim_t, -np.inf)
    top_s = np.argpartition(-sim_s, k - 1, axis=1)[:, :k]
    top_t = np.argpartition(-sim_t, k - 1, axis=1)[:, :k]
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(top_s, top_t, strict=True)]
    return {"cosine": round(float((s * t).sum(1).mean()), 6),
            "spearman": regression_metrics(sim_s[upper], sim_t[upper])["spearman"],
            "recall_at_10": round(float(np.mean(hits) / k), 6), "examples": n}


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class CosineToTeacher(nn.Module):
    """1 - cos(student embedding, teacher embedding), averaged over the batch. On unit vectors
    this is half the squared distance, so it is the MSE to the teacher's embedding as well."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        if teacher is None:
            raise KdedgeError("The embedding loss needs the teacher's embeddings.")
        return (1 - F.cosine_similarity(student.logits, teacher.logits, dim=-1)).mean()


def load_reference(teacher_stage: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(teacher_stage / REFERENCE_FILE))


def _scores(vectors: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    return {split: embedding_metrics(vectors[split], reference[split]) for split in EVAL_SPLITS}


# --- the stages' work -------------------------------------------------------------------------


def teacher(ctx: Any, task: TaskData) -> dict[str, Any]:
    """The teacher as it is, saved with its pooling, and its reference embeddings."""
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    from kdedge.hf import resolve_source

    cfg, max_length = ctx.cfg.teacher, ctx.cfg.data.max_length
    if cfg.fine_tune == "always":
        raise KdedgeError("teacher.fine_tune=always does not apply to an embedding task: the "
                          "teacher's own embedding is the target; set teacher.fine_tune to auto.")
    location = Path(resolve_source(cfg.model))
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    model = SentenceEncoder(load_encoder(location, **kwargs), teacher_pooling(location)).eval()
    out = ctx.work / MODEL_DIR
    model.save(out, tokenizer)
    vectors = {split: torch_logits(model, tokenizer, task.splits[split].texts, max_length)
               for split in EVAL_SPLITS}
    save_file({split: v.astype(np.float32) for split, v in vectors.items()},
              str(ctx.work / REFERENCE_FILE))
    probe = task.splits["validation"].texts[:8]
    reloaded = torch_logits(SentenceEncoder.load(out), tokenizer, probe, max_length)
    log.info("  teacher %r: %s pooling, %d-dimensional embeddings", cfg.model, model.pooling,
             model.dim)
    return {"model": cfg.model, "fine_tuned": False, "cache_hit": False,
            "parameters": sum(p.numel() for p in model.parameters()),
            "num_layers": model.config.num_hidden_layers, "pooling": model.pooling,
            "embedding_dim": model.dim,
            "truncated": {name: truncated(tokenizer, split.texts, max_length)
                          for name, split in task.splits.items()},
            "history": [], "reload_max_abs_diff": float(abs(reloaded - vectors["validation"][:8]).max()),
            **_scores(vectors, vectors)}


def distill(ctx: Any, task: TaskData) -> dict[str, Any]:
    """A smaller encoder trained to the cosine of the teacher's embeddings."""
    from transformers import AutoTokenizer

    from kdedge.models import vocabulary
    from kdedge.models.students import build_student
    from kdedge.training.trainer import train

    cfg, max_length = ctx.cfg.distill, ctx.cfg.data.max_length
    teacher_dir = ctx.input("teacher") / MODEL_DIR
    teacher_model = SentenceEncoder.load(teacher_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    reference = load_reference(ctx.input("teacher"))
    encoder, info = build_student(cfg.student, teacher_model.encoder, ctx.cfg.teacher.trust_remote_code)
    if info["builder"] not in STUDENT_BUILDERS:
        raise KdedgeError(f"distill.student {cfg.student!r} is not an encoder of the teacher's "
                          "architecture; an embedding student is a layer count (3), teacher layers "
                          "(0,2,4) or a narrower transformer (transformer:layers=4,hidden_size=256).")
    student = SentenceEncoder(encoder, teacher_model.pooling, teacher_model.dim)
    info["parameters"] = sum(p.numel() for p in student.parameters())
    info["projection"] = student.projection is not None
    log.info("  student: %s, %.1fM parameters", info["source"], info["parameters"] / 1e6)

    # no labels are needed, so the texts the data stage left out of train (data.max_train_samples)
    # teach the student as well
    texts = [*task.splits["train"].texts, *load_unlabeled(ctx.input("data"))]
    train_split = TaskSplit(texts, np.zeros(len(texts), dtype=np.int64))
    weights = [meta["sha256"] for rel, meta in ctx.manifest("teacher").outputs.items()
               if rel.endswith(".safetensors")]
    cached, hit = teacher_cache.teacher_outputs(
        teacher_cache.cache_folder(weights, train_split.texts, max_length), teacher_model,
        tokenizer, train_split, max_length)
    del teacher_model
    tokenizer, info["vocabulary"] = vocabulary.apply(cfg.vocabulary, encoder, tokenizer, train_split.texts)
    info["parameters"] = sum(p.numel() for p in student.parameters())

    def validation_cosine(model: nn.Module) -> float:
        vectors = torch_logits(model, tokenizer, task.splits["validation"].texts, max_length)
        return embedding_metrics(vectors, reference["validation"])["cosine"]

    result = train(student, tokenizer, train_split, WeightedSum([("cosine", 1.0, CosineToTeacher())]),
                   teacher=lambda batch: Outputs(logits=cached["logits"][batch["index"]]),
                   evaluate=validation_cosine, cfg=cfg.training, max_length=max_length,
                   seed=ctx.cfg.run.seed, description="student (embedding)",
                   checkpoints=None if ctx.checkpoints is None else ctx.checkpoints / "1-embedding",
                   length_buckets=task.length_buckets)
    out = ctx.work / STUDENT_DIR
    student.save(out, tokenizer)
    probe = task.splits["validation"].texts[:8]
    before = torch_logits(student, tokenizer, probe, max_length)
    after = torch_logits(SentenceEncoder.load(out), tokenizer, probe, max_length)
    vectors = {split: torch_logits(student, tokenizer, task.splits[split].texts, max_length)
               for split in EVAL_SPLITS}
    return {"recipe": cfg.recipe, "student": info, "teacher_outputs_cache": "hit" if hit else "miss",
            "training_examples": len(train_split), "history": [
                {"phase": "embedding", **row} for row in result.history],
            "best_epoch": result.best_epoch, "reload_max_abs_diff": float(abs(before - after).max()),
            **_scores(vectors, reference)}


def export(ctx: Any, task: TaskData) -> dict[str, Any]:
    """Both encoders to ONNX, pooling and normalisation inside the graph, checked against
    PyTorch at one unpadded text and a padded batch, scored through onnxruntime."""
    from transformers import AutoTokenizer

    from kdedge.export.classifier import model_sources, parity, require_parity
    from kdedge.export.torch_export import copy_model_files, trace

    cfg, max_length = ctx.cfg.export, ctx.cfg.data.max_length
    reference = load_reference(ctx.input("teacher"))
    models = {}
    for name, source in model_sources(ctx).items():
        out = ctx.work / name
        model = SentenceEncoder.load(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        trace(_EmbeddingOnly(model), out / ONNX_FILE, OUTPUT, cfg.opset, model.config,
              "the sentence encoder")
        copy_model_files(source, out)
        shutil.copy2(source / ENCODER_FILE, out / ENCODER_FILE)
        check = parity(model, tokenizer, out, OUTPUT,
                       task.splits["validation"].texts[:cfg.parity_samples], max_length, cfg.atol)
        require_parity(name, out, check)
        vectors = {split: onnx_logits(out, tokenizer, task.splits[split].texts, max_length,
                                      threads=ctx.cfg.run.threads, output=OUTPUT)
                   for split in EVAL_SPLITS}
        models[name] = {"path": name, "exporter": "torch.onnx", "bytes": (out / ONNX_FILE).stat().st_size,
                        "opset": cfg.opset, "parity": check, **_scores(vectors, reference)}
    return {"models": models}


class _EmbeddingOnly(nn.Module):
    """The tracer sees a plain tensor output instead of an EncoderOutput."""

    def __init__(self, model: SentenceEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask, token_type_ids).logits


def quantize(ctx: Any, task: TaskData) -> dict[str, Any]:
    """int8 of the student through the labelled tasks' quantizer, gated on validation cosine."""
    from transformers import AutoTokenizer

    from kdedge.quantize import gate
    from kdedge.quantize.classifier import quantize_student

    cfg, max_length = ctx.cfg.quantize, ctx.cfg.data.max_length
    threads = ctx.cfg.bench.threads[0] if ctx.cfg.bench.threads else ctx.cfg.run.threads
    source = ctx.input("export") / "student"
    tokenizer = AutoTokenizer.from_pretrained(source)
    reference = load_reference(ctx.input("teacher"))

    def scores(path: Path, split: str) -> dict[str, Any]:
        vectors = onnx_logits(path, tokenizer, task.splits[split].texts, max_length,
                              threads=threads, output=OUTPUT)
        return embedding_metrics(vectors, reference[split])

    scratch = ctx.work / ".scratch"
    try:
        entry = quantize_student(
            source, ctx.work / "student-int8", scratch, cfg, task, max_length, threads,
            score=lambda path: scores(path, "validation")[task.primary_metric],
            measure=lambda path: {split: scores(path, split) for split in EVAL_SPLITS})
    finally:
        gate.cleanup(scratch)
    gate.enforce(entry["gate"], cfg.strict)
    return {"models": {"student-int8": entry}}


def report_section(report: dict[str, Any]) -> Any:
    """What the embedding metrics say about semantic search with each artifact (report.md and
    report.html); none without scored artifacts."""
    from kdedge.report.sections import Section, Text, table

    rows = [row for row in report.get("artifacts") or []
            if "@" not in str(row["name"]) and (row.get("test") or {}).get("cosine") is not None]
    if not rows:
        return None
    header = ["artifact", "mean cosine to the teacher", "Spearman of pair similarities",
              "recall@10 of the teacher's neighbours"]
    body = [[row["name"], *(f"{row['test'][m]:.4f}" for m in ("cosine", "spearman", "recall_at_10"))]
            for row in rows]
    return Section("search-quality", "Semantic search quality", (
        Text("Each artifact's embeddings of the test texts against the teacher's: how close each "
             "vector is (mean cosine), how well the ranking of every pair of texts by similarity "
             "is kept (Spearman), and how many of each text's 10 nearest neighbours by the teacher "
             "it also finds (recall@10). The teacher scores 1 on all three."),
        table(header, body)))

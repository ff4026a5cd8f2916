"""Task metrics, and predictions from a PyTorch model or an ONNX file on the same texts.

Every artifact is scored through the runtime it ships on: PyTorch for checkpoints,
onnxruntime for ONNX files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.data.dataset import TaskData
from kdedge.errors import KdedgeError
from kdedge.runtime import ort_feed, ort_session


def headline(task: TaskData, metrics: dict[str, Any]) -> dict[str, Any]:
    """A split's summary metrics (the primary one first) and its size, without per-class tables."""
    return {k: metrics[k] for k in (*task.metrics, "examples")}


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int,
                           ) -> dict[str, Any]:
    """Accuracy and macro-F1, plus per-class precision / recall / F1 and the confusion matrix."""
    preds = logits.argmax(-1)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    tp = np.diag(confusion).astype(float)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": round(float((preds == labels).mean()), 6),
        "macro_f1": round(float(f1.mean()), 6),
        "examples": len(labels),
        "per_class": {"precision": precision.round(6).tolist(), "recall": recall.round(6).tolist(),
                      "f1": f1.round(6).tolist(), "support": actual.tolist()},
        "confusion": confusion.tolist(),
    }


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU (sacrebleu, its default 13a tokenization) and mean ROUGE-1/2/L F1
    (rouge-score, Porter stemming), all on a 0-100 scale, for generated against gold texts."""
    import sacrebleu

    rouge = rouge_f1(predictions, references)
    bleu = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score
    return {"bleu": round(float(bleu), 4),
            **{kind: round(100 * float(np.mean(values)), 4) for kind, values in rouge.items()},
            "examples": len(references)}


ROUGE_KINDS = ("rouge1", "rouge2", "rougeL")


def rouge_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Each example's ROUGE-1/2/L F1 (rouge-score, Porter stemming), 0-1, by kind."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no references to score against")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KINDS), use_stemmer=True)
    scores = [scorer.score(reference, prediction)
              for prediction, reference in zip(predictions, references, strict=True)]
    return {kind: np.array([row[kind].fmeasure for row in scores]) for kind in ROUGE_KINDS}


def regression_metrics(outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman correlation and mean squared error of predicted against gold scores.

    Spearman is Pearson on ranks, tied values sharing their average rank. A constant side has
    no defined correlation; it scores 0 (no relationship shown) rather than NaN.
    """
    pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
    gold = np.asarray(labels, dtype=np.float64).reshape(-1)
    return {
        "pearson": round(_pearson(pred, gold), 6),
        "spearman": round(_pearson(average_ranks(pred), average_ranks(gold)), 6),
        "mse": round(float(np.mean((pred - gold) ** 2)), 6),
        "examples": len(gold),
    }


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span ([5, 7, 5] -> [1.5, 3, 1.5])."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the last rank of each distinct value
    return (ends - (counts - 1) / 2)[inverse].astype(np.float64)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def task_metrics(logits: np.ndarray, labels: np.ndarray, task: TaskData) -> dict[str, Any]:
    """The task's metrics of one split: classification or regression."""
    if task.is_regression:
        return regression_metrics(logits, labels)
    return classification_metrics(logits, labels, task.num_labels)


def batches(texts: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def length_sorted(texts: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """The texts shortest first (by characters, a pair's two texts together), so that batches
    cut from them pad little: a pass over 4,000 short real texts took two thirds of the time in
    this order (benchmarks/results/real-data.md). Also the index that puts rows computed in this
    order back in the texts' own: `rows[back]`."""
    order = np.argsort([sum(map(len, t)) if isinstance(t, tuple | list) else len(t) for t in texts],
                       kind="stable")
    return [texts[i] for i in order], np.argsort(order)


def encode(tokenizer: Any, texts: Sequence[Any], max_length: int, return_tensors: str,
           padding: str | bool = True) -> dict[str, Any]:
    """Tokenize single texts or (text, pair) tuples the same way everywhere."""
    pairs = [isinstance(t, tuple | list) for t in texts]
    if any(pairs) and not all(pairs):  # a string would be read as its first two characters
        raise KdedgeError("These texts mix sentence pairs with single texts; give every row "
                          "both texts of the pair.")
    if texts and pairs[0]:
        first, second = [t[0] for t in texts], [t[1] for t in texts]
        return tokenizer(first, second, truncation=True, max_length=max_length, padding=padding,
                         return_tensors=return_tensors)
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=padding,
                     return_tensors=return_tensors)


def torch_logits(model: Any, tokenizer: Any, texts: Sequence[Any], max_length: int,
                 batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    device = next(model.parameters()).device  # a GPU while a launched run trains
    ordered, back = length_sorted(texts)
    out = []
    with torch.inference_mode():
        for chunk in batches(ordered, batch_size):
            enc = {k: v.to(device) for k, v in encode(tokenizer, chunk, max_length, "pt").items()}
            out.append(model(**enc).logits.float().cpu().numpy())
    return np.concatenate(out)[back]


def onnx_logits(path: Path, tokenizer: Any, texts: Sequence[Any], max_length: int,
                batch_size: int = 64, threads: int | None = None, output: str = "logits",
                ) -> np.ndarray:
    """The graph's `output` for every text, computed batch by batch through onnxruntime."""
    session = ort_session(path, threads)
    out = []
    for chunk in batches(texts, batch_size):
        enc = encode(tokenizer, chunk, max_length, "np")
        out.append(session.run([output], ort_feed(session, enc))[0])
    return np.concatenate(out)


# How a bundle is called: one text per call, so no padding. Dynamic int8 quantizes activations
# with one scale per tensor, so a prediction depends on the other texts of its batch and on their
# padding; the headline quality of an ONNX artifact is measured this way, the way an app gets it.
SHIPPING_BATCH = 1
BATCHED = 32  # predict.py's default for many texts: padded to the longest of each batch


def onnx_quality(path: Path, tokenizer: Any, task: TaskData, max_length: int,
                 threads: int | None = None, splits: Sequence[str] = ("validation", "test"),
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each split's metrics one text per call (the shipping way), the same splits' summary
    metrics at BATCHED texts per call under "batched", and the per-call logits by split."""
    logits = {name: onnx_logits(path, tokenizer, task.splits[name].texts, max_length,
                                batch_size=SHIPPING_BATCH, threads=threads) for name in splits}
    batched = {name: headline(task, task_metrics(
        onnx_logits(path, tokenizer, task.splits[name].texts, max_length, batch_size=BATCHED,
                    threads=threads), task.splits[name].labels, task)) for name in splits}
    metrics: dict[str, Any] = {name: task_metrics(out, task.splits[name].labels, task)
                               for name, out in logits.items()}
    metrics["evaluation"] = {"batch_size": SHIPPING_BATCH, "padding": False}
    metrics["batched"] = {"batch_size": BATCHED, "padding": "to the longest text of each batch",
                          **batched}
    return metrics, logits


def shipping_score(path: Path, tokenizer: Any, task: TaskData, split: str, max_length: int,
                   threads: int | None = None) -> float:
    """The worse of a split's primary metric one text per call and at BATCHED per call: a
    quantized model must keep its accuracy however the app calls it (every primary metric is
    higher-is-better)."""
    texts, labels, metric = task.splits[split].texts, task.splits[split].labels, task.primary_metric
    return min(float(task_metrics(onnx_logits(path, tokenizer, texts, max_length, batch_size=size,
                                              threads=threads), labels, task)[metric])
               for size in (SHIPPING_BATCH, BATCHED))


def evaluate_splits(model: Any, tokenizer: Any, task: TaskData, max_length: int,
                    ) -> dict[str, Any]:
    """Validation and test metrics of a PyTorch model (on the main process: the other processes
    of a training stage report nothing)."""
    from kdedge.parallel import world

    if not world().is_main:
        return {}
    return {name: task_metrics(torch_logits(model, tokenizer, task.splits[name].texts, max_length),
                               task.splits[name].labels, task)
            for name in ("validation", "test")}


def validation_score(model: Any, tokenizer: Any, task: TaskData, max_length: int) -> float:
    """The score the training loop keeps the best epoch by: the task's primary metric."""
    split = task.splits["validation"]
    logits = torch_logits(model, tokenizer, split.texts, max_length)
    return float(task_metrics(logits, split.labels, task)[task.primary_metric])


def truncated(tokenizer: Any, texts: list[Any], max_length: int) -> int:
    """How many texts are longer than max_length tokens (and so lose their end)."""
    lengths = encode(tokenizer, texts, max_length=10**6, return_tensors=None, padding=False)
    return sum(len(ids) > max_length for ids in lengths["input_ids"])


STUDENT_MARGIN = 0.01  # a student this far above its teacher on validation (a point) is a warning


def student_beats_teacher(teacher: dict[str, Any], student: dict[str, Any], metric: str,
                          ) -> dict[str, Any] | None:
    """When the student's validation score beats the teacher's by more than STUDENT_MARGIN: the
    margin and a sentence with the fix. Such a teacher had not converged, so every retention
    figure measured against it flatters the student."""
    ours, theirs = (split.get("validation", {}).get(metric) for split in (student, teacher))
    if ours is None or theirs is None or ours - theirs <= STUDENT_MARGIN:
        return None
    margin = round(float(ours - theirs), 6)
    return {"teacher_validation": theirs, "student_validation": ours, "margin": margin,
            "sentence": f"The student beats its teacher on validation {metric} by {100 * margin:.1f} "
                        f"points ({ours:.4f} vs {theirs:.4f}): the teacher is under-trained, so the "
                        "retention figures are measured against a weak reference; fine-tune the "
                        "teacher longer (raise teacher.training.epochs and teacher.training.patience,"
                        " or its learning_rate) and run again."}

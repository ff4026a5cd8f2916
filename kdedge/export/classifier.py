"""Exporting a classifier or regressor: teacher and student to ONNX (optimum's exporter, or
torch.onnx for custom students), checked against PyTorch.

Parity is checked on real validation texts at two shapes (one unpadded text, and a padded
batch), because exporters can silently specialize a dimension to the traced size.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.artifacts import MODEL_DIR, STUDENT_DIR
from kdedge.data.dataset import TaskData
from kdedge.errors import KdedgeError
from kdedge.evaluate import encode, onnx_quality, torch_logits
from kdedge.export.torch_export import export_torch_onnx, needs_torch_export
from kdedge.runtime import ONNX_FILE, ort_feed, ort_session

log = logging.getLogger("kdedge")
DISAGREEMENTS = 8  # test examples where teacher and student disagree, kept for the report
_TEXT_CHARS = 400  # a kept text is cut here: the report shows examples, not documents


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The export stage for a labelled task."""
    cfg, max_length = ctx.cfg.export, ctx.cfg.data.max_length
    models, test_outputs = {}, {}
    for name, source in model_sources(ctx).items():
        out, view = ctx.work / name, task.view(name)  # each model scored on the texts it reads
        exporter = "torch.onnx" if needs_torch_export(source) else "optimum"
        (export_torch_onnx if exporter == "torch.onnx" else export_onnx)(source, out, cfg.opset)
        check = check_parity(source, out, view.splits["validation"].texts[:cfg.parity_samples],
                             max_length, cfg.atol)
        require_parity(name, out, check)
        scores, test_outputs[name] = onnx_scores(out, view, max_length, ctx.cfg.run.threads)
        models[name] = {"path": name, "exporter": exporter, "bytes": (out / ONNX_FILE).stat().st_size,
                        "opset": cfg.opset, "parity": check, **scores}
    return {"models": models, "disagreements": disagreements(
        task, test_outputs["teacher"], test_outputs["student"])}


def model_sources(ctx) -> dict[str, Path]:
    """The PyTorch models the export stage writes as ONNX: the teacher and the student (named
    as the readers of data.dataset, whose view of the texts each is scored on)."""
    return {"teacher": ctx.input("teacher") / MODEL_DIR, "student": ctx.input("distill") / STUDENT_DIR}


def export_onnx(source: Path, out: Path, opset: int) -> None:
    """optimum's exporter into `out`: model.onnx, config.json and the tokenizer files."""
    from optimum.exporters.onnx import main_export

    try:
        with warnings.catch_warnings():  # tracer warnings about constant masks are expected
            warnings.simplefilter("ignore")
            main_export(model_name_or_path=str(source), output=out, task="text-classification",
                        opset=opset, device="cpu", do_validation=False)
    except (ValueError, KeyError) as err:
        raise KdedgeError(f"optimum cannot export {source} to ONNX "
                          f"({str(err).splitlines()[0][:200]}).") from None


def check_parity(source: Path, onnx_dir: Path, texts: list[Any], max_length: int,
                 atol: float) -> dict[str, Any]:
    """Max |logits difference| between PyTorch and onnxruntime at batch 1 and a padded batch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.models import register_auto_classes

    register_auto_classes()  # a BiRNN student loads through the Auto classes

    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    return parity(model, AutoTokenizer.from_pretrained(source), onnx_dir, "logits", texts,
                  max_length, atol)


def parity(model: Any, tokenizer: Any, onnx_dir: Path, output: str, texts: list[Any],
           max_length: int, atol: float) -> dict[str, Any]:
    """Max |difference| between the PyTorch model's output (its `logits`) and the graph's
    `output`, at one unpadded text and at a padded batch: exporters can silently specialize a
    dimension to the traced size."""
    session = ort_session(onnx_dir)
    worst, shapes = 0.0, []
    for chunk in ([texts[0]], texts):
        expected = torch_logits(model, tokenizer, chunk, max_length, batch_size=len(chunk))
        enc = encode(tokenizer, chunk, max_length, "np")
        got = session.run([output], ort_feed(session, enc))[0]
        worst = max(worst, float(abs(expected - got).max()))
        shapes.append(list(enc["input_ids"].shape))
    return {"max_abs_diff": worst, "atol": atol, "passed": worst <= atol, "shapes": shapes}


def require_parity(name: str, out: Path, parity: dict[str, Any]) -> None:
    """Log the export's size and parity; stop with one line when parity fails its atol."""
    atol = parity["atol"]
    log.info("  %s: %.1f MB, max |onnx - pytorch| = %.2e (atol %.0e)", name,
             (out / ONNX_FILE).stat().st_size / 1e6, parity["max_abs_diff"], atol)
    if not parity["passed"]:
        raise KdedgeError(f"The {name} ONNX model differs from PyTorch by "
                          f"{parity['max_abs_diff']:.2e}, above export.atol {atol:.0e}; "
                          "raise export.atol only if that difference is acceptable.")


def onnx_metrics(folder: Path, task: TaskData, max_length: int, threads: int | None,
                 ) -> dict[str, Any]:
    """Validation and test metrics measured through onnxruntime, the runtime that ships."""
    return onnx_scores(folder, task, max_length, threads)[0]


def onnx_scores(folder: Path, task: TaskData, max_length: int, threads: int | None,
                ) -> tuple[dict[str, Any], np.ndarray]:
    """onnx_metrics (one text per call, as a bundle is called, and batched beside it), and the
    test split's outputs for comparing two models example by example."""
    from transformers import AutoTokenizer

    metrics, outputs = onnx_quality(folder, AutoTokenizer.from_pretrained(folder), task,
                                    max_length, threads)
    return metrics, outputs["test"]


def disagreements(task: TaskData, teacher: np.ndarray, student: np.ndarray,
                  keep: int = DISAGREEMENTS) -> dict[str, Any]:
    """Test examples where the student's answer differs from the teacher's, for a reader to see
    what distillation lost: the teacher's most confident disagreements for classification, the
    largest score gaps for regression. `count` (classification) is over the whole test split."""
    split = task.splits["test"]
    if task.is_regression:
        t, s = teacher.reshape(-1), student.reshape(-1)
        gap = np.abs(t - s)
        order = [int(i) for i in np.argsort(-gap, kind="stable")[:keep]]
        count = None  # every score differs a little: the kept ones are the largest gaps
        rows = [{"teacher": float(t[i]), "student": float(s[i]), "gap": float(gap[i])}
                for i in order]
    else:
        t_prob, s_prob = _softmax(teacher), _softmax(student)
        t_pred, s_pred = t_prob.argmax(-1), s_prob.argmax(-1)
        differ = np.flatnonzero(t_pred != s_pred)
        order = [int(i) for i in differ[np.argsort(-t_prob[differ].max(-1), kind="stable")][:keep]]
        count = len(differ)
        rows = [{"teacher": task.labels[t_pred[i]], "teacher_confidence": float(t_prob[i].max()),
                 "student": task.labels[s_pred[i]], "student_confidence": float(s_prob[i].max())}
                for i in order]
    examples = []
    for i, row in zip(order, rows, strict=True):
        text = split.texts[i]
        first, pair = (text[0], text[1]) if isinstance(text, tuple | list) else (text, None)
        gold = split.labels[i]
        examples.append({"index": i, "text": str(first)[:_TEXT_CHARS],
                         "text_pair": None if pair is None else str(pair)[:_TEXT_CHARS],
                         "gold": float(gold) if task.is_regression else task.labels[int(gold)],
                         **row})
    return {"split": "test", "examples_total": len(split.labels), "count": count,
            "examples": examples}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)

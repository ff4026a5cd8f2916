"""Export stage: teacher and student to ONNX through optimum, checked against PyTorch.

Parity is checked on real validation texts at two shapes (one unpadded text, and a padded
batch), because exporters can silently specialize a dimension to the traced size.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from kdedge.data.dataset import TaskData, load_task
from kdedge.distill.stage import STUDENT_DIR
from kdedge.errors import KdedgeError
from kdedge.evaluate import encode, onnx_logits, task_metrics, torch_logits
from kdedge.export.torch_export import export_torch_onnx, needs_torch_export
from kdedge.runtime import ONNX_FILE, ort_feed, ort_session
from kdedge.teacher.stage import MODEL_DIR

log = logging.getLogger("kdedge")


def run(ctx) -> dict[str, Any]:
    cfg, max_length = ctx.cfg.export, ctx.cfg.data.max_length
    task = load_task(ctx.input("data"))
    sources = {"teacher": ctx.input("teacher") / MODEL_DIR,
               "student": ctx.input("distill") / STUDENT_DIR}
    models = {}
    for name, source in sources.items():
        out = ctx.work / name
        exporter = "torch.onnx" if needs_torch_export(source) else "optimum"
        (export_torch_onnx if exporter == "torch.onnx" else export_onnx)(source, out, cfg.opset)
        parity = check_parity(source, out, task.splits["validation"].texts[:cfg.parity_samples],
                              max_length, cfg.atol)
        log.info("  %s: %.1f MB, max |onnx - pytorch| = %.2e (atol %.0e)", name,
                 (out / ONNX_FILE).stat().st_size / 1e6, parity["max_abs_diff"], cfg.atol)
        if not parity["passed"]:
            raise KdedgeError(f"The {name} ONNX model differs from PyTorch by "
                              f"{parity['max_abs_diff']:.2e}, above export.atol {cfg.atol:.0e}; "
                              "raise export.atol only if that difference is acceptable.")
        models[name] = {"path": name, "exporter": exporter, "bytes": (out / ONNX_FILE).stat().st_size,
                        "opset": cfg.opset, "parity": parity,
                        **onnx_metrics(out, task, max_length, ctx.cfg.run.threads)}
    return {"models": models}


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

    import kdedge.distill.bilstm  # noqa: F401  (a BiRNN student loads through the Auto classes)

    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    session = ort_session(onnx_dir)
    worst, shapes = 0.0, []
    for chunk in ([texts[0]], texts):
        expected = torch_logits(model, tokenizer, chunk, max_length, batch_size=len(chunk))
        enc = encode(tokenizer, chunk, max_length, "np")
        got = session.run(["logits"], ort_feed(session, enc))[0]
        worst = max(worst, float(abs(expected - got).max()))
        shapes.append(list(enc["input_ids"].shape))
    return {"max_abs_diff": worst, "atol": atol, "passed": worst <= atol, "shapes": shapes}


def onnx_metrics(folder: Path, task: TaskData, max_length: int, threads: int | None,
                 ) -> dict[str, Any]:
    """Validation and test metrics measured through onnxruntime, the runtime that ships."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return {name: task_metrics(onnx_logits(folder, tokenizer, task.splits[name].texts, max_length,
                                           threads=threads), task.splits[name].labels, task)
            for name in ("validation", "test")}

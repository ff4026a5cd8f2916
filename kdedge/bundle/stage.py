"""Bundle stage: the folder a user ships, made from the artifact the report recommends.

`08_bundle/bundle/` holds the model's ONNX graphs with its tokenizer files, labels.json,
bundle.json (what the model takes and returns, and the sha256 of every file), the task kind's
script (predict.py, or generate.py for a generator; each needs only onnxruntime, numpy and
tokenizers), sample_texts.txt (test texts for `kdedge bench` on a target device), the run's
resolved config, README.md, the model card, and where the kind has them web/ (the
transformers.js layout, web.py) and mobile/ (onnxruntime's ORT format, mobile.py). Every number
in the card is read from the report's data; this stage measures nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdedge import __version__, tasks
from kdedge.artifacts import atomic_write_text, dir_bytes, list_outputs, read_json, write_json
from kdedge.data.dataset import LABELS_FILE
from kdedge.errors import KdedgeError
from kdedge.runtime import ONNX_FILE

if TYPE_CHECKING:
    from kdedge.pipeline import StageContext

log = logging.getLogger("kdedge")

BUNDLE_DIR = "bundle"  # inside the stage directory, beside (not mixed with) its manifest
BUNDLE_FILE = "bundle.json"
CARD_FILE = "README.md"
PREDICT_FILE = "predict.py"
GENERATE_FILE = "generate.py"
SAMPLE_TEXTS_FILE = "sample_texts.txt"
CONFIG_FILE = "config.resolved.yaml"
REPORT_FILE = "report.json"
# what the bundle adds to the artifact's own folder (model.onnx, tokenizer, config.json)
BUNDLE_EXTRAS = (BUNDLE_FILE, LABELS_FILE, PREDICT_FILE, GENERATE_FILE, CARD_FILE,
                 SAMPLE_TEXTS_FILE, CONFIG_FILE)
FORMAT_VERSION = 1
FALLBACK_ARTIFACT = "student-onnx"  # shipped when the report recommends nothing


def run(ctx: StageContext) -> dict[str, Any]:
    """Write the bundle for cfg.bundle.artifact into ctx.work; return what it holds."""
    from kdedge.bench.stage import MODELS
    from kdedge.bundle.card import render_card
    from kdedge.bundle.mobile import write_mobile
    from kdedge.bundle.web import web_sources, write_web
    from kdedge.pipeline import RESOLVED_CONFIG

    cfg = ctx.cfg.bundle
    labels = read_json(ctx.input("data") / LABELS_FILE)
    kind = tasks.get(labels.get("task", "classification"))
    report = report_data(ctx.input("report"), ctx.run_dir)
    name = choose_artifact(cfg.artifact, report)
    row = artifact_row(report, name)
    source = model_folder(ctx, name, kind.generates)
    out = ctx.work / BUNDLE_DIR
    out.mkdir()
    for path in sorted(source.iterdir()):  # the folder exactly as it was benched
        if path.is_file():
            shutil.copyfile(path, out / path.name)
    write_json(out / LABELS_FILE, labels)
    shutil.copyfile(Path(__file__).with_name(kind.bundle_script), out / kind.bundle_script)
    shutil.copyfile(ctx.run_dir / RESOLVED_CONFIG, out / CONFIG_FILE)
    samples = sample_texts(ctx.input("data"), cfg.sample_texts)
    atomic_write_text(out / SAMPLE_TEXTS_FILE, "".join(f"{line}\n" for line in samples))

    meta = {
        "format_version": FORMAT_VERSION,
        "artifact": name,
        "family": row.get("family"),
        "precision": row.get("precision"),
        "task": labels.get("task"),
        "script": kind.bundle_script,
        "model_type": model_type(out),
        "max_length": ctx.cfg.data.max_length,  # the length training and evaluation used
        "tokenizer": tokenizer_spec(out),
        **kind.bundle_fields(out, ctx.cfg),
        "bench": bench_settings(ctx.manifest("bench").metrics),
        "sample_texts": SAMPLE_TEXTS_FILE,
        "config": CONFIG_FILE,
        "run": {"name": ctx.run_dir.name, "seed": ctx.cfg.run.seed,
                "fingerprints": run_fingerprints(report, ctx)},
        "kdedge_version": __version__,
    }
    if cfg.web and "web" in kind.bundle_formats:
        meta["web"] = write_web(out, web_sources(name, report, lambda n: MODELS.get(n).folder(
            ctx.input)), labels, ctx.cfg.data.max_length, kind)
    if cfg.mobile and "mobile" in kind.bundle_formats:
        meta["mobile"] = write_mobile(out)
    atomic_write_text(out / CARD_FILE, render_card(report, meta, labels))
    meta["files"] = list_outputs(out)  # every file but bundle.json itself
    write_json(out / BUNDLE_FILE, meta)
    log.info("  %s bundled in %s/ (%d files, %.1f MB)", name, BUNDLE_DIR, len(meta["files"]) + 1,
             dir_bytes(out) / 1e6)
    return {"artifact": name, "precision": meta["precision"], "path": BUNDLE_DIR,
            "chosen_by": "report" if cfg.artifact == "auto" else "config",
            "recommended": report["recommendation"].get("artifact"),
            "bytes": dir_bytes(out), "files": sorted([*meta["files"], BUNDLE_FILE])}


def report_data(report_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The report stage's report.json; built from the manifests the same way when the run
    was configured without the json format."""
    path = report_dir / REPORT_FILE
    if path.is_file():
        return read_json(path)
    from kdedge.report.compare import build_report_from_run

    return build_report_from_run(run_dir)


def choose_artifact(setting: str, report: dict[str, Any]) -> str:
    """The configured artifact, or (auto) the report's recommendation, else the fp32 student."""
    if setting != "auto":
        row = artifact_row(report, setting)
        gate = row.get("quantization_gate") or {}
        if gate.get("passed") is False:
            raise KdedgeError(f"bundle.artifact {setting} failed the quantization accuracy gate "
                              f"({gate.get('reason')}); bundle student-onnx or auto instead.")
        return setting
    recommended = report.get("recommendation", {}).get("artifact")
    return recommended or FALLBACK_ARTIFACT


def artifact_row(report: dict[str, Any], name: str) -> dict[str, Any]:
    for row in report.get("artifacts", []):
        if row.get("name") == name:
            return row
    raise KdedgeError(f"The report has no artifact {name!r}; re-run `kdedge report RUN_DIR`.")


def model_folder(ctx: StageContext, name: str, generates: bool = False) -> Path:
    """Where the run keeps the artifact: the same table the bench stage reads."""
    from kdedge.bench.runners import missing_files, runtime_for
    from kdedge.bench.stage import MODELS

    folder = MODELS.get(name).folder(ctx.input)
    # every shippable artifact is ONNX
    reason = missing_files(runtime_for("onnxruntime", "cpu", generates) or "onnxruntime", folder)
    if reason is not None:
        raise KdedgeError(f"Cannot bundle {name}: {reason}; run the stage that writes it, or "
                          "choose another bundle.artifact.")
    return folder


def model_type(folder: Path) -> str | None:
    """config.json's model_type: which runtimes besides predict.py can load the bundle."""
    path = folder / "config.json"
    return read_json(path).get("model_type") if path.is_file() else None


def tokenizer_spec(folder: Path) -> dict[str, Any]:
    """How predict.py must tokenize to match the evaluation's transformers tokenizer."""
    from tokenizers import Tokenizer

    from kdedge.bench.measure import pad_token_of
    from kdedge.bench.runners import TOKENIZER_FILE

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    pad_token, pad_id = pad_token_of(folder, tokenizer)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return {"file": TOKENIZER_FILE, "pad_token": pad_token, "pad_id": pad_id,
            "padding_side": config.get("padding_side", "right"),
            "truncation": "longest_first",  # transformers' truncation=True
            "truncation_side": config.get("truncation_side", "right")}


def graph_io(folder: Path, kind: Any, cfg: Any = None) -> dict[str, Any]:
    """The one graph's file, its input names and the output the bundle returns (the task
    kind's), read from the model itself."""
    from kdedge.runtime import ort_session

    model = folder / ONNX_FILE
    session = ort_session(model)
    outputs = [out.name for out in session.get_outputs()]
    if kind.output not in outputs:
        raise KdedgeError(f"{model} has no {kind.output!r} output (it has {outputs}); re-export "
                          "the model.")
    return {"model": ONNX_FILE, "inputs": [inp.name for inp in session.get_inputs()],
            "output": kind.output}


def run_fingerprints(report: dict[str, Any], ctx: StageContext) -> dict[str, str]:
    """Every stage's fingerprint, in stage order: the report's inputs, the report, this stage."""
    stages = (report.get("reproducibility") or {}).get("stages") or {}
    found = {name: entry["fingerprint"] for name, entry in stages.items() if entry}
    return {**found, **ctx.input_fingerprints, "bundle": ctx.fingerprint}


def bench_settings(bench: dict[str, Any]) -> dict[str, Any]:
    """The protocol the report's speed numbers were measured with; `kdedge bench BUNDLE`
    repeats it by default, so a target device's numbers compare with the run's."""
    return {key: bench.get(key) for key in ("threads", "sequence_lengths", "batch_sizes", "protocol")}


def sample_texts(data_dir: Path, count: int) -> list[str]:
    """The first test texts, one per line; a sentence pair as "text<TAB>pair"."""
    from kdedge.data.dataset import load_task

    return text_lines(load_task(data_dir).splits["test"].texts[:count])


def text_lines(texts: Any) -> list[str]:
    """One line per text, as `kdedge bench --texts` reads them; a pair as "text<TAB>pair"."""
    return ["\t".join(map(_one_line, t)) if isinstance(t, tuple | list) else _one_line(t)
            for t in texts]


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())

"""The deployment bundle on a tiny run: its files and hashes, a card that repeats the report's
numbers, predict.py agreeing with the pipeline's ONNX evaluation, and `kdedge bench BUNDLE`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import run_cli
from test_pipeline import copy_run, tiny_config

from kdedge import pipeline, tasks
from kdedge.artifacts import Manifest
from kdedge.bench.stage import MODELS
from kdedge.bundle import stage as bundle_stage
from kdedge.config import KdedgeConfig
from kdedge.errors import KdedgeError
from kdedge.report.formatting import fmt_bytes, fmt_int, fmt_metric, fmt_ms, fmt_pct, fmt_ratio
from kdedge_cli import main as cli_main

SHIPPED = {"README.md", "bundle.json", "labels.json", "predict.py", "sample_texts.txt",
           "config.resolved.yaml", "model.onnx", "tokenizer.json"}
RESULT_KEYS = {"threads", "sequence_lengths", "batch_sizes", "texts", "protocol", "models",
               "skipped", "targets", "target", "environment", "source", "texts_file"}


def sha256(path: Path) -> str:
    """Independent of the code under test: hashlib over the whole file at once."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tiny_csv: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[KdedgeConfig, Path]:
    cfg = tiny_config(tiny_csv, tiny_encoder_dir, tmp_path_factory.mktemp("runs") / "tiny",
                      **{"bundle.sample_texts": 12})
    with pytest.MonkeyPatch.context() as patch:  # its own teacher cache: test_pipeline's first
        patch.setenv("KDEDGE_CACHE", str(tmp_path_factory.mktemp("bundle-cache")))  # run is a miss
        pipeline.prepare_run(cfg, cfg.run.out, resume=False, force=True)
        pipeline.run(cfg, cfg.run.out)
    return cfg, cfg.run.out


@pytest.fixture(scope="module")
def bundle(tiny_run: tuple[KdedgeConfig, Path]) -> Path:
    return tiny_run[1] / pipeline.stage_dirname("bundle") / bundle_stage.BUNDLE_DIR


@pytest.fixture(scope="module")
def meta(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "bundle.json").read_text())


@pytest.fixture(scope="module")
def report(tiny_run: tuple[KdedgeConfig, Path]) -> dict[str, Any]:
    return json.loads((tiny_run[1] / pipeline.stage_dirname("report") / "report.json").read_text())


def load_predict(bundle: Path) -> ModuleType:
    """The bundle's own predict.py, imported from its file as a user would."""
    spec = importlib.util.spec_from_file_location(f"predict_{abs(hash(bundle))}", bundle / "predict.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def artifact_folder(run_dir: Path, name: str) -> Path:
    return MODELS.get(name).folder(lambda stage: run_dir / pipeline.stage_dirname(stage))


# --- the bundle's files -----------------------------------------------------------------------


def test_bundle_ships_the_recommended_artifact_with_hashes(
        tiny_run: tuple[KdedgeConfig, Path], bundle: Path, meta: dict[str, Any],
        report: dict[str, Any]) -> None:
    cfg, run_dir = tiny_run
    recommended = report["recommendation"]["artifact"]
    assert recommended in {"student-onnx", "student-int8", "teacher-onnx"}
    assert meta["artifact"] == recommended
    row = next(r for r in report["artifacts"] if r["name"] == recommended)
    assert meta["precision"] == row["precision"] and meta["family"] == row["family"]
    source = artifact_folder(run_dir, recommended)
    assert sha256(bundle / "model.onnx") == sha256(source / "model.onnx")
    assert sha256(bundle / "tokenizer.json") == sha256(source / "tokenizer.json")

    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert names >= SHIPPED
    assert set(meta["files"]) == names - {"bundle.json"}
    for name, entry in meta["files"].items():
        assert entry["sha256"] == sha256(bundle / name)
        assert entry["bytes"] == (bundle / name).stat().st_size

    data_labels = json.loads((run_dir / pipeline.stage_dirname("data") / "labels.json").read_text())
    assert json.loads((bundle / "labels.json").read_text()) == data_labels
    assert data_labels == {"labels": ["neg", "pos"], "text_columns": ["sentence"],
                           "task": "classification", "primary_metric": "accuracy"}
    template = Path(bundle_stage.__file__).with_name("predict.py")
    assert (bundle / "predict.py").read_bytes() == template.read_bytes()
    assert (bundle / "config.resolved.yaml").read_bytes() == (run_dir / "config.resolved.yaml").read_bytes()

    assert meta["max_length"] == cfg.data.max_length == 32
    assert meta["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta["output"] == "logits" and meta["task"] == "classification"
    assert meta["tokenizer"] | {"pad_token": "[PAD]", "pad_id": 0, "padding_side": "right"} \
        == meta["tokenizer"]
    bench = Manifest.load(run_dir / pipeline.stage_dirname("bench")).metrics
    assert meta["bench"] == {k: bench[k] for k in ("threads", "sequence_lengths", "batch_sizes",
                                                  "protocol")}
    fps = pipeline.fingerprints(cfg)
    assert meta["run"]["fingerprints"] == fps and list(meta["run"]["fingerprints"]) == \
        list(pipeline.STAGE_NAMES)

    test_texts = _test_texts(run_dir)[:12]
    assert (bundle / "sample_texts.txt").read_text().splitlines() == test_texts
    stage = Manifest.load(run_dir / pipeline.stage_dirname("bundle"))
    assert stage.metrics["artifact"] == recommended and stage.metrics["chosen_by"] == "report"
    assert stage.metrics["files"] == sorted(names)


def _test_texts(run_dir: Path) -> list[str]:
    from kdedge.data.dataset import load_task

    return list(load_task(run_dir / pipeline.stage_dirname("data")).splits["test"].texts)


def test_card_repeats_the_report_numbers(bundle: Path, meta: dict[str, Any],
                                         report: dict[str, Any]) -> None:
    card = (bundle / "README.md").read_text()
    lines = set(card.splitlines())
    rows = {r["name"]: r for r in report["artifacts"]}
    row, ref = rows[meta["artifact"]], rows["teacher-onnx"]
    for split in ("test", "validation"):
        assert (f"| {split.capitalize()} accuracy | {fmt_metric(row[split]['accuracy'], 'accuracy')}"
                f" | {fmt_metric(ref[split]['accuracy'], 'accuracy')} |") in lines
        assert (f"| {split.capitalize()} macro-F1 | {fmt_metric(row[split]['macro_f1'], 'macro_f1')}"
                f" | {fmt_metric(ref[split]['macro_f1'], 'macro_f1')} |") in lines
    assert f"| Test examples | {row['test']['examples']} | {ref['test']['examples']} |" in lines
    assert f"It keeps {fmt_pct(row['retained_accuracy'])} of the teacher's test accuracy." in card
    assert len(row["latency"]) == 2
    for batch, stats in row["latency"].items():
        assert (f"| {batch} | {fmt_ms(stats['p50_ms'])} | {fmt_ms(stats['p90_ms'])} | "
                f"{fmt_ms(stats['p99_ms'])} | {stats['throughput_samples_per_s']:.1f} | "
                f"{fmt_ratio(row['vs_reference']['speedup'][batch])} |") in lines
    assert (f"- Size on disk (model and tokenizer): {fmt_bytes(row['size_bytes'])}; the teacher's "
            f"is {fmt_ratio(row['vs_reference']['size_ratio'])} that.") in lines
    assert fmt_bytes(row["memory"]["inference_peak_rss_bytes"]) in card
    assert report["environment"]["cpu"]["model"] in card
    assert f"threads: {report['benchmark']['threads']}, sequence length 16" in card
    assert report["recommendation"]["summary"] in card
    distill = report["training"]["distill"]
    if row["family"] == "student":  # timing noise may make the teacher the fastest on the toy run
        assert (f"| Parameters | {fmt_int(row['parameters'])} "
                f"(the teacher has {fmt_ratio(distill['parameter_ratio'])} as many) |") in lines
        assert "| Architecture | 2 layers, hidden size 32 (student: " in card
    else:
        assert f"| Parameters | {fmt_int(row['parameters'])} |" in lines
        assert "| Model | the teacher itself, " in card
    assert f"{fmt_int(report['training']['teacher']['parameters'])} parameters" in card
    for stage, fp in meta["run"]["fingerprints"].items():
        assert f"| {stage} | `{fp}` |" in lines
    assert "train 320, validation 40, test 40" in card
    assert 'python predict.py "some text"' in card and "at most 32 tokens" in card
    verdicts = report["recommendation"]["per_target"]
    assert [v["target"] for v in verdicts] == ["cpu"]
    for verdict in verdicts:
        assert f"  - {verdict['sentence']}" in lines
    measured = ('These numbers are for one text per call (no padding): what `predict("one text")` '
                "and most apps get.")
    batched = row["batched"]
    if batched["differs"]:
        assert (f"{measured} Called with 32 texts at once, padded to the longest (the default of "
                f"`python predict.py` for many texts), the test accuracy is "
                f"{fmt_metric(batched['test']['accuracy'], 'accuracy')}") in card
    else:
        assert f"{measured} Called with 32 texts at once, padded, it scores the same." in lines


# --- predict.py --------------------------------------------------------------------------------


def test_predict_gives_the_labels_of_the_pipeline_onnx_evaluation(
        tiny_run: tuple[KdedgeConfig, Path], bundle: Path, meta: dict[str, Any],
        report: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    from kdedge.evaluate import onnx_logits

    cfg, run_dir = tiny_run
    source = artifact_folder(run_dir, meta["artifact"])
    texts = _test_texts(run_dir)
    expected = onnx_logits(source, AutoTokenizer.from_pretrained(source), texts,
                           cfg.data.max_length)
    predictor = load_predict(bundle).Predictor(bundle)
    got = predictor.logits(texts, batch_size=64)  # the evaluation's batches: the same padding
    assert got.shape == expected.shape == (40, 2)
    assert float(np.abs(got - expected).max()) <= 1e-6
    results = predictor.predict(texts, batch_size=64)
    assert [r["label"] for r in results] == [["neg", "pos"][i] for i in expected.argmax(-1)]
    if meta["precision"] == "fp32":  # padding is masked: other batches give the same labels
        # (dynamic int8 scales activations per batch, so there only the same batches compare)
        assert [r["label"] for r in predictor.predict(texts, batch_size=7)] == \
            [r["label"] for r in results]
    probs = np.exp(expected) / np.exp(expected).sum(-1, keepdims=True)
    assert np.allclose([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in results],
                       probs, atol=1e-5)
    assert all(r["score"] == max(r["probabilities"].values()) for r in results)
    # one text per call, as an app calls it, the labels score exactly the report's headline
    # test accuracy for this artifact; 32 per call (predict.py's default), its batched figure
    from kdedge.data.dataset import load_task

    gold = load_task(run_dir / pipeline.stage_dirname("data")).splits["test"].labels
    row = next(r for r in report["artifacts"] if r["name"] == meta["artifact"])
    assert row["evaluation"] == {"batch_size": 1, "padding": False}
    assert row["batched"]["batch_size"] == 32
    for size, reported in ((1, row["test"]["accuracy"]), (32, row["batched"]["test"]["accuracy"])):
        labels = [r["label_id"] for r in predictor.predict(texts, batch_size=size)]
        assert round(float(np.mean(labels == gold)), 6) == reported
    assert row["batched"]["differs"] is (row["batched"]["test"]["accuracy"] != row["test"]["accuracy"]
                                         or row["batched"]["test"]["macro_f1"] != row["test"]["macro_f1"])


def test_predict_tokenizes_like_transformers_for_long_texts_and_pairs(
        bundle: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.evaluate import encode

    tokenizer = AutoTokenizer.from_pretrained(bundle)
    long = " ".join(["the movie was very good and the plot"] * 8)  # > 32 tokens: truncated
    singles = [long, "fun", "a dull story"]
    module = load_predict(bundle)
    got = module.Predictor(bundle)._encode(singles)
    want = encode(tokenizer, singles, 32, "np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(got[name], want[name])
    assert got["input_ids"].shape == (3, 32)

    pair_bundle = tmp_path / "pairs"
    shutil.copytree(bundle, pair_bundle)
    labels = json.loads((pair_bundle / "labels.json").read_text())
    labels["text_columns"] = ["first", "second"]
    (pair_bundle / "labels.json").write_text(json.dumps(labels))
    pairs = [(long, "a fun film"), ("dull", long), ("good", "bad")]
    predictor = module.Predictor(pair_bundle)
    got = predictor._encode(["\t".join(p) for p in pairs])
    want = encode(tokenizer, pairs, 32, "np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(got[name], want[name])
    assert got["token_type_ids"][2].max() == 1  # the second sentence is segment 1
    with pytest.raises(ValueError, match="sentence pairs"):
        predictor.predict(["no tab here"])


def test_predict_script_prints_one_json_line_per_text(bundle: Path) -> None:
    texts = ["a lovely warm film", "the plot was awful and boring", "smart"]
    # The same batches as the script: a dynamically quantized model scales activations per batch,
    # so a different split into batches moves the scores in the fourth decimal.
    expected = load_predict(bundle).predict(texts, batch_size=2, folder=bundle)
    script = [sys.executable, str(bundle / "predict.py")]
    out = subprocess.run([*script, *texts, "--batch-size", "2"], capture_output=True, text=True,
                         check=True, cwd=bundle.parent, timeout=120)
    assert [json.loads(line) for line in out.stdout.splitlines()] == expected
    piped = subprocess.run([*script, "-"], input="\n".join(texts) + "\n\n", capture_output=True,
                           text=True, check=True, timeout=120)
    assert [json.loads(line)["label"] for line in piped.stdout.splitlines()] == \
        [r["label"] for r in expected]
    bad = subprocess.run([*script, "x", "--batch-size", "0"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: batch size must be at least 1")


# --- choosing the artifact ------------------------------------------------------------------


def test_a_configured_artifact_is_bundled_instead(tiny_run: tuple[KdedgeConfig, Path],
                                                  tmp_path: Path) -> None:
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    cfg = cfg.model_copy(update={"bundle": cfg.bundle.model_copy(update={"artifact": "teacher-onnx"})})
    pipeline.run(cfg, run_dir, only=("bundle",))
    folder = run_dir / pipeline.stage_dirname("bundle") / bundle_stage.BUNDLE_DIR
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["artifact"] == "teacher-onnx" and meta["family"] == "teacher"
    assert sha256(folder / "model.onnx") == sha256(artifact_folder(run_dir, "teacher-onnx") / "model.onnx")
    assert "| Model | the teacher itself, " in (folder / "README.md").read_text()
    assert Manifest.load(folder.parent).metrics["chosen_by"] == "config"


def test_choose_artifact_follows_the_report_and_refuses_a_failed_gate() -> None:
    rows = [{"name": "student-int8", "quantization_gate": {"passed": False, "reason": "drop 0.05"}},
            {"name": "student-onnx", "quantization_gate": None}]
    report = {"recommendation": {"artifact": None}, "artifacts": rows}
    assert bundle_stage.choose_artifact("auto", report) == "student-onnx"
    report["recommendation"]["artifact"] = "student-int8"
    assert bundle_stage.choose_artifact("auto", report) == "student-int8"
    assert bundle_stage.choose_artifact("student-onnx", report) == "student-onnx"
    with pytest.raises(KdedgeError, match=r"student-int8 failed the quantization accuracy gate "
                                          r"\(drop 0.05\); bundle student-onnx or auto instead"):
        bundle_stage.choose_artifact("student-int8", report)
    with pytest.raises(KdedgeError, match="no artifact 'teacher-onnx'"):
        bundle_stage.choose_artifact("teacher-onnx", report)


# --- kdedge bench on a bundle or a bare model -------------------------------------------------


QUICK = ["--warmup-runs", "0", "--min-runs", "2", "--min-duration", "0", "--threads", "1"]


def test_bench_on_a_bundle_writes_results_like_the_stage(
        bundle: Path, meta: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "edge.json"
    code, out, _ = run_cli(["bench", str(bundle), "--output", str(output), "--target", "edge-1",
                            *QUICK], capsys, monkeypatch)
    assert code == 0 and str(output) in out
    results = json.loads(output.read_text())
    assert set(results) == RESULT_KEYS
    assert results["target"] == "edge-1" and results["threads"] == [1]
    assert results["targets"] == ["cpu"]
    assert results["batch_sizes"] == meta["bench"]["batch_sizes"] == [1, 4]  # the run's, by default
    assert results["sequence_lengths"] == meta["bench"]["sequence_lengths"] == [16]
    assert results["texts"] == 12 and results["skipped"] == {}
    assert results["protocol"] | {"warmup_runs": 0, "min_runs": 2, "min_duration_s": 0.0} \
        == results["protocol"]
    assert results["source"]["artifact"] == meta["artifact"]
    assert results["source"]["run"]["fingerprints"] == meta["run"]["fingerprints"]
    assert results["environment"]["cpu"]["logical_cores"] >= 1
    row = results["models"][meta["artifact"]]
    assert row["runtime"] == "onnxruntime" and row["model_sha256"] == sha256(bundle / "model.onnx")
    assert row["runtime_info"]["intra_op_threads"] == 1
    assert row["target"] == "cpu"
    points = row["latency"]
    assert sorted((p["threads"], p["sequence_length"], p["batch_size"]) for p in points) == \
        [(1, 16, 1), (1, 16, 4)]
    for stats in points:
        assert stats["runs"] == len(stats["timings_ms"]) >= 2
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["max_ms"]
        assert (f"threads 1, length 16, batch {stats['batch_size']}: p50 "
                f"{stats['p50_ms']:.2f} ms") in out
    assert row["memory"]["inference_peak_rss_bytes"] > 0
    # the artifact's own files are measured, not the card or predict.py: the run's size exactly
    run_bench = Manifest.load(bundle.parent.parent / pipeline.stage_dirname("bench")).metrics
    assert row["size_bytes"] == run_bench["models"][meta["artifact"]]["size_bytes"]


def test_bench_on_a_renamed_onnx_file_needs_a_length_and_texts(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(bundle / "model.onnx", bare / "tiny.onnx")
    shutil.copyfile(bundle / "tokenizer.json", bare / "tokenizer.json")
    texts = tmp_path / "texts.txt"
    texts.write_text("a good film\n\nboring plot\n")
    code, _, err = run_cli(["bench", str(bare / "tiny.onnx"), *QUICK], capsys, monkeypatch)
    assert code == 2 and "pass --sequence-length" in err
    code, _, err = run_cli(["bench", str(bare / "tiny.onnx"), "--sequence-length", "16", *QUICK],
                           capsys, monkeypatch)
    assert code == 2 and "pass real texts with --texts FILE" in err
    output = tmp_path / "bare.json"
    code, _, _ = run_cli(["bench", str(bare / "tiny.onnx"), "--sequence-lengths", "16,8",
                          "--texts", str(texts), "--batch-sizes", "2", "-o", str(output), *QUICK],
                         capsys, monkeypatch)
    assert code == 0
    results = json.loads(output.read_text())
    assert list(results["models"]) == ["tiny"] and results["texts"] == 2
    assert results["sequence_lengths"] == [16, 8] and results["batch_sizes"] == [2]
    points = results["models"]["tiny"]["latency"]
    assert [(p["sequence_length"], p["batch_size"]) for p in points] == [(16, 2), (8, 2)]
    assert results["target"].startswith("cpu-") and results["source"] == {}
    assert results["models"]["tiny"]["model_sha256"] == sha256(bare / "tiny.onnx")
    code, _, err = run_cli(["bench", str(bare / "tiny.onnx"), "--sequence-length", "16",
                            "--texts", str(texts), "--batch-sizes", "0", *QUICK], capsys, monkeypatch)
    assert code == 2 and "--batch-sizes [0] is invalid" in err
    (bare / "tokenizer.json").unlink()
    code, _, err = run_cli(["bench", str(bare)], capsys, monkeypatch)
    assert code == 2 and "holds no model.onnx" in err
    code, _, err = run_cli(["bench", str(bare / "tiny.onnx")], capsys, monkeypatch)
    assert code == 2 and "lacks tokenizer.json" in err


def test_bench_on_a_run_directory_refuses_standalone_options(
        tiny_run: tuple[KdedgeConfig, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(["bench", str(tiny_run[1]), "--threads", "2"], capsys, monkeypatch)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: --threads applies to a bundle or ONNX "
                                                   "model")


# --- the install extras -----------------------------------------------------------------------


def test_compress_commands_name_the_compress_extra_when_torch_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    code, _, err = run_cli(["compress", "--out", str(tmp_path / "run")], capsys, monkeypatch)
    assert code == 2
    assert err.strip() == ('error: `kdedge compress` needs the compression dependencies (torch not '
                           'installed); install them with pip install "kdedge[compress]".')
    assert not (tmp_path / "run").exists()  # refused before any work
    code, _, err = run_cli(["export", str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and '`kdedge export` needs' in err and 'pip install "kdedge[compress]"' in err


def test_a_missing_torch_import_anywhere_becomes_the_same_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(cli_main, "app", fail)
    code, _, err = run_cli(["report", "somewhere"], capsys, monkeypatch)
    assert code == 2 and err.strip() == (
        'error: `kdedge report` needs the compression dependencies (transformers not installed); '
        'install them with pip install "kdedge[compress]".')


# --- web/, mobile/ and the runtimes that load a bundle -----------------------------------------

JS_CLASSIFY = """
import { readFileSync } from "node:fs";
import { env, pipeline } from "@huggingface/transformers";

const [bundle, textsFile, dtype] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = bundle;
const classify = await pipeline("text-classification", "web", dtype ? { dtype } : {});
const labels = [];
for (const text of JSON.parse(readFileSync(textsFile, "utf8"))) {
  labels.push((await classify(text))[0].label);
}
console.log(JSON.stringify(labels));
"""


def test_web_folder_holds_the_transformers_js_layout(
        tiny_run: tuple[KdedgeConfig, Path], bundle: Path, meta: dict[str, Any],
        report: dict[str, Any]) -> None:
    _, run_dir = tiny_run
    rows = {r["name"]: r for r in report["artifacts"]}
    int8_shipped = rows["student-int8"]["quantization_gate"]["passed"] is not False
    assert meta["model_type"] == "bert"
    default = "q8" if meta["precision"] == "int8" else "fp32"
    dtypes = ["fp32", "q8"] if int8_shipped else ["fp32"]
    if meta["family"] == "teacher":
        dtypes = ["fp32"]
    dtypes.sort(key=lambda d: d != default)
    assert meta["web"] == {"path": "web", "dtypes": dtypes, "default_dtype": default,
                           "model_type": "bert", "pipeline": "text-classification"}
    web = bundle / "web"
    config = json.loads((web / "config.json").read_text())
    assert config["transformers.js_config"] == {"dtype": default}
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    family = meta["family"]
    assert sha256(web / "onnx" / "model.onnx") == sha256(
        artifact_folder(run_dir, f"{family}-onnx") / "model.onnx")
    if "q8" in dtypes:
        assert sha256(web / "onnx" / "model_quantized.onnx") == sha256(
            artifact_folder(run_dir, "student-int8") / "model.onnx")
    assert sha256(web / "tokenizer.json") == sha256(bundle / "tokenizer.json")
    assert json.loads((web / "tokenizer_config.json").read_text())["model_max_length"] == 32
    card = (bundle / "README.md").read_text()
    assert (f"`pipeline(\"text-classification\", \"web\")` with `env.localModelPath` set to this "
            f"folder; dtypes {', '.join(dtypes)} (default {default}) |") in card


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                    reason="transformers.js needs node and npm, which this machine lacks")
def test_transformers_js_gives_the_labels_of_predict(
        tiny_run: tuple[KdedgeConfig, Path], bundle: Path, meta: dict[str, Any],
        tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.evaluate import onnx_logits

    # onnxruntime-node's install script fetches CUDA binaries unless told not to (its README)
    install = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
               "@huggingface/transformers@4", "--onnxruntime-node-install-cuda=skip",
               "--onnxruntime-node-install=skip"]
    done = subprocess.run(install, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    texts = _test_texts(tiny_run[1])
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "classify.mjs").write_text(JS_CLASSIFY)

    def js_labels(*dtype: str) -> list[str]:
        out = subprocess.run(["node", "classify.mjs", str(bundle), "texts.json", *dtype],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    # the default dtype is the bundled model: the labels predict.py gives one text at a time
    expected = [r["label"] for r in load_predict(bundle).predict(texts, batch_size=1, folder=bundle)]
    assert len(expected) == 40 and js_labels() == expected
    for dtype, name in (("fp32", f"{meta['family']}-onnx"), ("q8", "student-int8")):
        if dtype in meta["web"]["dtypes"]:
            source = artifact_folder(tiny_run[1], name)
            logits = onnx_logits(source, AutoTokenizer.from_pretrained(source), texts, 32,
                                 batch_size=1)
            assert js_labels(dtype) == [["neg", "pos"][i] for i in logits.argmax(-1)]


def test_mobile_model_ort_predicts_the_labels_of_predict(bundle: Path, meta: dict[str, Any],
                                                         tiny_run: tuple[KdedgeConfig, Path]) -> None:
    import onnxruntime as ort

    assert meta["mobile"] | {"path": "mobile", "model": "mobile/model.ort",
                             "operators": "mobile/required_operators.config"} == meta["mobile"]
    operators = (bundle / "mobile" / "required_operators.config").read_text()
    lines = [line for line in operators.splitlines() if not line.startswith("#")]
    domains = {line.split(";")[0] for line in lines}
    ops = {op for line in lines for op in line.split(";")[2].split(",")}
    assert "ai.onnx" in domains and {"Gather", "Softmax"} <= ops  # embeddings, attention
    assert "# - mobile/model.ort" in operators  # no temporary path in a shipped file
    texts = _test_texts(tiny_run[1])
    predictor = load_predict(bundle).Predictor(bundle)
    session = ort.InferenceSession(str(bundle / "mobile" / "model.ort"),
                                   providers=["CPUExecutionProvider"])
    got = [int(session.run(["logits"], predictor._encode([text]))[0].argmax()) for text in texts]
    assert got == [r["label_id"] for r in predictor.predict(texts, batch_size=1)]


def test_optimum_loads_the_bundle_and_agrees_with_predict(bundle: Path,
                                                          tiny_run: tuple[KdedgeConfig, Path]) -> None:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer
    from transformers import pipeline as hf_pipeline

    model = ORTModelForSequenceClassification.from_pretrained(bundle)
    classify = hf_pipeline("text-classification", model=model,
                           tokenizer=AutoTokenizer.from_pretrained(bundle))
    texts = _test_texts(tiny_run[1])
    got = [classify(text, truncation=True, max_length=32)[0]["label"] for text in texts]
    assert got == [r["label"] for r in load_predict(bundle).predict(texts, batch_size=1)]


def test_a_kdedge_architecture_gets_no_web_folder_and_a_card_that_says_so(tmp_path: Path) -> None:
    from kdedge.bundle.card import render_card
    from kdedge.bundle.web import write_web

    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "kdedge-birnn"}))
    labels = {"labels": ["neg", "pos"], "text_columns": ["text"], "task": "classification"}
    web = write_web(tmp_path, {"fp32": folder}, labels, 32, tasks.get("classification"))
    assert web["skipped"].startswith("transformers.js has no 'kdedge-birnn' architecture")
    assert not (tmp_path / "web").exists()
    meta = {"artifact": "student-int8", "model_type": "kdedge-birnn", "web": web,
            "inputs": ["input_ids", "attention_mask"], "max_length": 32,
            "mobile": {"path": "mobile", "model": "mobile/model.ort", "onnxruntime": "1.31.1",
                       "operators": "mobile/required_operators.config"}}
    lines = render_card({}, meta, labels).splitlines()
    assert ("| Python, optimum / transformers | no | config.json says `model_type: kdedge-birnn`, "
            "kdedge's own architecture, which transformers knows only inside a process that "
            "imported kdedge; use predict.py |") in lines
    assert f"| JavaScript, transformers.js | no | {web['skipped']} |" in lines
    assert ("| Python, onnxruntime | yes | `predict.py` (above), or any onnxruntime client that "
            "feeds input_ids, attention_mask from tokenizer.json |") in lines

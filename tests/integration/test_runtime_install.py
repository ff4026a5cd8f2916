"""A target device: a fresh virtual environment with only `kdedge[runtime]` (no torch, no
transformers) benchmarks a bundle with `kdedge bench` and predicts with its predict.py, and
times a student search's probe bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdedge.pipeline import stage_dirname
from kdedge_cli import main as cli_main

pytestmark = pytest.mark.integration

# the tiny random teacher and toy data: a real ONNX model with a tokenizer.json in about 40 s
TINY = ["--text-column", "sentence", "--label-column", "sentiment", "--student", "2",
        "--set", "data.max_length=32", "--set", "teacher.training.epochs=6",
        "--set", "teacher.training.learning_rate=3e-3",
        "--set", "teacher.training.patience=null", "--epochs", "3",
        "--set", "distill.training.learning_rate=3e-3", "--set", "teacher.training.batch_size=16",
        "--set", "distill.training.batch_size=16", "--set", "bench.batch_sizes=[1, 4]",
        "--set", "bench.warmup_runs=1", "--set", "bench.min_runs=3",
        "--set", "bench.min_duration_s=0", "--set", "bench.threads=1",
        "--set", "bench.models=[teacher-onnx, student-onnx, student-int8]"]  # no torch child
SENTENCES = ["the movie was lovely", "the plot is very awful", "it was a fun film"]  # as the toy rows


def make_bundle(csv: Path, teacher: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.setattr(sys, "argv", ["kdedge", "compress", "--data", str(csv), "--teacher",
                                      str(teacher), "--out", str(run_dir), *TINY])
    monkeypatch.setitem(cli_main._state, "debug", True)  # a failure here should show its traceback
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)
    bundle = run_dir / stage_dirname("bundle") / "bundle"
    assert str(bundle) in capsys.readouterr().out
    return bundle


def test_runtime_install_benches_and_predicts_without_torch(
        tiny_csv: Path, tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], runtime_bin: Path) -> None:
    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path / "cache"))  # the unit tests' cache stays cold
    bundle = make_bundle(tiny_csv, tiny_encoder_dir, tmp_path / "run", monkeypatch, capsys)
    meta = json.loads((bundle / "bundle.json").read_text())
    bin_dir = runtime_bin
    python, kdedge = str(bin_dir / "python"), str(bin_dir / "kdedge")

    for module in ("torch", "transformers", "optimum", "pandas"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
        assert probe.returncode == 1 and f"No module named '{module}'" in probe.stderr

    output = tmp_path / "edge.json"
    bench = subprocess.run([kdedge, "bench", str(bundle), "--output", str(output), "--target",
                            "edge", "--threads", "1", "--min-duration", "0"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    results = json.loads(output.read_text())
    assert results["target"] == "edge" and results["threads"] == [1]
    assert results["batch_sizes"] == [1, 4] and results["sequence_lengths"] == [16]
    assert results["protocol"]["min_runs"] == 3  # the run's protocol, read from bundle.json
    row = results["models"][meta["artifact"]]
    assert sorted(point["batch_size"] for point in row["latency"]) == [1, 4]
    assert all(point["runs"] >= 3 and point["p50_ms"] > 0 for point in row["latency"])
    assert row["model_sha256"] == meta["files"]["model.onnx"]["sha256"]
    assert row["parameters"] is None  # counting initializers needs the onnx package: not here
    assert results["environment"]["packages"]["torch"] is None
    assert results["environment"]["packages"]["onnxruntime"] is not None

    predicted = subprocess.run([python, "predict.py", *SENTENCES], capture_output=True, text=True,
                               timeout=120, cwd=bundle)
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    sys.path.insert(0, str(bundle))
    try:
        from predict import predict  # the same file in this (compress) environment
    finally:
        sys.path.remove(str(bundle))
    assert lines == predict(SENTENCES)
    assert [line["label"] for line in lines] == ["pos", "neg", "pos"]  # the toy task is learnt
    assert all(abs(sum(line["probabilities"].values()) - 1) < 1e-6 for line in lines)

    # every sample text gets the label of the pipeline's onnxruntime evaluation
    from transformers import AutoTokenizer

    from kdedge.evaluate import onnx_logits

    texts = (bundle / "sample_texts.txt").read_text().splitlines()
    piped = subprocess.run([python, str(bundle / "predict.py"), "-", "--batch-size", "64"],
                           input="\n".join(texts), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    expected = onnx_logits(bundle, AutoTokenizer.from_pretrained(bundle), texts, 32).argmax(-1)
    assert [json.loads(line)["label_id"] for line in piped.stdout.splitlines()] == expected.tolist()
    assert len(texts) == 32

    # the student search's probe bundle, written from the same run, is timed here too
    probe = tmp_path / "probe"
    monkeypatch.setattr(sys, "argv", ["kdedge", "compress", "--data", str(tiny_csv), "--teacher",
                                      str(tiny_encoder_dir), "--out", str(tmp_path / "run"), *TINY,
                                      "--student", "auto", "--set", "distill.search.candidates=['1']",
                                      "--probe-bundle", str(probe), "--resume"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)
    probed = subprocess.run([kdedge, "bench", str(probe), "--output", str(tmp_path / "probe.json"),
                             "--target", "edge", "--threads", "1", "--min-duration", "0"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert probed.returncode == 0, probed.stderr
    timed = json.loads((tmp_path / "probe.json").read_text())
    assert list(timed["models"]) == ["teacher-fp32", "cut-1-fp32", "cut-1-int8"]
    assert timed["probe"]["candidates"]["cut-1"]["student"] == "1"
    assert all(row["latency"][0]["p50_ms"] > 0 for row in timed["models"].values())

    refused = subprocess.run([kdedge, "compress", "--out", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith('install them with pip install "kdedge[compress]".')
    assert not (tmp_path / "nope").exists()

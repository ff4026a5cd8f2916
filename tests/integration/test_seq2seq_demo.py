"""`kdedge compress --task seq2seq` on a slice of the real demo: bert2bert from the demo MiniLM,
BBC article -> headline. Too little training to say anything sensible; it proves every stage
works on the real models: export parity, int8 per component, the generation bench, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from kdedge.artifacts import Manifest
from kdedge.pipeline import STAGE_NAMES, stage_dirname
from kdedge_cli import main as cli_main

pytestmark = pytest.mark.integration

SLICE = ["--task", "seq2seq", "--max-train-samples", "48", "--set", "data.max_eval_samples=20",
         "--set", "teacher.training.epochs=1", "--epochs", "1",
         "--set", "bench.batch_sizes=[1]", "--set", "bench.min_runs=2",
         "--set", "bench.warmup_runs=1", "--set", "bench.min_duration_s=0.1"]


def test_compress_a_seq2seq_slice_of_the_demo(demo_cache: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              runtime_bin: Path) -> None:
    run_dir = tmp_path / "demo-seq2seq"
    monkeypatch.setattr(sys, "argv", ["kdedge", "compress", "--out", str(run_dir), *SLICE])
    monkeypatch.setitem(cli_main._state, "debug", True)  # a failure here should show its traceback
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)

    metrics = {name: Manifest.load(run_dir / stage_dirname(name)).metrics for name in STAGE_NAMES}
    data = metrics["data"]
    assert (data["task"], data["primary_metric"]) == ("seq2seq", "rougeL")
    assert data["splits"] == {"train": 48, "validation": 20, "test": 20}
    test_rows = pd.read_parquet(run_dir / stage_dirname("data") / "test.parquet")
    assert test_rows["label"].str.len().max() < 120  # headlines, not articles
    teacher = metrics["teacher"]
    assert teacher["architecture"] == "bert2bert" and teacher["fine_tuned"]
    assert teacher["num_layers"] == {"encoder": 6, "decoder": 6}
    assert 48_000_000 < teacher["parameters"] < 50_000_000
    distill = metrics["distill"]
    assert distill["recipe"] == "imitkd" and distill["student"]["layers"] == {"encoder": 2,
                                                                             "decoder": 2}
    assert 0 < distill["history"][0]["rollout_share"] <= 1
    for name in ("teacher", "student"):
        model = metrics["export"]["models"][name]
        assert model["parity"]["passed"] and model["parity"]["rows"] == 20  # min(32, validation rows)
        assert model["files"] == ["decoder_model.onnx", "encoder_model.onnx"]
        assert set(model["test"]) == {"bleu", "rouge1", "rouge2", "rougeL", "examples"}
    int8 = metrics["quantize"]["models"]["student-int8"]
    assert int8["bytes"] * 3 < int8["fp32_bytes"]
    assert all(c["matmul_int8"] > 0 for c in int8["components"].values())
    bench = metrics["bench"]["models"]
    assert set(bench) == {"teacher-pytorch", "teacher-onnx", "student-onnx", "student-int8"}
    for row in bench.values():
        point = row["latency"][0]
        assert point["new_tokens"] == 32 and point["tokens_per_s"] > 0
        assert 0 < point["time_to_first_token"]["p50_ms"] < point["p50_ms"]
    shipped = _check_bundle(run_dir, tmp_path, runtime_bin)
    assert metrics["bundle"]["artifact"] == shipped

    report_dir = run_dir / stage_dirname("report")
    report = json.loads((report_dir / "report.json").read_text())
    schema = Path(__file__).resolve().parents[2] / "kdedge" / "report" / "schema.json"
    jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(report)
    assert report["primary_metric"] == "rougeL"
    assert len(report["generations"]["examples"]) == 8
    markdown = (report_dir / "report.md").read_text()
    assert "## Generation speed" in markdown and "## Example generations (test)" in markdown
    assert "tokens/s @1" in markdown
    html = (report_dir / "report.html").read_text()
    assert 'id="generation"' in html and 'id="generations"' in html


def _check_bundle(run_dir: Path, tmp_path: Path, runtime_bin: Path) -> str:
    """The generator bundle's generate.py, in a fresh environment with only kdedge[runtime]:
    the same tokens as the pipeline's onnxruntime evaluation of the shipped artifact on the 20
    test articles (batched as the run batched them), the report's test ROUGE-L from its texts,
    no torch, and `kdedge bench BUNDLE` timing it."""
    import subprocess

    from transformers import AutoConfig, AutoTokenizer

    from kdedge.evaluate import generation_metrics
    from kdedge.export.generation import load_onnx_generator
    from kdedge.models.layouts import layout_for

    bundle = run_dir / stage_dirname("bundle") / "bundle"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["script"] == "generate.py" and meta["generation"]["layout"] == "seq2seq"
    assert meta["graphs"] == ["decoder_model.onnx", "encoder_model.onnx"]
    assert "## How to run" in (bundle / "README.md").read_text()
    test = pd.read_parquet(run_dir / stage_dirname("data") / "test.parquet")
    articles = [" ".join(str(t).split()) for t in test["text"]]  # one line each, same tokens
    assert len(articles) == 20
    python = str(runtime_bin / "python")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr
    out = subprocess.run([python, "generate.py", "-", "--batch-size", "32"], cwd=bundle,
                         input="\n".join(articles) + "\n", capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]

    layout = layout_for(AutoConfig.from_pretrained(bundle), AutoTokenizer.from_pretrained(bundle),
                        meta["generation"]["max_length"])
    expected = layout.continuations(load_onnx_generator(bundle, "seq2seq"), articles,
                                    meta["generation"]["max_new_tokens"])
    assert [line["tokens"] for line in lines] == expected
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    row = next(r for r in report["artifacts"] if r["name"] == meta["artifact"])
    scored = generation_metrics([line["text"] for line in lines], [str(t) for t in test["label"]])
    assert scored["rougeL"] == row["test"]["rougeL"]

    results = tmp_path / "edge.json"
    bench = subprocess.run([str(runtime_bin / "kdedge"), "bench", str(bundle), "--output",
                            str(results), "--threads", "1", "--min-duration", "0",
                            "--batch-sizes", "1"], capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr
    timed = json.loads(results.read_text())["models"][meta["artifact"]]
    point = timed["latency"][0]
    assert point["new_tokens"] == 32 and point["tokens_per_s"] > 0
    assert 0 < point["time_to_first_token"]["p50_ms"] < point["p50_ms"]
    assert sorted(timed["graphs_sha256"]) == meta["graphs"]
    return str(meta["artifact"])

"""Quantization modes, graph facts, the accuracy gate and bounded calibration on a tiny BERT."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, toy_rows

from kdedge.config import build_config
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.errors import KdedgeError
from kdedge.evaluate import onnx_logits
from kdedge.quantize import gate, graph
from kdedge.quantize.classifier import quantize_student
from kdedge.quantize.gate import enforce as enforce_gate
from kdedge.quantize.modes import STATIC_OPS, QuantSpec, TextCalibrationReader, calibrate, quantize_model
from kdedge.runtime import ONNX_FILE, ort_session

MAX_LENGTH = 32
TEXTS = [row["sentence"] for row in toy_rows(400, seed=3)]


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdedge.export.classifier import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "student"
    export_onnx(tiny_model_dir, out, 18)
    return out


@pytest.fixture(scope="module")
def tokenizer(onnx_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(onnx_dir)


def reader(tokenizer, texts, batch_size=8) -> TextCalibrationReader:
    return TextCalibrationReader(texts, tokenizer, MAX_LENGTH, batch_size,
                                 ["input_ids", "attention_mask", "token_type_ids"])


def self_labelled_task(onnx_dir: Path, tokenizer) -> TaskData:
    """Labels are the fp32 model's own predictions on its least certain texts: fp32 scores
    1.0 on validation, and any int8 rounding that flips one of them costs accuracy."""
    logits = onnx_logits(onnx_dir, tokenizer, TEXTS, MAX_LENGTH)
    margin = np.abs(logits[:, 0] - logits[:, 1])
    pick = np.argsort(margin)[:60]
    texts, labels = [TEXTS[i] for i in pick], logits[pick].argmax(-1).astype(np.int64)
    split = TaskSplit(texts, labels)
    return TaskData(["neg", "pos"], {"train": TaskSplit(TEXTS, np.zeros(len(TEXTS), np.int64)),
                                     "validation": split, "test": split})


def test_dynamic_int8_quantizes_every_matmul_and_the_embeddings(
        onnx_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "int8.onnx"
    with caplog.at_level(logging.WARNING):
        quantize_model(onnx_dir / ONNX_FILE, out, QuantSpec(mode="dynamic"))
    # onnxruntime's root-logger hint about pre-processing is dropped (the manifest says it)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    facts = graph.graph_facts(onnx_dir / ONNX_FILE, out)
    # 2 layers x (Q, K, V, out, QK^T, attn.V, 2 FFN) + pooler + classifier = 18 MatMuls
    assert facts["matmul_total"] == 18
    assert facts["matmul_int8"] == 18 and facts["matmul_fp32_left"] == 0
    assert facts["quantized"]["gather"] >= 1  # the word-embedding table is int8
    assert facts["bytes_after"] < facts["bytes_before"] and facts["opset"] == 18


def test_an_optimized_graph_is_fused_and_counted_as_quantized(onnx_dir: Path, tmp_path: Path,
                                                             ) -> None:
    from kdedge.quantize.classifier import prepare_graph

    prepared = prepare_graph(onnx_dir, tmp_path / "scratch", "O2", preprocess=False)
    fused = graph.op_counts(graph._load(prepared))
    assert fused.get("SkipLayerNormalization", 0) > 0  # O2's transformer fusions happened
    out = tmp_path / "int8.onnx"
    quantize_model(prepared, out, QuantSpec(mode="dynamic"))
    facts = graph.graph_facts(onnx_dir / ONNX_FILE, out, optimization="O2", prepared=prepared)
    # totals are counted on the fused graph that was quantized, not the 18 MatMuls before fusion
    assert facts["matmul_total"] == (fused.get("MatMul", 0) + fused.get("Gemm", 0)
                                     + fused.get("Attention", 0)) < 18
    assert facts["matmul_int8"] == facts["matmul_total"] and facts["optimization"] == "O2"
    assert facts["bytes_before"] == (onnx_dir / ONNX_FILE).stat().st_size


def test_shape_inference_leaves_nothing_in_the_working_directory(
        onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.quantize.classifier import prepare_graph
    from kdedge.quantize.modes import typed_graph

    cwd = tmp_path / "where-the-user-ran-kdedge"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    prepared = prepare_graph(onnx_dir, tmp_path / "scratch", "O2", preprocess=True)
    typed = typed_graph(prepared, tmp_path / "scratch" / "typed.onnx")
    assert typed.is_file() and prepared.is_file()
    assert list(cwd.iterdir()) == [] and Path.cwd() == cwd


def test_static_qdq_quantizes_the_weight_matmuls(onnx_dir: Path, tokenizer, tmp_path: Path,
                                                 ) -> None:
    out = tmp_path / "qdq.onnx"
    spec = QuantSpec(mode="static", activation_type="uint8", weight_type="int8")
    quantize_model(onnx_dir / ONNX_FILE, out, spec, lambda: reader(tokenizer, TEXTS[:64]))
    facts = graph.graph_facts(onnx_dir / ONNX_FILE, out)
    assert facts["op_counts"].get("DequantizeLinear", 0) > 0
    assert facts["matmul_int8"] >= 14  # the weight MatMuls; with the Gemms of pooler/classifier
    logits = onnx_logits(out, tokenizer, TEXTS[:16], MAX_LENGTH)
    assert np.isfinite(logits).all()


def test_excluded_nodes_stay_float(onnx_dir: Path, tmp_path: Path) -> None:
    sensitive = graph.sensitive_nodes(onnx_dir / ONNX_FILE)
    assert any("classifier" in n for n in sensitive) and any("embed" in n.lower() for n in sensitive)
    out = tmp_path / "int8.onnx"
    quantize_model(onnx_dir / ONNX_FILE, out, QuantSpec(mode="dynamic", exclude=tuple(sensitive)))
    facts = graph.graph_facts(onnx_dir / ONNX_FILE, out)
    assert facts["matmul_fp32_left"] >= 1 and facts["quantized"]["gather"] == 0


def test_max_drop_parses_absolute_and_relative() -> None:
    assert gate.parse_max_drop(0.01) == ("absolute", 0.01)
    assert gate.parse_max_drop("1%") == ("relative", 0.01)
    assert gate.allowed_drop("2%", 0.5) == pytest.approx(0.01)
    with pytest.raises(KdedgeError, match="max_drop"):
        gate.parse_max_drop("a lot")
    with pytest.raises(KdedgeError, match=r"Invalid value 'a lot' for quantize\.max_drop"):
        build_config(overrides={"quantize.max_drop": "a lot"})


def test_fallbacks_come_in_order_without_repeats() -> None:
    spec = QuantSpec(mode="static")
    steps = [step for step, _ in gate.fallback_specs(spec, ["classifier"])]
    assert steps == ["asked", "per-channel", "exclude sensitive nodes", "reduce-range", "dynamic"]
    steps = [step for step, _ in gate.fallback_specs(QuantSpec(mode="dynamic", per_channel=True), [])]
    assert steps == ["asked", "reduce-range", "dynamic"]


def quantize_config(**extra):
    return build_config(overrides={"data.source": "x.csv", **{f"quantize.{k}": v
                                                               for k, v in extra.items()}}).quantize


@pytest.fixture(scope="module")
def regression_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-output (regression) BERT in ONNX."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from kdedge.export.classifier import export_onnx

    folder = tmp_path_factory.mktemp("tiny-regression")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=1, problem_type="regression")
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    out = folder / "onnx"
    export_onnx(folder, out, 18)
    return out


def test_the_gate_trips_falls_back_and_records_every_attempt(regression_onnx: Path,
                                                             tmp_path: Path) -> None:
    """Scores are the fp32 model's own outputs, so fp32 has Pearson 1 and every int8 model,
    whose outputs differ a little, has less: a zero bound fails every attempt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(regression_onnx)
    texts = TEXTS[:48]
    scores = onnx_logits(regression_onnx, tokenizer, texts, MAX_LENGTH).reshape(-1)
    split = TaskSplit(texts, scores.astype(np.float32))
    task = TaskData(["score"], {"train": split, "validation": split, "test": split}, "regression")
    cfg = quantize_config(mode="static", max_drop=0.0, calibration={"samples": 16})
    entry = quantize_student(regression_onnx, tmp_path / "out", tmp_path / "scratch", cfg, task,
                             MAX_LENGTH, 1)
    check = entry["gate"]
    assert check["metric"] == "pearson" and check["fp32_validation_pearson"] == pytest.approx(1.0)
    assert check["passed"] is False and check["allowed_drop"] == 0.0
    steps = [a["step"] for a in check["attempts"]]
    assert steps == ["asked", "per-channel", "exclude sensitive nodes", "reduce-range", "dynamic"]
    for attempt in check["attempts"]:
        assert attempt["bytes"] > 0 and attempt["batch1_p50_ms"] > 0
        assert attempt["passed"] is False and attempt["drop"] > 0
    assert "max_drop=0.0" in check["reason"]
    assert entry["spec"]["label"] in check["reason"]  # the best attempt became the artifact
    assert (tmp_path / "out" / ONNX_FILE).is_file() and (tmp_path / "out" / "vocab.txt").is_file()
    with pytest.raises(KdedgeError, match="accuracy gate failed: no quantized model kept"):
        enforce_gate(check, strict=True)
    enforce_gate(check, strict=False)  # without --strict the run goes on and ships fp32


def test_a_loose_gate_passes_at_once(onnx_dir: Path, tokenizer,
                                                                   tmp_path: Path) -> None:
    task = self_labelled_task(onnx_dir, tokenizer)
    entry = quantize_student(onnx_dir, tmp_path / "a", tmp_path / "s1", quantize_config(
        max_drop="50%"), task, MAX_LENGTH, 1)
    assert entry["gate"]["passed"] and len(entry["gate"]["attempts"]) == 1
    assert entry["graph"]["matmul_int8"] == 18 and entry["preset"] in ("avx2", "avx512",
                                                                       "avx512_vnni", "arm64")


def test_calibration_streams_batches_and_memory_stays_bounded(onnx_dir: Path, tokenizer) -> None:
    def peak(texts: list[str], window: int) -> tuple[int, TextCalibrationReader]:
        feed = reader(tokenizer, texts)
        tracemalloc.start()
        calibrate(onnx_dir / ONNX_FILE, feed, "entropy", window=window, op_types=STATIC_OPS)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, feed

    peak(TEXTS[:32], 4)  # warm-up: first-call imports and caches are not calibration memory
    small, _ = peak(TEXTS[:64], 4)
    large, feed = peak(TEXTS * 2, 4)  # 12.5x the examples
    unbounded, _ = peak(TEXTS * 2, 10**6)  # every batch's activations held at once
    assert feed.batches_served == len(feed) == 100 and feed.max_batch_rows == 8
    short = reader(tokenizer, TEXTS[:37])  # 4 batches of 8 and one of 5, stacked per window
    calibrate(onnx_dir / ONNX_FILE, short, "percentile", window=8, op_types=STATIC_OPS)
    assert short.batches_served == 5
    assert large < 2 * small and large * 4 < unbounded, (small, large, unbounded)


def test_reader_tokenizes_lazily_one_window_at_a_time(tokenizer) -> None:
    feed = reader(tokenizer, TEXTS, batch_size=10)
    assert feed.batches_served == 0  # nothing tokenized up front
    window = feed.window(3)
    got = [window.get_next() for _ in range(4)]
    assert got[3] is None and feed.batches_served == 3 and not feed.exhausted
    assert got[0]["input_ids"].shape == (10, MAX_LENGTH)


def test_fp16_keeps_outputs_close(onnx_dir: Path, tokenizer, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "fp16.onnx"
    quantize_model(onnx_dir / ONNX_FILE, out, QuantSpec(mode="fp16"))
    weights = [t for t in onnx.load(str(out)).graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    session = ort_session(out)
    assert session.get_inputs()[0].type == "tensor(int64)"
    expected = onnx_logits(onnx_dir, tokenizer, TEXTS[:32], MAX_LENGTH)
    got = onnx_logits(out, tokenizer, TEXTS[:32], MAX_LENGTH)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-2)

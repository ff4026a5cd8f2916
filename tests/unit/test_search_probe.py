"""The latency probe on tiny models: untrained candidates at their real shapes, exported,
quantized and timed, each a resumable unit."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import toy_rows

from kdedge.runtime import ONNX_FILE
from kdedge.search import probe as probe_module
from kdedge.search.probe import CandidateSpec, ProbeSettings, probe

SETTINGS = ProbeSettings(sequence_length=16, threads=1, warmup_runs=1, min_runs=3, min_duration_s=0)
TEXTS = [row["sentence"] for row in toy_rows(20)]


def embedding_rows(onnx_file: Path) -> int:
    """The vocabulary size of the exported graph's word embedding table."""
    import onnx

    model = onnx.load(str(onnx_file))
    [table] = [t for t in model.graph.initializer if "word_embeddings" in t.name]
    return int(table.dims[0])


def test_candidates_are_timed_untrained_at_their_real_shapes(tiny_model_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSequenceClassification

    from kdedge.models.students import build_student

    candidates = [CandidateSpec("cut-1", "1"), CandidateSpec("bilstm", "bilstm:hidden_size=8"),
                  CandidateSpec("cut-1-trim", "1", vocabulary="trim"),
                  CandidateSpec("whole", "2", precisions=("fp32",))]  # as the teacher is timed
    results = probe(candidates, tiny_model_dir, TEXTS[:2], TEXTS, tmp_path, SETTINGS)
    assert list(results) == ["cut-1", "bilstm", "cut-1-trim", "whole"]
    assert set(results.pop("whole")["precisions"]) == {"fp32"}
    assert not (tmp_path / "whole" / "int8").exists()
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    for name, spec in (("cut-1", "1"), ("bilstm", "bilstm:hidden_size=8")):
        assert results[name]["parameters"] == build_student(spec, teacher)[1]["parameters"]
    for result in results.values():
        assert set(result["precisions"]) == {"fp32", "int8"}
        for row in result["precisions"].values():
            assert row["p50_ms"] > 0 and row["size_bytes"] > 0 and row["load_average_1m"] >= 0
        assert (result["sequence_length"], result["threads"]) == (16, 1)
        assert result["seconds"] > 0  # what probing it cost, counted in the search's
    vocabulary_size = len((tiny_model_dir / "vocab.txt").read_text().split())
    assert embedding_rows(tmp_path / "cut-1" / "fp32" / ONNX_FILE) == vocabulary_size
    kept = len((tmp_path / "cut-1-trim" / "fp32" / "vocab.txt").read_text().split())
    assert 5 < kept < vocabulary_size  # the two texts use some of the toy words
    assert embedding_rows(tmp_path / "cut-1-trim" / "fp32" / ONNX_FILE) == kept
    assert results["cut-1-trim"]["parameters"] == results["cut-1"]["parameters"] - (
        vocabulary_size - kept) * 32
    assert sorted(p.name for p in (tmp_path / "cut-1").iterdir()) == ["fp32", "int8", "probe.json"]

    def no_export(*_: object) -> None:
        raise AssertionError("a probed candidate was measured again")

    monkeypatch.setattr(probe_module, "export", no_export)  # resumed: every result is read back
    assert probe(candidates[:3], tiny_model_dir, TEXTS[:2], TEXTS, tmp_path, SETTINGS) == results
    other = ProbeSettings(sequence_length=8, threads=1, warmup_runs=1, min_runs=3, min_duration_s=0)
    with pytest.raises(AssertionError, match="measured again"):  # other settings: measured anew
        probe(candidates[:1], tiny_model_dir, TEXTS[:2], TEXTS, tmp_path, other)

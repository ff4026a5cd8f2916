"""`kdedge compress --task embedding` on the real demo: all-MiniLM-L6-v2 as it is, distilled into
its 3-layer cut on the review texts, which must keep the teacher's semantic search in int8."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdedge.artifacts import Manifest
from kdedge.pipeline import STAGE_NAMES, stage_dirname
from kdedge_cli import main as cli_main

pytestmark = pytest.mark.integration

QUICK_BENCH = ["--set", "bench.min_duration_s=0.5", "--set", "bench.min_runs=10",
               "--set", "bench.warmup_runs=3", "--set", "bench.batch_sizes=[1]"]


def test_compress_a_sentence_encoder_on_the_demo(demo_cache: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "demo-embedding"
    monkeypatch.setattr(sys, "argv", ["kdedge", "compress", "--task", "embedding",
                                      "--out", str(run_dir), *QUICK_BENCH])
    monkeypatch.setitem(cli_main._state, "debug", True)  # a failure here should show its traceback
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)

    metrics = {name: Manifest.load(run_dir / stage_dirname(name)).metrics for name in STAGE_NAMES}
    assert (metrics["data"]["task"], metrics["data"]["primary_metric"]) == ("embedding", "cosine")
    teacher = metrics["teacher"]
    assert not teacher["fine_tuned"] and teacher["pooling"] == "mean"
    assert teacher["embedding_dim"] == 384 and teacher["test"]["cosine"] == pytest.approx(1.0)
    assert metrics["distill"]["student"]["layers"] == [1, 3, 5]
    for name in ("teacher", "student"):
        assert metrics["export"]["models"][name]["parity"]["max_abs_diff"] <= 1e-4
    int8 = metrics["quantize"]["models"]["student-int8"]
    print("int8 3-layer student, test:", json.dumps(int8["test"]))
    # measured: cosine 0.911, Spearman 0.888, recall@10 0.514 (3 epochs at 2e-4 on 10,249 texts).
    # The goal of recall@10 >= 0.70 is not met by this student; the floor guards what it reaches
    # (what moves it, and what does not: benchmarks/results/embedding.md).
    assert int8["test"]["cosine"] >= 0.90
    assert int8["test"]["spearman"] >= 0.86
    assert int8["test"]["recall_at_10"] >= 0.48
    assert int8["bytes"] * 4 < metrics["export"]["models"]["teacher"]["bytes"]

    bundle = run_dir / stage_dirname("bundle") / "bundle"
    out = subprocess.run([sys.executable, str(bundle / "predict.py"), "a warm, funny film",
                          "a dull and lifeless film"], capture_output=True, text=True, check=True)
    vectors = np.array([json.loads(line)["embedding"] for line in out.stdout.splitlines()])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

"""The whole chain on a tiny random BERT and a toy dataset: every stage, resume and re-runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import VOCAB, toy_rows, write_tiny_model

from kdedge import pipeline
from kdedge.artifacts import Manifest
from kdedge.bench.stats import latency_at
from kdedge.config import KdedgeConfig, build_config
from kdedge.errors import KdedgeError

TINY = {
    "data.text_columns": ["sentence"], "data.label_column": "sentiment", "data.max_length": 32,
    "teacher.training.epochs": 6, "teacher.training.learning_rate": 3e-3,
    "teacher.training.batch_size": 16,
    "teacher.training.patience": None,  # the toy teacher may sit at chance for an epoch first
    "distill.student": "2", "distill.training.epochs": 3, "distill.training.learning_rate": 3e-3,
    "distill.training.batch_size": 16,
    "bench.batch_sizes": [1, 4], "bench.warmup_runs": 1, "bench.min_runs": 3,
    "bench.min_duration_s": 0, "bench.threads": 1, "run.threads": 2,
}


def tiny_config(csv: Path, teacher: Path, out: Path, **extra: Any) -> KdedgeConfig:
    return build_config(overrides={**TINY, "data.source": str(csv), "teacher.model": str(teacher),
                                   "run.out": str(out), **extra})


def run_fresh(cfg: KdedgeConfig) -> Path:
    pipeline.prepare_run(cfg, cfg.run.out, resume=False, force=True)
    pipeline.run(cfg, cfg.run.out)
    return cfg.run.out


def manifest(run_dir: Path, stage: str) -> Manifest:
    return Manifest.load(run_dir / pipeline.stage_dirname(stage))


def started(run_dir: Path) -> dict[str, str]:
    return {s: manifest(run_dir, s).started_at + str(manifest(run_dir, s).duration_s)
            for s in pipeline.STAGE_NAMES}


@pytest.fixture(scope="module")
def tiny_run(tiny_csv: Path, tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[KdedgeConfig, Path]:
    cfg = tiny_config(tiny_csv, tiny_encoder_dir, tmp_path_factory.mktemp("runs") / "tiny")
    return cfg, run_fresh(cfg)


def test_every_stage_leaves_a_verified_manifest(tiny_run: tuple[KdedgeConfig, Path]) -> None:
    cfg, run_dir = tiny_run
    fps = pipeline.fingerprints(cfg)
    for stage in pipeline.STAGES:
        folder = run_dir / pipeline.stage_dirname(stage.name)
        m = Manifest.load(folder)
        assert m.status == "complete" and m.fingerprint == fps[stage.name]
        assert set(m.inputs) == set(stage.inputs)
        assert m.outputs and m.verify(folder) is None
        assert m.environment["cpu"]["logical_cores"] >= 1
    assert not list(run_dir.glob(".*.partial"))
    summary = json.loads((run_dir / "run.json").read_text())
    assert list(summary["stages"]) == list(pipeline.STAGE_NAMES)
    assert (run_dir / "config.resolved.yaml").is_file()


def test_models_learn_and_survive_export_and_int8(tiny_run: tuple[KdedgeConfig, Path]) -> None:
    _, run_dir = tiny_run
    teacher, distill = manifest(run_dir, "teacher").metrics, manifest(run_dir, "distill").metrics
    assert teacher["fine_tuned"] and not teacher["cache_hit"]
    assert teacher["test"]["accuracy"] >= 0.9  # the toy task is told by one word
    assert distill["test"]["accuracy"] >= 0.9
    assert distill["student"]["layers"] == [1, 3] and distill["student"]["num_layers"] == 2
    assert distill["reload_max_abs_diff"] == 0.0
    exported = manifest(run_dir, "export").metrics["models"]
    for name in ("teacher", "student"):
        parity = exported[name]["parity"]
        assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
        assert parity["shapes"][0][0] == 1 and parity["shapes"][1][0] > 1
    assert exported["student"]["test"]["accuracy"] == distill["test"]["accuracy"]
    int8 = manifest(run_dir, "quantize").metrics["models"]["student-int8"]
    # 2 layers x (Q, K, V, out, QK^T, attn.V, 2 FFN) + pooler + classifier = 18 MatMuls, all int8
    assert int8["graph"]["matmul_total"] == 18
    assert int8["graph"]["matmul_int8"] == 18 and int8["graph"]["matmul_fp32_left"] == 0
    assert int8["test"]["accuracy"] >= 0.9


def test_bench_and_report_cover_every_model(tiny_run: tuple[KdedgeConfig, Path]) -> None:
    _, run_dir = tiny_run
    bench = manifest(run_dir, "bench").metrics
    assert set(bench["models"]) == {"teacher-pytorch", "teacher-onnx", "student-onnx", "student-int8"}
    # the default targets are this machine's: nothing is planned for an absent GPU
    if bench["targets"] == ["cpu"]:
        assert bench["skipped"] == {} and bench["skipped_targets"] == {}
    assert bench["threads"] == [1] and bench["sequence_lengths"] == [16]  # 95% of the toy texts fit
    for result in bench["models"].values():
        assert set(latency_at(result)) == {"1", "4"}
        row = latency_at(result)["1"]
        assert row["runs"] >= 3 and 0 < row["p50_ms"] <= row["p99_ms"]
        assert result["size_bytes"] > 0 and result["memory"]["inference_peak_rss_bytes"] > 0
    report_dir = run_dir / pipeline.stage_dirname("report")
    assert (report_dir / "report.md").is_file()
    data = json.loads((report_dir / "report.json").read_text())
    assert data["schema_version"] == 1
    basis = "95% of the validation and test texts fit; data.max_length 32"
    assert (data["benchmark"]["sequence_length"], data["benchmark"]["sequence_length_basis"]) == (
        16, basis)
    escaped = basis.replace("_", "\\_")  # Markdown
    assert f"Milliseconds per batch at sequence length 16 ({escaped}) with 1 threads" in (
        report_dir / "report.md").read_text()


def test_resume_skips_every_unchanged_stage(tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path) -> None:
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = started(run_dir)
    pipeline.prepare_run(cfg, run_dir, resume=True, force=False)
    pipeline.run(cfg, run_dir, resume=True)
    assert started(run_dir) == before


def test_config_change_reruns_that_stage_and_downstream_only(
        tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path) -> None:
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = started(run_dir)
    changed = build_config(overrides={**json_overrides(cfg), "distill.alpha": 0.9})
    pipeline.run(changed, run_dir, resume=True)
    after = started(run_dir)
    assert [s for s in pipeline.STAGE_NAMES if after[s] == before[s]] == ["data", "teacher"]
    assert manifest(run_dir, "distill").config["distill"]["alpha"] == 0.9


def test_a_corrupted_artifact_is_detected_and_its_stage_reruns(
        tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path) -> None:
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = started(run_dir)
    onnx = run_dir / pipeline.stage_dirname("quantize") / "student-int8" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    pipeline.run(cfg, run_dir, resume=True)
    after = started(run_dir)
    rerun = [s for s in pipeline.STAGE_NAMES if after[s] != before[s]]
    assert rerun == ["quantize", "bench", "report", "bundle"]
    assert manifest(run_dir, "quantize").verify(onnx.parent.parent) is None


def test_a_second_run_reuses_the_cached_teacher(tiny_run: tuple[KdedgeConfig, Path],
                                                tmp_path: Path) -> None:
    cfg, source = tiny_run
    again = build_config(overrides={**json_overrides(cfg), "run.out": str(tmp_path / "again"),
                                    "bench.models": ["student-onnx"]})
    pipeline.prepare_run(again, again.run.out, resume=False, force=False)
    pipeline.run(again, again.run.out, only=("data", "teacher"))
    first, second = manifest(source, "teacher").metrics, manifest(again.run.out, "teacher").metrics
    assert second["cache_hit"] and not first["cache_hit"]
    assert second["test"] == first["test"]


def test_a_stage_alone_needs_its_inputs(tmp_path: Path, tiny_run: tuple[KdedgeConfig, Path]) -> None:

    cfg, _ = tiny_run
    empty = tmp_path / "empty"
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": empty})})
    pipeline.prepare_run(cfg, empty, resume=False, force=False)
    with pytest.raises(KdedgeError, match=r"Stage 'data' has not completed in .*; run `kdedge "
                                          r"compress --resume --out"):
        pipeline.run(cfg, empty, only=("quantize",))


def json_overrides(cfg: KdedgeConfig) -> dict[str, Any]:
    """A config as dotted overrides, to rebuild it with a change."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return flat

def copy_run(tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path) -> tuple[KdedgeConfig, Path]:
    """A copy of the tiny run's directory, and its config pointing at the copy."""
    cfg, source = tiny_run
    run_dir = tmp_path / "copy"
    shutil.copytree(source, run_dir)
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"out": run_dir})}), run_dir


def rerun_copy(tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path, overrides: dict[str, Any],
               stages: tuple[str, ...]) -> Path:
    """A copy of the tiny run with some stages run again under a changed config."""
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    changed = build_config(overrides={**json_overrides(cfg), **overrides})
    pipeline.run(changed, run_dir, only=stages)
    return run_dir



def test_report_adds_a_device_bench_from_the_command_line(
        tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from kdedge_cli import main as cli_main

    _, run_dir = copy_run(tiny_run, tmp_path)
    # a device's results: this run's own int8 bench entry, as if measured on a phone
    own = json.loads((run_dir / pipeline.stage_dirname("bench") / "results.json").read_text())
    device = {"target": "phone", "threads": [4], "sequence_lengths": own["sequence_lengths"],
              "batch_sizes": own["batch_sizes"], "models": {
                  "student-int8": own["models"]["student-int8"]}, "skipped": {}}
    path = tmp_path / "phone.json"
    path.write_text(json.dumps(device))
    monkeypatch.setattr(sys, "argv", ["kdedge", "report", str(run_dir), "--add-bench", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main()
    assert exit_info.value.code in (0, None)
    assert f"added target phone from {path}" in capsys.readouterr().out
    report = json.loads((run_dir / pipeline.stage_dirname("report") / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    assert rows["student-int8@phone"]["target"] == "phone"
    assert rows["student-int8@phone"]["latency"] == rows["student-int8"]["latency"]
    phone = next(v for v in report["recommendation"]["per_target"] if v["target"] == "phone")
    card = (run_dir / pipeline.stage_dirname("bundle") / "bundle" / "README.md").read_text()
    assert f"  - {phone['sentence']}" in card  # the card says what to ship on the new target


def test_multi_teacher_recipe_with_another_tokenizer(tiny_run: tuple[KdedgeConfig, Path],
                                                     tmp_path: Path) -> None:
    """A second teacher with its own vocabulary is fine-tuned, run on the raw texts, and the
    selector's choices are in the history."""
    other = write_tiny_model(tmp_path / "other-teacher", layers=2, seed=1,
                             words=list(reversed(VOCAB[5:])))
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.recipe": "multi-teacher", "distill.multi_teacher.weighting": "rl-select",
        "distill.multi_teacher.teachers": [{"model": str(other), "training": {
            "epochs": 6, "learning_rate": 3e-3, "batch_size": 16}}]}, ("distill",))
    metrics = manifest(run_dir, "distill").metrics
    extra = metrics["extra_teachers"][0]
    assert extra["fine_tuned"] and extra["test"]["accuracy"] >= 0.9
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["history"][0]["teacher1_selected"] == 1.0  # warm-up: every teacher
    assert 0.0 < metrics["history"][-1]["teacher0_policy_p"] < 1.0


def test_a_teacher_with_other_labels_is_refused(tiny_run: tuple[KdedgeConfig, Path],
                                                tmp_path: Path) -> None:
    other = write_tiny_model(tmp_path / "labels-0-1")  # a head for LABEL_0 / LABEL_1
    with pytest.raises(KdedgeError, match=r"Teacher '.*labels-0-1' has no classification head for "
                       r"the labels \['neg', 'pos'\] \(it has \['LABEL_0', 'LABEL_1'\]\); set "
                       r"fine_tune to auto"):
        rerun_copy(tiny_run, tmp_path, {
            "distill.recipe": "multi-teacher",
            "distill.multi_teacher.teachers": [{"model": str(other), "fine_tune": "never"}]},
            ("distill",))


def test_multi_task_recipe_trains_a_head_per_task(tiny_run: tuple[KdedgeConfig, Path],
                                                  tmp_path: Path, tiny_encoder_dir: Path) -> None:
    """Per-task teachers: a 3-topic task joins the sentiment task, its own teacher is
    fine-tuned, the shared student learns both, and the saved student is the sentiment
    classifier alone."""
    import random

    import pandas as pd

    rng, topics = random.Random(0), {"cinema": ["movie", "film"], "narrative": ["plot", "story"],
                                     "people": ["cast"]}
    rest = [w for w in VOCAB[5:] if all(w not in words for words in topics.values())]
    rows = []
    for i in range(300):
        topic = list(topics)[i % 3]
        words = [*rng.choices(rest, k=rng.randint(3, 7)), rng.choice(topics[topic])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "topic": topic})
    csv = tmp_path / "topics.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    aux = {"name": "topic", "data": {"source": str(csv), "label_column": "topic"},
           "teacher": {"model": str(tiny_encoder_dir), "training": {
               "epochs": 6, "learning_rate": 3e-3, "batch_size": 16}}}
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.recipe": "multi-task", "distill.multi_task.tasks": [aux],
        "distill.multi_task.teacher": "per-task",
        "distill.multi_task.sampler": "temperature", "distill.training.epochs": 10},
        ("distill", "export"))
    metrics = manifest(run_dir, "distill").metrics
    topic = metrics["tasks"]["topic"]
    assert topic["labels"] == ["cinema", "narrative", "people"] and topic["fine_tuned"]
    assert topic["teacher_test"]["accuracy"] >= 0.9
    assert topic["validation"]["accuracy"] >= 0.6  # chance is 0.33: the head learned
    assert metrics["test"]["accuracy"] >= 0.9
    assert [row["phase"] for row in metrics["history"]] == ["multi-task"] * 10 + ["target"]
    from safetensors.torch import load_file

    heads = load_file(run_dir / pipeline.stage_dirname("distill") / "task_heads.safetensors")
    assert heads["topic.weight"].shape == (3, 32)
    assert manifest(run_dir, "export").metrics["models"]["student"]["parity"]["max_abs_diff"] < 1e-4


def test_multi_task_teacher_with_a_regression_task(tiny_run: tuple[KdedgeConfig, Path],
                                                   tmp_path: Path) -> None:
    """The paper's multi-task teacher and mixed kinds: a score task (how many of a text's
    words are 'movie' or 'film') joins the sentiment task; the teacher stage's teacher is
    fine-tuned on both with a head each, the student distils from its heads (MSE for the score,
    logit MSE + CE for sentiment), and what ships is the sentiment classifier."""
    import pandas as pd

    rows = [{"text": row["sentence"], "share": float(sum(w in ("movie", "film")
                                                          for w in row["sentence"].split()))}
            for row in toy_rows(300, seed=3)]
    csv = tmp_path / "share.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    aux = {"name": "share", "data": {"source": str(csv), "label_column": "share",
                                     "task": "regression"}}
    # the multi-task teacher trains teacher.training's epochs from the run's teacher; at the toy
    # rate its mean validation score still rose at epoch 6 (0.84 from one start, 0.94 from another)
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.recipe": "multi-task", "distill.multi_task.tasks": [aux],
        "teacher.training.epochs": 9, "distill.training.epochs": 6}, ("distill", "export"))
    metrics = manifest(run_dir, "distill").metrics
    teacher = metrics["multi_task_teacher"]
    assert not teacher["cache_hit"] and len(teacher["history"]) == 9
    assert teacher["scores"]["target"]["test"]["accuracy"] >= 0.9
    assert teacher["scores"]["share"]["validation"]["pearson"] >= 0.7
    share = metrics["tasks"]["share"]
    assert share["kind"] == "regression" and share["teacher"].endswith("(multi-task)")
    assert share["validation"]["pearson"] >= 0.7  # the student's score head learned
    assert metrics["test"]["accuracy"] >= 0.9
    assert [row["phase"] for row in metrics["history"]] == ["multi-task"] * 6 + ["target"]
    from safetensors import safe_open

    path = run_dir / pipeline.stage_dirname("distill") / "task_heads.safetensors"
    with safe_open(str(path), "pt") as heads:
        assert heads.metadata() == {"share": "regression"}
        assert heads.get_tensor("share.weight").shape == (1, 32)
    assert manifest(run_dir, "export").metrics["models"]["student"]["parity"]["max_abs_diff"] < 1e-4


def test_annealing_recipe_runs_both_phases(tiny_run: tuple[KdedgeConfig, Path], tmp_path: Path) -> None:
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.recipe": "annealing", "distill.annealing.tau_max": 2,
        "distill.annealing.phase1_epochs": 3, "distill.annealing.phase2_epochs": 2}, ("distill",))
    metrics = manifest(run_dir, "distill").metrics
    assert metrics["recipe"] == "annealing"
    history = metrics["history"]
    assert [row["phase"] for row in history] == ["anneal"] * 3 + ["finetune"] * 2
    assert [row["annealed_mse_phi"] for row in history[:3]] == [0.5, 1.0, 1.0]  # clamped at 1
    assert "annealed_mse_phi" not in history[3]
    assert metrics["test"]["accuracy"] >= 0.9


def test_two_stage_recipe_matches_vectors_then_logits(tiny_run: tuple[KdedgeConfig, Path],
                                                      tmp_path: Path) -> None:
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.recipe": "two-stage", "distill.two_stage.stage1_epochs": 2,
        "distill.two_stage.stage2_epochs": 2, "distill.two_stage.distance": "cosine"},
        ("distill",))  # stage 2 the paper's: CE + L1 between logits, on span-masked inputs
    metrics = manifest(run_dir, "distill").metrics
    history = metrics["history"]
    assert [row["phase"] for row in history] == ["represent"] * 2 + ["logits"] * 2
    assert history[1]["train_loss"] < history[0]["train_loss"]  # the vectors move together
    assert metrics["test"]["accuracy"] >= 0.9


def test_a_bilstm_student_distills_exports_and_quantizes(tiny_run: tuple[KdedgeConfig, Path],
                                                         tmp_path: Path) -> None:
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.student": "bilstm:hidden_size=16", "distill.training.learning_rate": 1e-2,
        "distill.training.epochs": 4}, ("distill", "export", "quantize"))
    distill = manifest(run_dir, "distill").metrics
    assert distill["student"]["builder"] == "birnn" and distill["student"]["state_size"] == 32
    assert distill["test"]["accuracy"] >= 0.9
    exported = manifest(run_dir, "export").metrics["models"]["student"]
    assert exported["exporter"] == "torch.onnx" and exported["parity"]["max_abs_diff"] <= 1e-4
    graph = manifest(run_dir, "quantize").metrics["models"]["student-int8"]["graph"]
    assert graph["rnn_int8"] == 1 and graph["rnn_fp32_left"] == 0  # one bidirectional LSTM layer
    assert manifest(run_dir, "quantize").metrics["models"]["student-int8"]["test"]["accuracy"] >= 0.85


def test_bad_student_options_are_refused() -> None:
    from kdedge.models.students import parse_spec

    assert dict(parse_spec("bigru:hidden_size=8,dropout=0.2", 6).options) == {
        "cell": "gru", "hidden_size": 8, "dropout": 0.2}
    with pytest.raises(KdedgeError, match=r"Student option 'size=8' is not valid for bilstm; use "
                                          r"embedding_dim=\.\.\., hidden_size="):
        parse_spec("bilstm:size=8", 6)


def test_augmentation_adds_teacher_labelled_rows(tiny_run: tuple[KdedgeConfig, Path],
                                                 tmp_path: Path) -> None:
    import pandas as pd
    from conftest import toy_rows

    extra = tmp_path / "unlabelled.csv"
    pd.DataFrame(toy_rows(50, seed=9))[["sentence"]].to_csv(extra, index=False)
    run_dir = rerun_copy(tiny_run, tmp_path, {
        "distill.augment.unlabeled": str(extra), "distill.augment.text_column": "sentence",
        "distill.augment.mask_copies": 1, "distill.augment.min_confidence": 0.6}, ("distill",))
    metrics = manifest(run_dir, "distill").metrics
    train = manifest(run_dir, "data").metrics["splits"]["train"]
    assert metrics["augmented"]["added"] == 50 + train
    assert 0 < metrics["augmented"]["kept"] <= metrics["augmented"]["added"]
    assert metrics["training_examples"] == train + metrics["augmented"]["kept"]
    assert metrics["test"]["accuracy"] >= 0.9

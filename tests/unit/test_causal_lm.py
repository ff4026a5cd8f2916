"""Decoder-only generators (data.task causal-lm): layout, recipes and the whole chain, on a
tiny random GPT-2 that shares the tiny BERT's WordPiece tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import VOCAB, run_cli

from kdedge.config import build_config
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.models.layouts import CausalLayout, layout_for

PAIRS = [("review good film", "good"), ("review bad plot", "bad"),
         ("review great cast", "great"), ("review awful film", "awful"),
         ("review fine plot", "fine"), ("review boring cast", "boring")] * 3


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def loaded(folder: Path) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def task_of(pairs: list[tuple[str, str]]) -> TaskData:
    def split(rows: list[tuple[str, str]]) -> TaskSplit:
        return TaskSplit([s for s, _ in rows], np.array([t for _, t in rows], dtype=object))
    return TaskData([], {"train": split(pairs), "validation": split(pairs[:6]),
                         "test": split(pairs[:6])}, "causal-lm")


def test_the_causal_layout_predicts_the_target_after_the_prompt(tiny_gpt2_dir: Path) -> None:
    model, tokenizer = loaded(tiny_gpt2_dir)
    layout = layout_for(model.config, tokenizer, 16)
    assert isinstance(layout, CausalLayout) and layout.separator == tokenizer.sep_token_id
    targets = layout.targets(["good", "bad plot"], 8)
    batch = layout.batch(["review good film", "review bad"], targets)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["mask"]
    prompt = tokenizer("review good film", add_special_tokens=False)["input_ids"]
    assert layout.start == tokenizer.cls_token_id  # the model's BOS begins every sequence
    sep = 1 + len(prompt)  # the separator's position predicts the target's first token
    assert ids[0, :sep].tolist() == [layout.start, *prompt] and ids[0, sep].item() == layout.separator
    assert labels[0, sep:sep + 2].tolist() == targets[0] and mask[0, sep:sep + 2].all()
    assert mask.sum(1).tolist() == [len(targets[0]), len(targets[1])]
    # the prompt's next tokens are labels too, counted apart (a language-model term)
    prompt_mask = batch["prompt_mask"]
    assert labels[0, :sep].tolist() == [*prompt, layout.separator] and prompt_mask[0, :sep].all()
    assert not (prompt_mask & mask).any() and prompt_mask.sum(1).tolist() == [len(prompt) + 1, 3]
    assert batch["attention_mask"][1].sum().item() == 1 + 2 + 1 + len(targets[1])  # no padding
    # generation continues after the prompt, the prompts padded on the left
    out = layout.continuations(model, ["review good film", "review bad"], 3, min_new_tokens=3)
    assert [len(row) for row in out] == [3, 3]
    single = layout.continuations(model, ["review bad"], 3, min_new_tokens=3)
    assert single[0] == out[1]  # left padding does not change a row's generation


@pytest.mark.parametrize("recipe", ["gold", "word-kd", "seq-kd", "imitkd"])
def test_each_generation_recipe_distills_a_decoder_only_student(recipe: str,
                                                                 tiny_gpt2_dir: Path) -> None:
    from kdedge.distill import generator

    teacher, tokenizer = loaded(tiny_gpt2_dir)
    cfg = build_config(overrides={
        "data.task": "causal-lm", "data.max_length": 16, "data.max_target_length": 4,
        "distill.recipe": recipe, "distill.student": "1", "distill.generation.beams": 2,
        "distill.training": {"epochs": 3, "batch_size": 6, "learning_rate": 3e-3,
                             "warmup_ratio": 0.0}})
    student, metrics = generator.distill(cfg, teacher, tokenizer, task_of(PAIRS), ["gpt2"])
    assert student.config.num_hidden_layers == 1
    assert metrics["student"] == {"source": "1 of the teacher's 2 layers",
                                  "parameters": sum(p.numel() for p in student.parameters()),
                                  "layers": {"decoder": 1}}
    history = metrics["history"]
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    if recipe == "imitkd":
        assert history[-1]["rollout_share"] > history[0]["rollout_share"]


def test_compress_a_causal_lm_lifelong_stream_from_csv_to_report(tiny_gpt2_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data, earlier = tmp_path / "pairs.csv", tmp_path / "earlier.csv"
    pd.DataFrame([{"prompt": p, "continuation": c} for p, c in PAIRS * 3]).to_csv(data,
                                                                                  index=False)
    pd.DataFrame([{"prompt": f"the {c} story", "continuation": p.split()[-1]}
                  for p, c in PAIRS * 2]).to_csv(earlier, index=False)
    run_dir = tmp_path / "run"
    stream = ("distill.lifelong={replay: real, multitask_baseline: false, tasks: [{name: earlier, "
              f"data: {{source: '{earlier}', text_columns: [prompt], label_column: continuation}}, "
              f"teacher: {{model: '{tiny_gpt2_dir}', training: {{epochs: 1}}}}}}]}}")
    code, out, err = run_cli([
        "compress", "--data", str(data), "--task", "causal-lm", "--text-column", "prompt",
        "--label-column", "continuation", "--teacher", str(tiny_gpt2_dir), "--student", "1",
        "--method", "lifelong", "--set", stream, "--out", str(run_dir), "--epochs", "1",
        "--set", "teacher.training.epochs=1", "--set", "data.max_length=16",
        "--set", "data.max_target_length=4", "--set", "bench.batch_sizes=[1]",
        "--set", "bench.min_runs=2", "--set", "bench.warmup_runs=1",
        "--set", "bench.min_duration_s=0.05"], capsys, monkeypatch)
    assert code == 0, err
    from kdedge.artifacts import Manifest
    from kdedge.export.generation import has_cache
    from kdedge.pipeline import stage_dirname

    def metrics(stage: str) -> dict:
        return Manifest.load(run_dir / stage_dirname(stage)).metrics

    assert metrics("data")["task"] == "causal-lm"
    assert metrics("teacher")["fine_tuned"] and metrics("teacher")["num_layers"] == {"decoder": 2}
    life = metrics("distill")["lifelong"]
    assert life["stream"] == ["earlier", "target"] and life["after_step"][1]["replayed"] > 0
    for name in ("teacher", "student"):
        model = metrics("export")["models"][name]
        assert model["parity"]["passed"] and model["key_value_cache"]
        assert has_cache(run_dir / stage_dirname("export") / name)
    int8 = metrics("quantize")["models"]["student-int8"]
    assert int8["components"]["model.onnx"]["matmul_int8"] > 0
    bench = metrics("bench")["models"]
    assert {"teacher-onnx", "student-onnx", "student-int8"} <= set(bench)
    assert all(row["latency"][0]["tokens_per_s"] > 0 for row in bench.values())
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    assert report["task"] == "causal-lm" and report["primary_metric"] == "rougeL"
    markdown = (run_dir / stage_dirname("report") / "report.md").read_text()
    assert "#### The lifelong stream" in markdown and "after step 2 (target, " in markdown
    # the bundle's generate.py decodes the test prompts as the pipeline's ONNX evaluation does
    from transformers import AutoConfig, AutoTokenizer

    from kdedge.bundle.generate import Generator
    from kdedge.export.generation import load_onnx_generator

    bundle = run_dir / stage_dirname("bundle") / "bundle"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert f"Bundled: {meta['artifact']}" in out and meta["script"] == "generate.py"
    assert meta["generation"]["layout"] == "causal" and meta["graphs"] == ["model.onnx"]
    prompts = pd.read_parquet(run_dir / stage_dirname("data") / "test.parquet")["text"].tolist()
    layout = layout_for(AutoConfig.from_pretrained(bundle), AutoTokenizer.from_pretrained(bundle),
                        meta["generation"]["max_length"])
    expected = layout.continuations(load_onnx_generator(bundle, "causal-lm"), prompts,
                                    meta["generation"]["max_new_tokens"])
    assert Generator(bundle).generate_ids(prompts) == expected and len(expected) == len(prompts)

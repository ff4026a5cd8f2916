"""The generator bundle's generate.py (onnxruntime, numpy and tokenizers only) against the
pipeline's own ONNX generation (optimum's generator with transformers' search), on tiny random
BART and GPT-2 models exported the way the export stage does it: the same tokens, greedy and beam,
whichever decoder graphs the folder holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_tiny_model

from kdedge.bundle import generate as script
from kdedge.bundle.generator import describe
from kdedge.bundle.stage import tokenizer_spec
from kdedge.export.generation import export_generator, load_onnx_generator
from kdedge.models.layouts import layout_for
from kdedge.tasks import get as task_kind

SOURCES = ["the movie was lovely", "a very dull plot and a weak cast", "fun", "the story is smart"]
NEW_TOKENS = 8
CFG = SimpleNamespace(data=SimpleNamespace(max_length=16, max_target_length=NEW_TOKENS))


def _bundle(folder: Path, task: str) -> Path:
    """bundle.json as the bundle stage writes it for a generator."""
    meta = {"tokenizer": tokenizer_spec(folder), **describe(folder, task_kind(task), CFG)}
    (folder / "bundle.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import (
        AutoTokenizer,
        BartConfig,
        BartForConditionalGeneration,
        GPT2Config,
        GPT2LMHeadModel,
    )

    root = tmp_path_factory.mktemp("generators")
    tokenizer = AutoTokenizer.from_pretrained(write_tiny_model(root / "bert"))
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
           "eos_token_id": tokenizer.sep_token_id}
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, decoder_start_token_id=tokenizer.cls_token_id,
        forced_eos_token_id=None, **ids))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32,
                                      n_layer=2, n_head=2, tie_word_embeddings=False,
                                      **ids))
    folders = {}
    for name, model, task in (("bart", bart, "seq2seq"), ("gpt2", gpt2, "causal-lm")):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        export_generator(root / name, root / f"{name}-onnx", task)
        folders[name] = _bundle(root / f"{name}-onnx", task)
    # the other decoder layouts an exported seq2seq folder may hold
    for name, dropped in (("merged", ("decoder_model.onnx", "decoder_with_past_model.onnx")),
                          ("no-cache", ("decoder_with_past_model.onnx", "decoder_model_merged.onnx"))):
        folder = shutil.copytree(folders["bart"], root / name)
        for file in dropped:
            (folder / file).unlink()
        folders[name] = folder
    return folders


def _reference(folder: Path, task: str, beams: int = 1) -> list[list[int]]:
    """The pipeline's ONNX generation: optimum's generator through the run's layout."""
    from transformers import AutoConfig, AutoTokenizer

    model = load_onnx_generator(folder, task)
    layout = layout_for(AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder),
                        CFG.data.max_length)
    return layout.continuations(model, SOURCES, NEW_TOKENS, beams=beams)


@pytest.mark.parametrize(("name", "task"), [("bart", "seq2seq"), ("merged", "seq2seq"),
                                            ("no-cache", "seq2seq"), ("gpt2", "causal-lm")])
def test_greedy_tokens_equal_the_pipelines_onnx_generation(exported: dict[str, Path], name: str,
                                                           task: str) -> None:
    expected = _reference(exported["bart" if name != "gpt2" else "gpt2"], task)
    generator = script.Generator(exported[name])
    assert generator.generate_ids(SOURCES) == expected
    one_by_one = [generator.generate_ids([s])[0] for s in SOURCES]  # fp32: padding changes nothing
    assert one_by_one == expected
    assert all(len(row) <= NEW_TOKENS for row in expected) and any(len(row) > 1 for row in expected)


@pytest.mark.parametrize(("name", "task"), [("bart", "seq2seq"), ("gpt2", "causal-lm")])
def test_beam_search_equals_transformers_beam_search(exported: dict[str, Path], name: str,
                                                     task: str) -> None:
    expected = _reference(exported[name], task, beams=3)
    assert script.Generator(exported[name]).generate_ids(SOURCES, beams=3) == expected
    assert expected != _reference(exported[name], task)  # beam search chose otherwise somewhere


def test_generation_config_rules_apply_as_in_transformers(exported: dict[str, Path],
                                                          tmp_path: Path) -> None:
    folder = shutil.copytree(exported["bart"], tmp_path / "ruled")
    config = json.loads((folder / "generation_config.json").read_text())
    config.update(no_repeat_ngram_size=2, repetition_penalty=1.5, min_length=5)
    (folder / "generation_config.json").write_text(json.dumps(config))
    expected = _reference(folder, "seq2seq")
    assert script.Generator(folder).generate_ids(SOURCES) == expected
    assert expected != _reference(exported["bart"], "seq2seq")


def test_the_script_prints_one_json_line_per_source(exported: dict[str, Path],
                                                    tmp_path: Path) -> None:
    folder = shutil.copytree(exported["bart"], tmp_path / "bundle")
    shutil.copyfile(script.__file__, folder / "generate.py")
    out = subprocess.run([sys.executable, "generate.py", "--beams", "2", "-"], cwd=folder,
                         input="\n".join(SOURCES[:2]) + "\n", capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines == script.Generator(folder).generate(SOURCES[:2], beams=2)
    assert [line["tokens"] for line in lines] == _reference(folder, "seq2seq", beams=2)[:2]
    bad = subprocess.run([sys.executable, "generate.py", "--beams", "0", "a text"], cwd=folder,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: batch size and beams must be at least 1, got 1 and 0"

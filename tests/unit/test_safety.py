"""Untrusted files and long texts: nothing kdedge loads can run code unless the user opts in, and
texts cut at data.max_length are counted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from kdedge.config import KdedgeConfig, build_config
from kdedge.errors import KdedgeError


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])


def calls(pattern: str) -> list[str]:
    """`file:line: code` for every source line matching pattern."""
    found = []
    for path in sorted([*Path("kdedge").rglob("*.py"), *Path("cli").rglob("*.py")]):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(pattern, line):
                found.append(f"{path}:{number}: {line.strip()}")
    return found


def test_no_loader_that_can_run_code_is_used() -> None:
    torch_loads = calls(r"torch\.load\(")
    assert torch_loads and all("weights_only=True" in line for line in torch_loads), torch_loads
    assert calls(r"\bpickle\.loads?\(|\byaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b"
                 ) == []
    assert calls(r"trust_remote_code\s*=\s*True") == []
    assert calls(r"yaml\.safe_load\(")  # the one YAML reader in use


def test_remote_code_is_off_unless_the_user_passes_it(tiny_encoder_dir: Path, tmp_path: Path) -> None:
    from kdedge.hf import load_classifier

    assert KdedgeConfig().teacher.trust_remote_code is False
    assert build_config(overrides={"teacher.trust_remote_code": True}).teacher.trust_remote_code
    custom = tmp_path / "custom-model"
    shutil.copytree(tiny_encoder_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="kdedge-custom", auto_map={
        "AutoConfig": "custom.CustomConfig",
        "AutoModelForSequenceClassification": "custom.CustomModel"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "custom.py").write_text("raise SystemExit('the model repository ran its code')\n")
    with pytest.raises(KdedgeError, match=r"^Model '.*custom-model' needs its own code to load; pass "
                                          r"--trust-remote-code only if you trust its authors\.$"):
        load_classifier(str(custom), {0: "neg", 1: "pos"}, revision=None, trust_remote_code=False)


def test_texts_longer_than_max_length_are_counted(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.evaluate import truncated

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["good film", "the movie was a very dull and boring story", "fun",
             "the plot and the cast and the story were awful"]  # 2+2, 9+2, 1+2 and 10+2 tokens
    assert truncated(tokenizer, texts, max_length=8) == 2
    assert truncated(tokenizer, texts, max_length=11) == 1
    assert truncated(tokenizer, texts, max_length=12) == 0
    pairs = [("good film", "the movie was fun"), ("bad", "dull")]  # 2+4+3 and 1+1+3 tokens
    assert truncated(tokenizer, pairs, max_length=8) == 1

"""Which checkpoints already have the head a task needs, and the head load_classifier builds."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import BertConfig

from kdedge.hf import has_matching_head, load_classifier

SCORE = {0: "score"}


def _config(num_labels: int, **extra: object) -> BertConfig:
    return BertConfig(architectures=["BertForSequenceClassification"], num_labels=num_labels, **extra)


def test_a_one_output_regression_head_matches_whatever_its_label_name() -> None:
    assert has_matching_head(_config(1), SCORE)  # e.g. a hub STS-B model: {0: "LABEL_0"}
    assert has_matching_head(_config(1, problem_type="regression"), SCORE)
    assert not has_matching_head(_config(2), SCORE)
    assert not has_matching_head(_config(1, problem_type="single_label_classification"), SCORE)
    assert not has_matching_head(BertConfig(architectures=["BertModel"], num_labels=1), SCORE)
    assert not has_matching_head(_config(1), {0: "neg", 1: "pos"})


def test_a_regression_head_is_built_on_a_classifier_and_then_matches(tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    model, tokenizer, matched = load_classifier(str(tiny_model_dir), SCORE, revision=None,
                                                trust_remote_code=False)
    assert not matched  # the tiny model classifies into two labels
    assert model.classifier.out_features == 1 and model.config.problem_type == "regression"
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, _, matched = load_classifier(str(tmp_path), SCORE, revision=None, trust_remote_code=False)
    assert matched and again.config.id2label == SCORE


def test_a_saved_tokenizer_does_not_depend_on_what_it_last_encoded(tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    """A fast tokenizer writes the padding and truncation of its last call into tokenizer.json,
    so a run resumed after its last batch would ship another file than an uninterrupted one."""
    from transformers import AutoTokenizer

    from kdedge.hf import save_tokenizer

    used = AutoTokenizer.from_pretrained(tiny_model_dir)
    used(["good film", "bad"], padding=True, truncation=True, max_length=8)
    save_tokenizer(used, tmp_path / "used")
    save_tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "fresh")
    saved = json.loads((tmp_path / "used" / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    assert ((tmp_path / "used" / "tokenizer.json").read_bytes()
            == (tmp_path / "fresh" / "tokenizer.json").read_bytes())

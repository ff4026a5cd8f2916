"""Vocabulary trimming on a tiny BERT whose WordPiece vocabulary has a full a-z alphabet."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kdedge.errors import KdedgeError
from kdedge.evaluate import torch_logits
from kdedge.models import vocabulary
from kdedge.models.students import build_student

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "movie", "was", "good", "bad", "play", "##ing", "##er", "great", "plot", "dull",
         "story", "actor", "fun", "never", "boring", "cast", "!", "."]
LETTERS = list(string.ascii_lowercase)
VOCAB = SPECIALS + WORDS + LETTERS + [f"##{c}" for c in LETTERS]
TRAIN = ["the movie was good", "the plot was dull", "great fun !", "the actors", "playing"]


def write_teacher(folder: Path, pieces: list[str] = VOCAB) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(pieces) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_teacher(tmp_path_factory.mktemp("alphabet-bert"))


@pytest.fixture
def teacher(teacher_dir: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()


@pytest.fixture
def tokenizer(teacher_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(teacher_dir)


def test_kept_pieces_are_specials_single_characters_and_used_pieces(tokenizer) -> None:
    keep = vocabulary.kept_ids(tokenizer, TRAIN)
    kept = {VOCAB[i] for i in keep}
    used = {"the", "movie", "was", "good", "plot", "dull", "great", "fun", "!", "actor", "##s", "play",
            "##ing"}
    assert kept == set(SPECIALS) | set(LETTERS) | {f"##{c}" for c in LETTERS} | used | {"."}
    assert keep == sorted(keep) and len(keep) == 5 + 52 + 2 + 11  # "!" and "." are single characters
    assert vocabulary.kept_ids(tokenizer, [("the movie", "bad")]) == sorted(
        set(range(5)) | {VOCAB.index(p) for p in ("the", "movie", "bad")}
        | set(range(len(SPECIALS) + len(WORDS), len(VOCAB))) | {VOCAB.index("!"), VOCAB.index(".")})


def test_a_size_keeps_the_most_frequent_used_pieces(tokenizer) -> None:
    keep = vocabulary.kept_ids(tokenizer, TRAIN, size=5 + 54 + 2)
    assert {VOCAB[i] for i in keep} - set(SPECIALS) - set(LETTERS) - {f"##{c}" for c in LETTERS} - {
        "!", "."} == {"the", "was"}  # 3 and 2 occurrences; every other piece once
    with pytest.raises(KdedgeError, match=r"^distill.vocabulary 40 is smaller than the 59 special and "
                                          r"single-character pieces every trimmed vocabulary keeps; use a "
                                          r"size of at least 59, or trim.$"):
        vocabulary.kept_ids(tokenizer, TRAIN, size=40)


def test_trimmed_tokenizer_splits_kept_texts_as_the_full_one(tokenizer) -> None:
    keep = vocabulary.kept_ids(tokenizer, TRAIN)
    trimmed = vocabulary.trimmed_tokenizer(tokenizer, keep)
    new_id = {old: new for new, old in enumerate(keep)}
    held_out = ["The actors was great fun!", "dull movie . good plot", "playing the good movie"]
    for text in [*TRAIN, *held_out]:
        full = tokenizer(text)["input_ids"]
        assert set(full) <= set(keep), text  # every piece of these texts is kept
        assert trimmed(text)["input_ids"] == [new_id[i] for i in full]
        assert trimmed.tokenize(text) == tokenizer.tokenize(text)
    pair = trimmed("the movie", "was good")
    assert pair["input_ids"] == [new_id[i] for i in tokenizer("the movie", "was good")["input_ids"]]
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert (trimmed.pad_token_id, trimmed.unk_token_id, trimmed.cls_token_id, trimmed.sep_token_id,
            trimmed.mask_token_id) == (0, 1, 2, 3, 4)
    assert len(trimmed) == len(keep) and trimmed.convert_ids_to_tokens(5) == "the"


def test_trimmed_tokenizer_never_emits_unk_for_the_kept_alphabet(tokenizer) -> None:
    trimmed = vocabulary.trimmed_tokenizer(tokenizer, vocabulary.kept_ids(tokenizer, ["the movie"]))
    assert trimmed.tokenize("boring story") == ["b", "##o", "##r", "##i", "##n", "##g", "s", "##t",
                                                  "##o", "##r", "##y"]  # their pieces were dropped
    rng = random.Random(0)
    for _ in range(200):
        text = " ".join("".join(rng.choices(LETTERS, k=rng.randint(1, 12))) for _ in range(5))
        ids = trimmed(text)["input_ids"]
        assert trimmed.unk_token_id not in ids, text
        assert trimmed.decode(ids, skip_special_tokens=True) == text
    assert trimmed.tokenize("the é") == ["the", "e"]  # accents stripped, as the full tokenizer does
    assert tokenizer.tokenize("the ü%") == ["the", "u", "[UNK]"]  # outside the teacher's alphabet
    assert trimmed.tokenize("the ü%") == ["the", "u", "[UNK]"]


@pytest.mark.parametrize("spec", ["1", "bilstm:hidden_size=8"])
def test_the_trimmed_student_computes_what_the_untrimmed_one_did(teacher, tokenizer, spec: str) -> None:
    texts = ["the movie was good !", "the plot was dull", "great fun"]
    pairs = [("the actors", "playing"), ("great fun", "the plot")]
    student, _ = build_student(spec, teacher)
    before = [torch_logits(student, tokenizer, batch, 16) for batch in (texts, pairs)]
    trimmed_tokenizer, info = vocabulary.apply("trim", student, tokenizer, TRAIN)
    assert info == {"vocabulary": "trim", "size": 70, "teacher_size": len(VOCAB)}
    assert student.get_input_embeddings().weight.shape[0] == 70 == student.config.vocab_size
    for batch, expected in zip((texts, pairs), before, strict=True):
        np.testing.assert_allclose(torch_logits(student, trimmed_tokenizer, batch, 16), expected,
                                   atol=1e-6)


def test_the_trimmed_student_saves_and_reloads_with_its_tokenizer(teacher, tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.hf import save_verified

    student, _ = build_student("1", teacher)
    trimmed, _ = vocabulary.apply("64", student, tokenizer, TRAIN)
    assert save_verified(student, trimmed, tmp_path, TRAIN, 16) <= 1e-5
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len((tmp_path / "vocab.txt").read_text().splitlines()) == 64 == len(reloaded)
    assert reloaded("the movie was good")["input_ids"] == trimmed("the movie was good")["input_ids"]
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.vocab_size == 64 and model.config.pad_token_id == 0


def test_full_keeps_everything_and_bad_settings_are_refused(teacher, tokenizer, teacher_dir: Path) -> None:
    student, _ = build_student("1", teacher)
    same, info = vocabulary.apply("full", student, tokenizer, TRAIN)
    assert same is tokenizer and info == {"vocabulary": "full", "size": len(VOCAB)}
    assert student.config.vocab_size == len(VOCAB)
    with pytest.raises(KdedgeError, match=r"^distill.vocabulary 'tiny' is not valid; use full, trim or a "
                                          r"vocabulary size such as 12000.$"):
        vocabulary.apply("tiny", student, tokenizer, TRAIN)
    student.set_input_embeddings(torch.nn.Embedding(10, 32))
    with pytest.raises(KdedgeError, match=r"^distill.vocabulary=trim needs a student that reads the "
                                          r"teacher's tokenizer \(76 pieces\); this student has its own"):
        vocabulary.apply("trim", student, tokenizer, TRAIN)


def test_the_config_takes_full_trim_or_a_size() -> None:
    from kdedge.config import DistillConfig

    assert DistillConfig().vocabulary == "full"
    assert DistillConfig(vocabulary=12000).vocabulary == "12000"
    assert DistillConfig(vocabulary="trim").vocabulary == "trim"
    with pytest.raises(ValueError, match=r"distill\.vocabulary .0. is not valid"):
        DistillConfig(vocabulary=0)


def test_a_trimmed_student_ships_its_tokenizer_through_export_and_bundle(
        tiny_csv: Path, tmp_path: Path) -> None:
    import json

    from conftest import VOCAB as TOY_VOCAB
    from test_pipeline import manifest, run_fresh, tiny_config

    from kdedge import pipeline
    from kdedge.artifacts import STUDENT_DIR
    from kdedge.bundle.predict import Predictor

    unused = ["zebra", "opera", "##ness", "castle"]  # pieces no toy text uses
    teacher_dir = tmp_path / "teacher"
    toy_pieces = TOY_VOCAB + [c for c in LETTERS if c not in TOY_VOCAB] + [f"##{c}" for c in LETTERS]
    write_teacher(teacher_dir, toy_pieces + unused)
    cfg = tiny_config(tiny_csv, teacher_dir, tmp_path / "run", **{"distill.vocabulary": "trim",
                                                                  "bundle.artifact": "student-onnx"})
    run_dir = run_fresh(cfg)
    student = manifest(run_dir, "distill").metrics["student"]
    assert student["vocabulary"] == {"vocabulary": "trim", "size": len(toy_pieces),
                                     "teacher_size": len(toy_pieces) + len(unused)}
    assert manifest(run_dir, "export").metrics["models"]["student"]["parity"]["max_abs_diff"] <= 1e-4
    bundle = run_dir / pipeline.stage_dirname("bundle") / "bundle"
    shipped = json.loads((bundle / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(shipped) == len(toy_pieces) and "zebra" not in shipped
    from transformers import AutoTokenizer

    trimmed = AutoTokenizer.from_pretrained(run_dir / pipeline.stage_dirname("distill") / STUDENT_DIR)
    predictor = Predictor(bundle)
    text = "the movie was zebra great"
    assert predictor._encode([text])["input_ids"].tolist() == [trimmed(text)["input_ids"]]
    assert manifest(run_dir, "distill").metrics["test"]["accuracy"] >= 0.9

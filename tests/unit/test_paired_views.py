"""Paired views (data.teacher_text_column): the teacher reads one column, the student another.

The noise that makes the noisy demo, the data stage keeping both views row for row, the
teacher-output cache computed on the teacher's view, the refusals, and the whole chain on a
tiny teacher: the teacher scored on its view, the student trained, exported, quantized and
bundled on its own, the report saying which column each read.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import toy_rows

from kdedge.config import AugmentConfig, DataConfig, build_config
from kdedge.data import noise
from kdedge.data.dataset import TaskSplit, load_task, load_unlabeled
from kdedge.data.stage import _select, prepare
from kdedge.distill import augment
from kdedge.errors import KdedgeError
from kdedge.evaluate import classification_metrics, torch_logits
from kdedge.training import teacher_cache

TEXT = ("The film is a triumph of style over substance, and their cast knows it: every scene "
        "looks lovely, but the story would not survive a second viewing. Still, it's fun!")


def _normalised(text: str, keep: noise.Noise) -> str:
    """What corrupt() does before its letter edits (case and punctuation only)."""
    text = text.lower() if keep.lowercase else text
    return " ".join(re.sub(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]", " ",
                           text).split())


# --- the noise ---------------------------------------------------------------------------------


def test_noise_is_deterministic_and_seeded() -> None:
    assert noise.corrupt(TEXT) == noise.corrupt(TEXT)
    assert noise.corrupt(TEXT) != noise.corrupt(TEXT, noise.Noise(seed=1))
    assert noise.corrupt(TEXT) == noise.corrupt(TEXT, noise.Noise(seed=noise.NOISE_SEED))
    noisy = noise.corrupt(TEXT)
    assert noisy == noisy.lower() and not set(",:.!") & set(noisy)  # ASR-like: no case, no marks
    # a row's corruption depends on its text alone, not on where it stands in the table
    table = noise.noisy_table(pd.DataFrame({"text": ["b text", TEXT, "a text"], "label": [0, 1, 0]}))
    reordered = noise.noisy_table(pd.DataFrame({"text": [TEXT, "a text"], "label": [1, 0]}))
    assert table["text"][1] == reordered["text"][0] == noisy
    assert table["clean"].tolist() == ["b text", TEXT, "a text"]


def test_noise_edits_a_known_share_of_letters() -> None:
    only = noise.Noise(char_rate=0.1, word_rate=0.0, edits=("neighbour",))  # one letter each
    clean = _normalised(TEXT, only)
    letters = sum(c.isalpha() for c in clean)
    noisy, count = noise.corrupt_counted(TEXT, only)
    assert letters == 128 and count == round(0.1 * letters) == 13
    assert len(noisy) == len(clean)
    assert sum(a != b for a, b in zip(clean, noisy, strict=True)) == 13  # exactly those letters
    # every edit kind: the words with a common confusion swapped, about 8% of letters touched
    rows = [r["sentence"] for r in toy_rows(200)]
    counted = [noise.corrupt_counted(t) for t in rows]
    share = sum(n for _, n in counted) / sum(sum(c.isalpha() for c in t) for t in rows)
    assert share == pytest.approx(0.08, abs=0.005)
    assert noise.corrupt("their film", noise.Noise(char_rate=0.0, word_rate=1.0)) == "there flim"


# --- the data stage ----------------------------------------------------------------------------


def _paired_csv(folder: Path, count: int = 200) -> tuple[Path, dict[str, str]]:
    """A toy CSV whose `sentence` is the noisy view of its `clean` column; noisy -> clean."""
    rows = pd.DataFrame(toy_rows(count, seed=3))
    rows = rows.drop_duplicates("sentence").reset_index(drop=True)
    table = noise.noisy_table(rows.rename(columns={"sentence": "text"}))
    table = table.rename(columns={"text": "sentence"})
    table = table.drop_duplicates("sentence").reset_index(drop=True)
    path = folder / "paired.csv"
    table.to_csv(path, index=False)
    return path, dict(zip(table["sentence"], table["clean"], strict=True))


def test_the_data_stage_keeps_both_views_row_for_row(tmp_path: Path) -> None:
    path, clean_of = _paired_csv(tmp_path)
    cfg = DataConfig(source=str(path), text_columns=("sentence",), label_column="sentiment",
                     teacher_text_column="clean", max_train_samples=100)
    metrics = prepare(cfg, 0, tmp_path)
    assert metrics["views"] == {"teacher": "clean", "student": "sentence"}
    assert json.loads((tmp_path / "labels.json").read_text())["views"] == metrics["views"]
    task = load_task(tmp_path)
    assert task.views == metrics["views"]
    teacher = task.view("teacher")
    assert task.view("student") is task
    for name, split in task.splits.items():
        assert split.teacher_texts == [clean_of[t] for t in split.texts]  # split together
        assert teacher.splits[name].texts == split.teacher_texts
        assert np.array_equal(teacher.splits[name].labels, split.labels)
        assert split.texts != split.teacher_texts
    unused = load_unlabeled(tmp_path)
    assert len(unused) == metrics["unused_unlabeled"] > 0
    assert load_unlabeled(tmp_path, "teacher") == [clean_of[t] for t in unused]


def test_without_paired_views_the_teacher_reads_the_students_texts(tmp_path: Path) -> None:
    path, _ = _paired_csv(tmp_path)
    prepare(DataConfig(source=str(path), text_columns=("sentence",), label_column="sentiment"),
            0, tmp_path)
    task = load_task(tmp_path)
    assert task.views is None and "views" not in json.loads((tmp_path / "labels.json").read_text())
    split = task.splits["train"]
    assert split.teacher_texts is None and split.teacher_view is split.texts


def test_a_missing_teacher_column_is_named_with_the_fix() -> None:
    table = pd.DataFrame({"text": ["x"], "transcript": ["y"], "label": ["a"]})
    cfg = DataConfig(source="x.csv", teacher_text_column="clean")
    with pytest.raises(KdedgeError, match=r"^Column 'clean' is not in the data; available columns: "
                                          r"text, transcript, label\. Name the right one with "
                                          r"--teacher-text-column\.$"):
        _select(table, cfg, "all")


def test_rows_missing_either_view_are_dropped() -> None:
    table = pd.DataFrame({"text": ["a", "b", "c"], "clean": ["A", None, " "], "label": ["x"] * 3})
    kept, dropped = _select(table, DataConfig(source="x", teacher_text_column="clean"), "all")
    assert kept.to_dict("list") == {"text": ["a"], "teacher_text": ["A"], "label": ["x"]}
    assert dropped == {"missing": 1, "empty": 1}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"data.teacher_text_column": "text"},
     "Invalid value .* for data: teacher_text_column 'text' is a student's text column; name the "
     "column of the teacher's own view"),
    ({"data.teacher_text_column": "clean", "data.task": "seq2seq", "distill.recipe": "word-kd"},
     r"^Invalid config: data.teacher_text_column \(paired views\) does not fit data.task seq2seq: "
     r"only a classification or regression teacher reads another view of the student's text; "
     r"unset it\.$"),
    ({"data.teacher_text_column": "clean", "data.task": "embedding", "distill.student": "2"},
     "does not fit data.task embedding"),
    ({"distill.augment.teacher_column": "clean"},
     "distill.augment.teacher_column names the teacher's view of the unlabelled file, which only "
     "paired views read; set data.teacher_text_column or unset it"),
])
def test_combinations_that_cannot_work_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(KdedgeError, match=message):
        build_config(overrides={"data.source": "x.csv", **overrides})


def test_the_noisy_demo_reads_the_clean_column_for_the_teacher() -> None:
    cfg = build_config(overrides={"data.source": "demo-noisy"})
    assert cfg.data.teacher_text_column == "clean" and cfg.data.text_columns == ("text",)
    assert cfg.data.max_train_samples == 4000  # the review demo's sizes
    assert build_config(overrides={"data.source": "demo-noisy", "data.teacher_text_column": "x",
                                   }).data.teacher_text_column == "x"
    from kdedge.data.loaders import columns

    assert columns(cfg.data) == {"all": ["text", "clean", "label"]}


# --- the teacher and its cache -----------------------------------------------------------------


def _tiny(folder: Path) -> tuple:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (AutoModelForSequenceClassification.from_pretrained(folder).eval(),
            AutoTokenizer.from_pretrained(folder))


def test_the_teacher_cache_is_computed_on_the_teachers_view(tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    teacher, tokenizer = _tiny(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():  # a head whose outputs differ per text (a random one barely moves)
        teacher.classifier.weight.normal_(0.0, 20.0)
    rows = toy_rows(24, seed=5)
    clean = [r["sentence"] for r in rows]
    noisy = [noise.corrupt(t, noise.Noise(char_rate=0.3)) for t in clean]
    split = TaskSplit(noisy, np.zeros(len(rows), dtype=np.int64), teacher_texts=clean)
    folder = teacher_cache.cache_folder(["w"], split.teacher_view, 32)
    assert folder == teacher_cache.cache_folder(["w"], clean, 32)
    cached, hit = teacher_cache.teacher_outputs(folder, teacher, tokenizer, split, 32, batch_size=8)
    on_clean = torch.as_tensor(torch_logits(teacher, tokenizer, clean, 32))
    on_noisy = torch.as_tensor(torch_logits(teacher, tokenizer, noisy, 32))
    assert not hit and torch.allclose(cached["logits"], on_clean, atol=1e-4)
    assert (cached["logits"] - on_noisy).abs().max() > 0.1  # the views differ to the teacher
    enc = tokenizer(clean, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        first = teacher(**enc, output_hidden_states=True).hidden_states[-1][:, 0]
    assert torch.allclose(cached["sentence_cls"], first, atol=1e-5)  # two-stage's vectors too


# --- augmentation --------------------------------------------------------------------------------


def test_augmented_rows_carry_the_teachers_view(tmp_path: Path) -> None:
    train = TaskSplit(["a b c d", "e f g h"], np.array([0, 1]), teacher_texts=["A B", "C D"])
    pd.DataFrame({"text": ["u v"], "teacher_text": ["U V"]}).to_parquet(tmp_path / "unused.parquet")
    out = augment.augmented(train, AugmentConfig(unlabeled="unused", mask_copies=1, mask_prob=0.5),
                            tmp_path, "[M]", seed=1, teacher_column="clean")
    assert out.texts[:3] == ["a b c d", "e f g h", "u v"] and "[M]" in " ".join(out.texts[3:])
    # the unused row's own view; a masked copy's teacher reads its row's view, unmasked
    assert out.teacher_texts == ["A B", "C D", "U V", "A B", "C D"]
    assert augment.count_added(out) == 3
    cached = {"logits": torch.tensor([[0.0, 9.0], [9.0, 0.0], [0.0, 0.1], [0.0, 9.0], [0.1, 0.0]])}
    kept, _ = augment.keep_confident(out, cached, AugmentConfig(mask_copies=1, min_confidence=0.9))
    assert kept.texts[2:] == [out.texts[3]] and kept.teacher_texts == ["A B", "C D", "A B"]


def test_an_unlabelled_file_without_the_teacher_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    pd.DataFrame({"text": ["u v", "w x"]}).to_csv(path, index=False)
    train = TaskSplit(["a b"], np.array([0]), teacher_texts=["A B"])
    with pytest.raises(KdedgeError, match=r"^Column 'clean' \(the teacher's view under paired views: "
                                          r"data.teacher_text_column\) is not in .*pool.csv; "
                                          r"available columns: text\. Set "
                                          r"distill.augment.teacher_column\.$"):
        augment.augmented(train, AugmentConfig(unlabeled=str(path)), tmp_path, "[M]", seed=0,
                          teacher_column="clean")
    pd.DataFrame({"text": ["u v", "w x"], "gold": ["U V", "W X"]}).to_csv(path, index=False)
    out = augment.augmented(train, AugmentConfig(unlabeled=str(path), teacher_column="gold"),
                            tmp_path, "[M]", seed=0, teacher_column="clean")
    assert out.texts == ["a b", "u v", "w x"] and out.teacher_texts == ["A B", "U V", "W X"]


# --- the whole chain -----------------------------------------------------------------------------


def test_the_chain_trains_each_model_on_its_own_view(tiny_encoder_dir: Path,
                                                     tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge import pipeline
    from kdedge.artifacts import MODEL_DIR, STUDENT_DIR, Manifest
    from kdedge.evaluate import onnx_logits

    path, clean_of = _paired_csv(tmp_path, 300)
    cfg = build_config(overrides={
        "data.source": str(path), "data.text_columns": ["sentence"],
        "data.label_column": "sentiment", "data.teacher_text_column": "clean",
        "data.max_length": 32, "teacher.model": str(tiny_encoder_dir),
        "teacher.training.epochs": 4, "teacher.training.learning_rate": 3e-3,
        "teacher.training.batch_size": 16, "teacher.training.patience": None,
        "distill.student": "2", "distill.recipe": "two-stage",
        "distill.two_stage.stage2_epochs": 2, "distill.training.learning_rate": 3e-3,
        "distill.training.batch_size": 16, "bench.models": ["teacher-onnx", "student-int8"],
        "bench.batch_sizes": [1], "bench.warmup_runs": 0, "bench.min_runs": 1,
        "bench.min_duration_s": 0, "bench.threads": 1, "run.threads": 1,
        "bundle.web": False, "bundle.mobile": False, "run.out": str(tmp_path / "run")})
    run_dir = cfg.run.out
    pipeline.prepare_run(cfg, run_dir, resume=False, force=True)
    pipeline.run(cfg, run_dir)

    def stage(name: str) -> Path:
        return run_dir / pipeline.stage_dirname(name)

    task = load_task(stage("data"))
    test = task.splits["test"]
    assert test.teacher_texts == [clean_of[t] for t in test.texts]
    teacher_dir, student_dir = stage("teacher") / MODEL_DIR, stage("distill") / STUDENT_DIR
    teacher, tokenizer = _tiny(teacher_dir)
    student, student_tokenizer = _tiny(student_dir)
    # the teacher is scored on the clean column, the student on the noisy one
    teacher_metrics = Manifest.load(stage("teacher")).metrics["test"]
    assert teacher_metrics == classification_metrics(
        torch_logits(teacher, tokenizer, test.teacher_texts, 32), test.labels, 2)
    distill_metrics = Manifest.load(stage("distill")).metrics["test"]
    assert distill_metrics == classification_metrics(
        torch_logits(student, student_tokenizer, test.texts, 32), test.labels, 2)
    exported = Manifest.load(stage("export")).metrics["models"]
    assert exported["teacher"]["test"]["accuracy"] == teacher_metrics["accuracy"]
    assert exported["student"]["test"]["accuracy"] == distill_metrics["accuracy"]
    int8 = Manifest.load(stage("quantize")).metrics["models"]["student-int8"]
    quantized = stage("quantize") / "student-int8"
    ours = onnx_logits(quantized, AutoTokenizer.from_pretrained(quantized), test.texts, 32,
                       batch_size=1)
    assert int8["test"]["accuracy"] == classification_metrics(ours, test.labels, 2)["accuracy"]
    report = json.loads((stage("report") / "report.json").read_text())
    assert report["data"]["views"] == {"teacher": "clean", "student": "sentence"}
    assert any(n.startswith("Paired views: the teacher read column 'clean' and the students "
                            "column 'sentence'") for n in report["notes"])
    assert "- teacher reads: column clean\n- student reads: column sentence" in \
        (stage("report") / "report.md").read_text()
    bundle = stage("bundle") / "bundle"
    assert json.loads((bundle / "labels.json").read_text())["views"]["student"] == "sentence"
    samples = (bundle / "sample_texts.txt").read_text().splitlines()
    assert samples == test.texts[:len(samples)]  # the shipped model is tried on noisy text
    assert "the students column `sentence`" in (bundle / "README.md").read_text()

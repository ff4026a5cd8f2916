from pathlib import Path

import pytest
import torch

from kdedge.errors import KdedgeError
from kdedge.models.students import build_student, evenly_spaced, parse_spec


def test_evenly_spaced_keeps_the_top_layer() -> None:
    assert evenly_spaced(6, 3) == (1, 3, 5)
    assert evenly_spaced(6, 2) == (2, 5)
    assert evenly_spaced(12, 4) == (2, 5, 8, 11)
    assert evenly_spaced(6, 6) == (0, 1, 2, 3, 4, 5)


def test_parse_spec() -> None:
    assert parse_spec("3", 6).layers == (1, 3, 5)
    assert parse_spec("0, 2,4", 6).layers == (0, 2, 4)
    assert parse_spec("some/hub-id", 6).builder == "pretrained"
    with pytest.raises(KdedgeError, match="Student layer count 7 must be between 1 and the teacher's 6"):
        parse_spec("7", 6)
    with pytest.raises(KdedgeError, match="must be distinct teacher layer indices below 6"):
        parse_spec("1,6", 6)


def test_student_copies_the_chosen_teacher_layers(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    student, info = build_student("1", teacher)
    assert info["layers"] == [1] and info["num_layers"] == 1
    assert student.config.num_hidden_layers == 1
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for key, value in student_state.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, teacher_state[source]), key
    assert info["parameters"] < sum(p.numel() for p in teacher.parameters())
    assert teacher.config.num_hidden_layers == 2  # the teacher is left untouched


def test_narrower_transformer_takes_leading_slices_of_teacher_layers(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    student, info = build_student("transformer:layers=1,hidden_size=16,heads=2", teacher)
    assert (info["num_layers"], info["hidden_size"]) == (1, 16)
    assert student.config.intermediate_size == 64 and teacher.config.hidden_size == 32
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"],
                       t["bert.embeddings.word_embeddings.weight"][:, :16])
    assert torch.equal(s["bert.encoder.layer.0.attention.self.query.weight"],  # from teacher layer 1
                       t["bert.encoder.layer.1.attention.self.query.weight"][:16, :16])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"][:, :16])
    assert student(**{"input_ids": torch.tensor([[2, 5, 3]])}).logits.shape == (1, 2)
    random_init, _ = build_student("transformer:layers=1,hidden_size=16,heads=2,init=random", teacher)
    assert not torch.equal(random_init.state_dict()["bert.embeddings.word_embeddings.weight"],
                           s["bert.embeddings.word_embeddings.weight"])


def test_narrower_transformer_refuses_bad_shapes(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with pytest.raises(KdedgeError, match="hidden_size 30 is not divisible by heads 4"):
        build_student("transformer:hidden_size=30,heads=4", teacher)
    with pytest.raises(KdedgeError, match="Student layers 5 must be between 1 and the teacher's 2"):
        build_student("transformer:layers=5", teacher)
    with pytest.raises(KdedgeError, match="Student option 'init=copy' is not valid for transformer"):
        build_student("transformer:init=copy", teacher)

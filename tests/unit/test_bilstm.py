"""The BiRNN student: shapes, padding invariance, reload, teacher embeddings, torch.onnx export
parity, dynamic int8 quantization, and that the shared training loop trains it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import toy_rows

from kdedge.export.torch_export import (
    TORCH_EXPORT_MODEL_TYPES,
    export_torch_onnx,
    graph_inputs,
    needs_torch_export,
)
from kdedge.models.birnn import MODEL_TYPE, BiRNNConfig, build_birnn, project_embeddings
from kdedge.runtime import ONNX_FILE, ort_feed, ort_session

TEXTS = ["good movie", "the film was very dull and the plot is flat", "fun",
         "the cast is smart and it was superb fun", "it was a weak story"]


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _student(teacher: Any, cell: str = "lstm", seed: int = 0, **kwargs: Any) -> Any:
    torch.manual_seed(seed)
    options = {"cell": cell, "embedding_dim": 16, "hidden_size": 12, "num_layers": 2,
               "dropout": 0.1, "init_embeddings": False, **kwargs}
    return build_birnn(teacher, **options).eval()


def _logits(model: Any, tokenizer: Any, texts: list[str], **padding: Any) -> torch.Tensor:
    enc = tokenizer(texts, return_tensors="pt", padding=padding.pop("padding", True), **padding)
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_builder_shapes_and_config(teacher: Any, tokenizer: Any, cell: str) -> None:
    student = _student(teacher, cell)
    config = student.config
    assert config.model_type == MODEL_TYPE
    assert (config.vocab_size, config.num_labels, config.pad_token_id) == (33, 2, 0)
    assert config.id2label == teacher.config.id2label
    assert config.num_hidden_layers == 2  # what build_student reports for every student
    assert student.embeddings.weight.shape == (33, 16)
    assert student.rnn.num_layers == 2 and student.rnn.hidden_size == 12 and student.rnn.bidirectional
    enc = tokenizer(TEXTS[:3], return_tensors="pt", padding=True)
    out = student(**enc, labels=torch.tensor([1, 0, 1]))
    assert out.logits.shape == (3, 2)
    assert out.loss is not None and out.loss.ndim == 0
    # LSTM has 4 gates, GRU 3: 2 layers x 2 directions of (input + recurrent weights + 2 biases)
    gates = 4 if cell == "lstm" else 3
    rnn_params = sum(2 * gates * 12 * (width + 12 + 2) for width in (16, 24))
    assert sum(p.numel() for p in student.rnn.parameters()) == rnn_params


def test_bad_cell_is_refused(teacher: Any) -> None:
    with pytest.raises(ValueError, match="BiRNN cell 'rnn' is not one of"):
        build_birnn(teacher, cell="rnn")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_does_not_change_logits(teacher: Any, tokenizer: Any, cell: str) -> None:
    student = _student(teacher, cell)
    alone = torch.cat([_logits(student, tokenizer, [text]) for text in TEXTS])
    padded = _logits(student, tokenizer, TEXTS, padding="max_length", max_length=24)
    assert (padded - alone).abs().max().item() <= 1e-6
    # the backward direction must really see the sequence: reversing the tokens changes the output
    reversed_text = " ".join(reversed(TEXTS[1].split()))
    assert (_logits(student, tokenizer, [reversed_text]) - alone[1]).abs().max().item() > 1e-4


def test_hidden_states_for_representation_losses(teacher: Any, tokenizer: Any) -> None:
    from kdedge.training.outputs import Outputs

    student = _student(teacher)
    enc = tokenizer(TEXTS, return_tensors="pt", padding="max_length", max_length=24)
    with torch.no_grad():
        out = student(**enc, output_hidden_states=True)
        assert student(**enc).hidden_states is None
    embedded, states = out.hidden_states
    assert embedded.shape == (5, 24, 16)
    assert states.shape == (5, 24, student.config.output_size) and student.config.output_size == 24
    assert float(states[enc["attention_mask"] == 0].abs().max()) == 0.0  # padded steps are empty
    mean = Outputs.from_hf(out).sentence_vector("mean", enc["attention_mask"])
    one = tokenizer([TEXTS[1]], return_tensors="pt")
    with torch.no_grad():
        alone = Outputs.from_hf(student(**one, output_hidden_states=True)).sentence_vector(
            "mean", one["attention_mask"])
    assert (mean[1] - alone[0]).abs().max().item() <= 1e-6


def test_left_padding_is_refused(teacher: Any) -> None:
    student = _student(teacher)
    ids = torch.tensor([[0, 0, 2, 9, 3]])
    with pytest.raises(ValueError, match="right-padded"):
        student(input_ids=ids, attention_mask=(ids != 0).long())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_save_and_reload_give_identical_logits(teacher: Any, tokenizer: Any, cell: str,
                                               tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from kdedge.hf import save_verified

    student = _student(teacher, cell)
    assert save_verified(student, tokenizer, tmp_path, TEXTS, 32) == 0.0
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(student) and reloaded.config.cell == cell
    assert torch.equal(_logits(reloaded, tokenizer, TEXTS), _logits(student, tokenizer, TEXTS))


def test_embeddings_start_from_the_teacher(teacher: Any) -> None:
    table = teacher.get_input_embeddings().weight.detach()
    copied = build_birnn(teacher, embedding_dim=None, init_embeddings=True)
    assert copied.config.embedding_dim == 32
    assert torch.equal(copied.embeddings.weight, table)
    narrow = build_birnn(teacher, embedding_dim=8, init_embeddings=True).embeddings.weight.detach()
    centered = table - table.mean(0)
    # the top-8 principal components keep more variance than any other 8-d linear map, e.g. the
    # first 8 raw coordinates
    assert narrow.var(0).sum() > centered[:, :8].var(0).sum()
    assert abs(narrow.var(0).sum().item() - torch.linalg.svdvals(centered)[:8].pow(2).sum().item()
               / (table.shape[0] - 1)) < 1e-4
    wide = project_embeddings(table, 48)
    assert wide.shape == (33, 48)
    assert torch.allclose(wide @ wide.T, table @ table.T, atol=1e-5)  # inner products kept
    random = build_birnn(teacher, embedding_dim=32, init_embeddings=False)
    assert not torch.equal(random.embeddings.weight, table)


@pytest.fixture(scope="module")
def exported(teacher: Any, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[Path, Path]:
    source = tmp_path_factory.mktemp("birnn-student")
    student = _student(teacher, "lstm", seed=1)
    student.save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = tmp_path_factory.mktemp("birnn-onnx")
    export_torch_onnx(source, out, opset=18)
    return source, out


def test_export_layout_and_inputs(exported: tuple[Path, Path], tiny_model_dir: Path) -> None:
    source, out = exported
    names = {p.name for p in out.iterdir()}
    assert {ONNX_FILE, "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= names
    assert not any(name.endswith(".tmp") for name in names)
    assert graph_inputs(out / ONNX_FILE) == ["input_ids", "attention_mask"]  # token_type_ids unused
    assert needs_torch_export(source) and not needs_torch_export(tiny_model_dir)
    assert MODEL_TYPE in TORCH_EXPORT_MODEL_TYPES


def test_export_parity_with_onnxruntime(exported: tuple[Path, Path], tokenizer: Any) -> None:
    from transformers import AutoModelForSequenceClassification

    source, out = exported
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    session = ort_session(out)
    for texts, padding in (([TEXTS[0]], {}), (TEXTS[:4], {"padding": "max_length", "max_length": 20})):
        expected = _logits(model, tokenizer, texts, **dict(padding)).numpy()
        enc = tokenizer(texts, return_tensors="np", padding=padding.get("padding", True),
                        max_length=padding.get("max_length"))
        got = session.run(["logits"], ort_feed(session, enc))[0]
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= 1e-4


def test_exported_model_quantizes_to_int8(exported: tuple[Path, Path], tokenizer: Any,
                                          tmp_path: Path) -> None:
    import onnx
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    _, out = exported
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    ORTQuantizer.from_pretrained(out, file_name=ONNX_FILE).quantize(save_dir=tmp_path,
                                                                    quantization_config=qconfig)
    int8 = tmp_path / "model_quantized.onnx"
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2  # both layers' LSTM weights are int8
    assert "LSTM" not in ops and ops.count("MatMulInteger") >= 2
    texts = [row["sentence"] for row in toy_rows(32, seed=3)]
    enc = tokenizer(texts, return_tensors="np", padding=True)
    fp32, q8 = ort_session(out), ort_session(int8)
    expected = fp32.run(["logits"], ort_feed(fp32, enc))[0]
    got = q8.run(["logits"], ort_feed(q8, enc))[0]
    assert float(np.abs(got - expected).max()) < 0.05
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9
    assert int8.stat().st_size < (out / ONNX_FILE).stat().st_size


def test_shared_training_loop_lowers_the_loss(teacher: Any, tokenizer: Any) -> None:
    import torch.nn.functional as F

    from kdedge.config import TrainingConfig
    from kdedge.data.dataset import TaskSplit
    from kdedge.distill import losses
    from kdedge.training.trainer import train

    rows = toy_rows(64, seed=1)
    split = TaskSplit([row["sentence"] for row in rows],
                      np.array([0 if row["sentiment"] == "pos" else 1 for row in rows], dtype=np.int64))
    student = _student(teacher, "lstm", seed=2, num_layers=1, dropout=0.0)

    def mean_loss() -> float:
        logits = _logits(student.eval(), tokenizer, split.texts)
        return float(F.cross_entropy(logits, torch.as_tensor(split.labels)))

    before = mean_loss()
    cfg = TrainingConfig(epochs=8, batch_size=16, learning_rate=1e-2, weight_decay=0.0,
                         warmup_ratio=0.0)
    result = train(student, tokenizer, split, losses.build([("ce", 1.0, {})]), teacher=lambda b: None,
                   evaluate=lambda m: -mean_loss(), cfg=cfg, max_length=32, seed=0,
                   description="birnn test")
    after = mean_loss()
    assert after < 0.5 * before
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_config_defaults_round_trip() -> None:
    config = BiRNNConfig(cell="gru", hidden_size=8)
    again = BiRNNConfig.from_dict(config.to_dict())
    assert (again.cell, again.hidden_size, again.attention_dim, again.num_hidden_layers) == ("gru", 8, 8, 1)

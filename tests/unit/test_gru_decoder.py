"""The GRU-decoder seq2seq student of a tiny bert2bert teacher: shapes, loss and gradients,
the teacher's weights it keeps, generate() against a hand-written greedy loop, the
save/load round trip, the two-graph ONNX export and ImitKD's loss on it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kdedge.bundle.generate import Generator
from kdedge.distill.generation import IGNORE
from kdedge.export.torch_export import graph_inputs
from kdedge.models.gru_decoder import (
    DECODER_INPUTS,
    DECODER_ONNX,
    ENCODER_INPUTS,
    ENCODER_ONNX,
    MODEL_TYPE,
    GruSeq2SeqConfig,
    GruSeq2SeqModel,
    export_gru_onnx,
    gru_student,
)

SOURCES = ["good film", "the plot was very dull and the cast is flat"]
TARGETS = ["nice", "awful boring story"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path, tokenizer: Any) -> Any:
    from kdedge.models.seq2seq import bert2bert

    torch.manual_seed(0)  # bert2bert draws the decoder's cross-attention
    return bert2bert(tiny_model_dir, tokenizer).eval()


def _student(teacher: Any, seed: int = 0, **kwargs: Any) -> GruSeq2SeqModel:
    torch.manual_seed(seed)
    options = {"encoder_layers": 1, "hidden": 24, "layers": 2, **kwargs}
    return gru_student(teacher, **options).eval()


def _batch(tokenizer: Any, sources: list[str] = SOURCES) -> dict[str, torch.Tensor]:
    batch = dict(tokenizer(sources, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids")
    labels = tokenizer(TARGETS[:len(sources)], padding=True, return_tensors="pt")["input_ids"]
    batch["labels"] = labels.masked_fill(labels == tokenizer.pad_token_id, IGNORE)
    return batch


def _greedy_by_hand(model: GruSeq2SeqModel, batch: dict[str, torch.Tensor], steps: int,
                    eos: int) -> torch.Tensor:
    config = model.config
    tokens = torch.full((len(batch["input_ids"]), 1), config.decoder_start_token_id)
    finished = torch.zeros(len(tokens), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=tokens).logits[:, -1]
            step = logits.argmax(-1).masked_fill(finished, config.pad_token_id)
            tokens = torch.cat([tokens, step[:, None]], dim=1)
            finished |= step == eos
            if finished.all():
                break
    return tokens


def test_shapes_loss_kept_teacher_weights_and_gradients(teacher: Any, tokenizer: Any) -> None:
    student = _student(teacher).train()
    config = student.config
    assert config.model_type == MODEL_TYPE and config.is_encoder_decoder
    assert (config.vocab_size, config.embedding_dim, config.hidden_size, config.num_layers) == (
        33, 32, 24, 2)
    assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    assert config.encoder.num_hidden_layers == 1 and len(student.encoder.encoder.layer) == 1
    # one of two encoder layers kept: the top one; embeddings and LM head copied
    params, theirs = dict(student.named_parameters()), teacher.state_dict()
    copied = {"encoder.encoder.layer.0.attention.self.query.weight":
              "encoder.encoder.layer.1.attention.self.query.weight",
              "encoder.embeddings.word_embeddings.weight":
              "encoder.embeddings.word_embeddings.weight",
              "embed_tokens.weight": "decoder.bert.embeddings.word_embeddings.weight",
              "lm_head.weight": "decoder.cls.predictions.decoder.weight",
              "lm_head.bias": "decoder.cls.predictions.decoder.bias"}
    for mine, source in copied.items():
        assert torch.equal(params[mine], theirs[source]), mine
    assert params["embed_tokens.weight"].data_ptr() != theirs[
        "decoder.bert.embeddings.word_embeddings.weight"].data_ptr()  # a copy, not shared
    size = sum(p.numel() for p in student.parameters())
    assert size < sum(p.numel() for p in teacher.parameters())

    batch = _batch(tokenizer)
    out = student(**batch)
    assert out.logits.shape == (2, batch["labels"].shape[1], 33)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    for name in ("gru.weight_hh_l0", "gru.weight_ih_l1", "attention_keys.weight", "bridge.weight",
                 "encoder.encoder.layer.0.attention.self.query.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name

    # labels alone: the decoder context is the labels shifted right, as in transformers
    student.eval()
    with torch.no_grad():
        shifted = student(**batch).logits
        context = torch.cat([torch.full((2, 1), config.decoder_start_token_id),
                             batch["labels"][:, :-1].clamp(min=0)], dim=1)  # IGNORE -> pad (0)
        explicit = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           decoder_input_ids=context).logits
    torch.testing.assert_close(shifted, explicit, rtol=0, atol=0)

    # a list keeps exactly those layers; the default GRU width is the teacher's (plain dot product)
    lower = gru_student(teacher, encoder_layers=[0])
    assert torch.equal(lower.encoder.encoder.layer[0].attention.self.query.weight,
                       teacher.encoder.encoder.layer[0].attention.self.query.weight)
    assert lower.config.hidden_size == 32 and isinstance(lower.attention_keys, torch.nn.Identity)


def test_attention_ignores_source_padding(teacher: Any, tokenizer: Any) -> None:
    student = _student(teacher)
    alone = tokenizer(["good film"], return_tensors="pt")
    padded = tokenizer(["good film"], padding="max_length", max_length=12, return_tensors="pt")
    padded["input_ids"][0, 5:] = 7  # whatever the padded positions hold
    context = torch.tensor([[2, 9, 14, 3]])
    with torch.no_grad():
        a = student(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"],
                    decoder_input_ids=context).logits
        b = student(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                    decoder_input_ids=context).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_generate_is_the_hand_written_greedy_loop(teacher: Any, tokenizer: Any) -> None:
    student = _student(teacher)
    batch = _batch(tokenizer)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    eos = student.config.eos_token_id
    generated = student.generate(**inputs, max_new_tokens=6, num_beams=1, do_sample=False)
    assert torch.equal(generated, _greedy_by_hand(student, batch, 6, eos))
    # an EOS that row 0 produces at its second step: it stops there and pads after
    early = int(generated[0, 2])
    stopped = student.generate(**inputs, max_new_tokens=6, eos_token_id=early)
    by_hand = _greedy_by_hand(student, batch, 6, early)
    assert torch.equal(stopped, by_hand)
    assert (stopped[0, 3:] == student.config.pad_token_id).all()

    torch.manual_seed(0)
    sampled = student.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5, num_beams=1)
    assert sampled.shape[0] == 2 and 2 <= sampled.shape[1] <= 5
    assert (sampled[:, 0] == student.config.decoder_start_token_id).all()


def test_save_and_load_round_trip(teacher: Any, tokenizer: Any, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from kdedge.models import register_auto_classes

    register_auto_classes()  # as whatever loads a saved student does first
    student = _student(teacher)
    student.save_pretrained(tmp_path / "gru")
    assert (tmp_path / "gru" / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path / "gru").model_type == MODEL_TYPE
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "gru").eval()
    assert isinstance(loaded, GruSeq2SeqModel)
    assert loaded.config.encoder.num_hidden_layers == 1
    batch = _batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, student(**batch).logits, rtol=0, atol=0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    assert torch.equal(loaded.generate(**inputs, max_new_tokens=5),
                       student.generate(**inputs, max_new_tokens=5))


def test_a_tied_output_layer_stays_tied_through_save_and_load(tmp_path: Path) -> None:
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)
    config = GruSeq2SeqConfig(encoder=encoder, vocab_size=20, embedding_dim=8, hidden_size=12,
                              tie_word_embeddings=True, pad_token_id=0, decoder_start_token_id=1,
                              eos_token_id=2)
    model = GruSeq2SeqModel(config)
    assert model.lm_head.weight is model.embed_tokens.weight
    model.save_pretrained(tmp_path / "tied")
    loaded = GruSeq2SeqModel.from_pretrained(tmp_path / "tied")
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert torch.equal(loaded.embed_tokens.weight, model.embed_tokens.weight)


def test_onnx_graphs_decode_as_pytorch_does(teacher: Any, tokenizer: Any, tmp_path: Path) -> None:
    import onnxruntime as ort

    student = _student(teacher, seed=1)
    files = export_gru_onnx(student, tmp_path / "onnx")
    assert files == [ENCODER_ONNX, DECODER_ONNX]
    assert graph_inputs(tmp_path / "onnx" / ENCODER_ONNX) == list(ENCODER_INPUTS)
    assert graph_inputs(tmp_path / "onnx" / DECODER_ONNX) == list(DECODER_INPUTS)
    config = student.config
    ids = (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id)
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / DECODER_ONNX))
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / ENCODER_ONNX))
    # two inputs of other batch sizes and lengths than the export's dummy (2 x 7)
    for sources in (SOURCES, ["it was a weak story and the movie is messy", "fun", "superb cast"]):
        enc = tokenizer(sources, padding=True, return_tensors="pt")
        expected = student.generate(input_ids=enc["input_ids"],
                                    attention_mask=enc["attention_mask"], max_new_tokens=6)
        runner = Generator(tmp_path / "onnx", settings=dict(
            zip(("start", "eos", "pad"), ids, strict=True), layout="seq2seq", max_length=None,
            max_new_tokens=6))
        tokens = runner.greedy(enc["input_ids"].numpy(), enc["attention_mask"].numpy())
        beams = runner.beam(enc["input_ids"].numpy(), enc["attention_mask"].numpy(), beams=3)
        by_torch = student.generate(input_ids=enc["input_ids"],
                                    attention_mask=enc["attention_mask"], max_new_tokens=6,
                                    num_beams=3)
        assert [runner._cut(b) for b in beams] == [runner._cut(r[1:]) for r in by_torch.tolist()]
        assert tokens.tolist() == expected.tolist()
        mask = enc["attention_mask"].numpy()
        feed = {"input_ids": enc["input_ids"].numpy(), "attention_mask": mask}
        states, initial = encoder.run(None, feed)
        assert initial.shape == (config.num_layers, len(sources), config.hidden_size)

        context = {"encoder_hidden_states": states, "encoder_attention_mask": mask}
        with torch.no_grad():
            reference = student(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                decoder_input_ids=expected).logits.numpy()
        # the whole prefix at once, and the same prefix one token at a time through the state
        logits, _ = decoder.run(None, {"decoder_input_ids": expected.numpy(),
                                       "decoder_state": initial, **context})
        np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-4)
        state, steps = initial, []
        for position in range(expected.shape[1]):
            step_logits, state = decoder.run(None, {
                "decoder_input_ids": expected.numpy()[:, position:position + 1],
                "decoder_state": state, **context})
            steps.append(step_logits)
        np.testing.assert_allclose(np.concatenate(steps, axis=1), reference, rtol=0, atol=1e-4)


def test_imitation_trains_the_gru(teacher: Any, tokenizer: Any) -> None:
    """The loop's ImitKD step on a GRU student: its rollouts, the teacher's argmax on them."""
    from kdedge.config import build_config
    from kdedge.distill.generation_training import ImitationContexts, TargetSplit, collate, teacher_logits
    from kdedge.distill.losses import build
    from kdedge.models.layouts import layout_for
    from kdedge.training.outputs import Outputs
    from kdedge.training.trainer import model_inputs

    student = _student(teacher).train()
    layout = layout_for(student.config, tokenizer, 32)
    cfg = build_config(overrides={"data.task": "seq2seq", "distill.recipe": "imitkd",
                                  "distill.generation.schedule": "constant",
                                  "distill.generation.beta": 0.0}).distill.generation
    contexts = ImitationContexts(cfg, layout, max_new_tokens=4, seed=0)
    split = TargetSplit(SOURCES, layout.targets(TARGETS, 8))
    batch = contexts(student, collate(layout, split, [0, 1]), 0, 1)
    assert contexts.summary() == {"beta": 0.0, "rollout_share": 1.0} and student.training
    assert all(1 <= len(t) <= 4 for t in batch["targets"])  # the GRU's own greedy output
    loss, _ = build([("imitation_ce", 1.0, {})])(
        Outputs.from_hf(student(**model_inputs(batch))), teacher_logits(teacher)(batch), batch)
    assert math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    grad = student.gru.weight_hh_l0.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())

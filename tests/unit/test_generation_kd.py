"""The generation recipes' building blocks on fixed numbers: beta schedules, rollout rows,
the EOS/padding mask, the (top-k) soft cross-entropy and ImitKD's targets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kdedge.distill.generation import (
    IGNORE,
    imitation_targets,
    mix_probability,
    position_mask,
    rollout_rows,
    shift_right,
    soft_cross_entropy,
)
from kdedge.distill.generation_training import TargetSplit


@pytest.mark.parametrize(("schedule", "step", "kwargs", "expected"), [
    ("exponential", 0, {}, 1.0),
    ("exponential", 50, {}, 0.07071067811865475),  # 200 ** -0.5
    ("exponential", 100, {}, 0.005),  # ends at 1 / base
    ("exponential", 100, {"base": 10}, 0.1),
    ("exponential", 10, {"warmup": 0.2}, 1.0),  # held at 1 during warm-up
    ("exponential", 60, {"warmup": 0.2}, 0.12011244339814311),  # 200 ** -0.4
    ("linear", 25, {"final": 0.1}, 0.775),
    ("linear", 100, {"final": 0.1}, 0.1),
    ("reverse-sigmoid", 0, {}, 0.9999546021312976),
    ("reverse-sigmoid", 50, {}, 0.5),
    ("reverse-sigmoid", 100, {}, 4.5397868702434395e-05),
    ("constant", 70, {"value": 0.5}, 0.5),
    ("exponential", 500, {}, 0.005),  # a step past the end stays at the end
])
def test_beta_schedules(schedule: str, step: int, kwargs: dict, expected: float) -> None:
    assert mix_probability(schedule, step, 100, **kwargs) == pytest.approx(expected, rel=1e-12)


def test_beta_schedule_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="unknown mixing schedule 'cosine'; known: exponential"):
        mix_probability("cosine", 1, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps must be at least 1, got 0"):
        mix_probability("linear", 1, 0)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.75, 1.0])
def test_the_share_of_rollout_rows_tracks_one_minus_beta(beta: float) -> None:
    rows = rollout_rows(20_000, beta, torch.Generator().manual_seed(0))
    assert rows.dtype == torch.bool and rows.shape == (20_000,)
    assert rows.float().mean().item() == pytest.approx(1 - beta, abs=0.01)
    if beta in (0.0, 1.0):
        assert rows.all().item() is (beta == 0.0)


def test_position_mask_counts_up_to_and_including_the_eos_prediction() -> None:
    pad, eos, start = 0, 102, 101
    context = torch.tensor([[start, 5, 6, eos, pad, pad],
                            [start, 7, eos, 8, pad, pad],  # nothing after the first EOS counts
                            [start, pad, pad, pad, pad, pad]])
    assert position_mask(context, pad, eos).tolist() == [
        [True, True, True, False, False, False],
        [True, True, False, False, False, False],
        [True, False, False, False, False, False],
    ]
    # T5 starts decoding with the pad id, GPT-2 with the EOS id: the start always counts
    assert position_mask(torch.tensor([[0, 5, 1, 0]]), 0, 1).tolist() == [[True, True, False, False]]
    assert position_mask(torch.tensor([[9, 5, 9, 4]]), 0, 9).tolist() == [[True, True, False, False]]


def test_soft_cross_entropy_on_fixed_numbers() -> None:
    # one counted position: student probabilities (1/4, 1/2, 1/4); a second one is masked out
    student = torch.tensor([[[0.0, math.log(2), 0.0], [5.0, -5.0, 0.0]]], requires_grad=True)
    uniform = torch.zeros(1, 2, 3)
    mask = torch.tensor([[True, False]])
    loss = soft_cross_entropy(student, uniform, mask)
    assert loss.item() == pytest.approx(5 * math.log(2) / 3)  # -(1/3)(ln 1/4 + ln 1/2 + ln 1/4)
    loss.backward()
    assert student.grad is not None and student.grad[0, 1].abs().sum().item() == 0.0

    teacher = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    top1 = soft_cross_entropy(student, teacher, mask, top_k=1)  # all mass on token 0
    assert top1.item() == pytest.approx(math.log(4))
    top2 = soft_cross_entropy(student, teacher, mask, top_k=2)  # softmax(2, 1) on tokens 0, 1
    assert top2.item() == pytest.approx(1.1998783731614941)
    full = soft_cross_entropy(student, teacher, mask, top_k=3)
    assert full.item() == pytest.approx(soft_cross_entropy(student, teacher, mask).item())
    assert soft_cross_entropy(student, teacher, torch.zeros(1, 2, dtype=torch.bool)).item() == 0.0


def test_soft_cross_entropy_refuses_two_vocabularies() -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, 3\) and teacher logits \(1, 2, 4\) differ"):
        soft_cross_entropy(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2).bool())


def test_imitation_targets_take_the_teachers_argmax_on_rollout_rows_only() -> None:
    teacher = torch.zeros(2, 3, 4)
    teacher[:, :, 2] = 1.0  # the teacher always prefers token 2
    data = torch.tensor([[1, 3, 0], [1, 3, 0]])
    rows = torch.tensor([False, True])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert imitation_targets(teacher, data, rows, mask).tolist() == [[1, 3, IGNORE],
                                                                     [2, 2, IGNORE]]


def tiny_bart(seed: int, layers: int = 1, dropout: float = 0.1):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    config = BartConfig(vocab_size=40, d_model=16, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2, forced_eos_token_id=None, dropout=dropout)
    return BartForConditionalGeneration(config).eval()


def seq2seq_batch() -> dict[str, torch.Tensor]:
    """SPLIT as a hand-made batch: the same inputs and labels."""
    inputs = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1], [0, 10, 2, 1, 1], [0, 11, 12, 13, 2]])
    labels = torch.tensor([[0, 20, 21, 2], [0, 22, 2, IGNORE], [0, 23, 24, 2], [0, 25, 2, IGNORE]])
    return {"input_ids": inputs, "attention_mask": (inputs != 1).long(), "labels": labels}


class CountingTokenizer:
    """Whitespace ids under 40, enough for the tiny BART."""

    def __call__(self, texts: list[str], **_: object) -> dict[str, torch.Tensor]:
        rows = [[0] + [3 + len(w) % 30 for w in t.split()] + [2] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 1).long()}


# word lengths 2..10 tokenize to ids 5..13: the inputs of seq2seq_batch, with its targets
SPLIT = TargetSplit(["ab abc abcd", "abcde abcdef", "abcdefg", "abcdefgh abcdefghi abcdefghij"],
                    [[0, 20, 21, 2], [0, 22, 2], [0, 23, 24, 2], [0, 25, 2]])


def imitation_step(student, teacher, beta: float, term: str, max_new_tokens: int = 6):
    """One training step's loss as the loop computes it: ImitationContexts rolls out rows of a
    Layout batch, the teacher is read on the mixed contexts, the recipe's loss term weighs."""
    from kdedge.config import build_config
    from kdedge.distill.generation_training import ImitationContexts, collate, teacher_logits
    from kdedge.distill.losses import build
    from kdedge.models.layouts import layout_for
    from kdedge.training.outputs import Outputs
    from kdedge.training.trainer import model_inputs

    layout = layout_for(student.config, CountingTokenizer(), 16)
    cfg = build_config(overrides={"data.task": "seq2seq", "distill.recipe": "imitkd",
                                  "distill.generation.schedule": "constant",
                                  "distill.generation.beta": beta}).distill.generation
    contexts = ImitationContexts(cfg, layout, max_new_tokens, seed=0)
    batch = contexts(student, collate(layout, SPLIT, range(len(SPLIT))), 0, 10)
    loss, _ = build([(term, 1.0, {})])(Outputs.from_hf(student(**model_inputs(batch))),
                                       teacher_logits(teacher)(batch), batch)
    return loss, batch, contexts.summary()


def test_imitation_with_data_contexts_only_is_maximum_likelihood_or_word_kd() -> None:
    student, teacher, data = tiny_bart(0), tiny_bart(1, layers=2), seq2seq_batch()
    oracle, batch, summary = imitation_step(student, teacher, 1.0, "imitation_ce")
    assert summary == {"beta": 1.0, "rollout_share": 0.0}
    assert batch["decoder_input_ids"][1].tolist() == [2, 0, 22, 2]  # start, then the labels
    assert torch.equal(batch["input_ids"], data["input_ids"])
    mle = student(**data).loss  # transformers' own shift-right and cross-entropy
    assert oracle.item() == pytest.approx(mle.item(), rel=1e-6)  # beta=1: the data alone
    full, _, _ = imitation_step(student, teacher, 1.0, "word_kd")
    context = shift_right(data["labels"], 2, 1)
    word_kd = soft_cross_entropy(
        student(input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                decoder_input_ids=context).logits,
        teacher(input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                decoder_input_ids=context).logits,
        position_mask(context, 1, 2))
    assert full.item() == pytest.approx(word_kd.item(), rel=1e-6)


def test_imitation_rolls_out_the_student_and_trains_only_the_student() -> None:
    student, teacher = tiny_bart(0, dropout=0.0), tiny_bart(1, layers=2)
    student.train()  # without dropout, so the loss can be recomputed below
    loss, batch, summary = imitation_step(student, teacher, 0.0, "imitation_ce")
    assert summary == {"beta": 0.0, "rollout_share": 1.0} and student.training  # mode restored
    assert batch["rollout"].all() and (batch["labels"] == IGNORE).all()
    # the targets are the teacher's argmax on the student's own contexts, counted up to EOS
    with torch.no_grad():
        oracle = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=batch["decoder_input_ids"]).logits.argmax(-1)
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=batch["decoder_input_ids"]).logits
    expected = torch.nn.functional.cross_entropy(logits[batch["mask"]], oracle[batch["mask"]])
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_teacher_sequences_are_generated_once_and_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.models.layouts import Seq2SeqLayout
    from kdedge.training.teacher_cache import sequence_cache_file, teacher_sequences

    monkeypatch.setenv("KDEDGE_CACHE", str(tmp_path))
    teacher = tiny_bart(1)
    layout = Seq2SeqLayout(CountingTokenizer(), 16, pad=1, eos=2, start=2)
    sources = ["a tiny source", "another longer source text", "x"]
    path = sequence_cache_file(["sha"], sources, 16, beams=2, max_new_tokens=5)
    assert path != sequence_cache_file(["sha"], sources, 16, beams=3, max_new_tokens=5)
    calls = []
    original = teacher.generate
    monkeypatch.setattr(teacher, "generate", lambda **kw: calls.append(kw) or original(**kw))

    def beams(chunk: list[str]) -> list[list[int]]:
        return layout.continuations(teacher, chunk, 5, beams=2)

    first, cached = teacher_sequences(path, beams, sources)
    assert not cached and len(calls) == 1 and calls[0]["num_beams"] == 2
    # target ids: at most 5 tokens, the start token dropped, cut after an EOS
    assert len(first) == 3 and all(1 <= len(row) <= 5 for row in first)
    assert all(2 not in row[:-1] for row in first)
    again, cached = teacher_sequences(path, beams, sources)
    assert cached and again == first and len(calls) == 1  # the teacher did not run again


@pytest.mark.parametrize("task", ["seq2seq", "causal-lm"])
def test_onnx_generation_gives_the_pytorch_greedy_tokens(task: str, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdedge.export.generation import (
        export_generator,
        generation_parity,
        has_cache,
        load_onnx_generator,
    )

    if task == "seq2seq":
        model = tiny_bart(1, layers=2)
    else:
        torch.manual_seed(1)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=64, n_embd=16, n_layer=2,
                                           n_head=2, bos_token_id=0, eos_token_id=2,
                                           pad_token_id=1)).eval()
    model.save_pretrained(tmp_path / "pt")
    exported = export_generator(tmp_path / "pt", tmp_path / "onnx", task)
    files = exported["files"]
    assert exported["key_value_cache"] and has_cache(tmp_path / "onnx")
    assert ("encoder_model.onnx" in files) == (task == "seq2seq")
    assert any(name.startswith("decoder_model") for name in files) or "model.onnx" in files
    onnx_model = load_onnx_generator(tmp_path / "onnx", task)
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    parity = generation_parity(model, onnx_model, batch, new_tokens=8)
    assert parity == {"rows": 2, "new_tokens": 8, "mismatched_rows": [], "passed": True}


def test_bert2bert_from_one_encoder_and_a_shallower_student(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.errors import KdedgeError
    from kdedge.models.seq2seq import bert2bert, fewer_layers

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    teacher = bert2bert(tiny_model_dir, tokenizer).eval()
    for config in (teacher.config, teacher.generation_config):
        assert (config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (
            tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    assert teacher.decoder.config.add_cross_attention and teacher.decoder.config.is_decoder
    enc = tokenizer(["good film", "bad plot twist"], padding=True, return_tensors="pt")
    out = teacher.generate(**enc, max_new_tokens=4, min_new_tokens=4)
    assert out.shape == (2, 5) and (out[:, 0] == tokenizer.cls_token_id).all()

    student = fewer_layers(teacher, encoder_layers=1, decoder_layers=[0])
    assert student.config.encoder.num_hidden_layers == 1
    assert student.config.decoder.num_hidden_layers == 1
    # the kept layers are the teacher's: top encoder layer (1 of 0..1), decoder layer 0
    kept = {"encoder.encoder.layer.0.attention.self.query.weight":
            "encoder.encoder.layer.1.attention.self.query.weight",
            "decoder.bert.encoder.layer.0.crossattention.self.key.weight":
            "decoder.bert.encoder.layer.0.crossattention.self.key.weight"}
    params, teacher_params = dict(student.named_parameters()), dict(teacher.named_parameters())
    for mine, theirs in kept.items():
        assert torch.equal(params[mine], teacher_params[theirs])
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.parameters())
    labels = tokenizer(["nice", "awful"], padding=True, return_tensors="pt")["input_ids"]
    assert math.isfinite(student(**enc, labels=labels).loss.item())
    with pytest.raises(KdedgeError, match=r"Layers \[5\] do not exist in a 2-layer stack"):
        fewer_layers(teacher, encoder_layers=[5], decoder_layers=1)
    # a kept upper decoder layer is renumbered, so the key/value cache of generate() fits it
    upper = fewer_layers(teacher, encoder_layers=1, decoder_layers=[1]).eval()
    assert upper.generate(**enc, max_new_tokens=3, min_new_tokens=3).shape == (2, 4)


def test_bert2bert_exports_without_a_cache_and_generates_the_same_tokens(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from kdedge.export.generation import (
        export_generator,
        generation_parity,
        has_cache,
        load_onnx_generator,
    )
    from kdedge.models.seq2seq import bert2bert

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = bert2bert(tiny_model_dir, tokenizer).eval()
    model.save_pretrained(tmp_path / "pt")
    exported = export_generator(tmp_path / "pt", tmp_path / "onnx", "seq2seq")
    # optimum's BERT decoder has no key/value cache configuration: plain decoder, recomputed
    assert exported == {"files": ["decoder_model.onnx", "encoder_model.onnx"],
                        "key_value_cache": False}
    assert not has_cache(tmp_path / "onnx")
    onnx_model = load_onnx_generator(tmp_path / "onnx", "seq2seq")
    batch = dict(tokenizer(["good film", "bad plot twist here"], padding=True, return_tensors="pt"))
    parity = generation_parity(model, onnx_model, batch, new_tokens=6)
    assert parity["passed"] and parity["rows"] == 2

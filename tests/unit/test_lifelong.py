"""Lifelong distillation (L2KD on LAMOL) over a stream of two tiny causal-LM tasks."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_causal_lm import loaded, task_of, tiny_gpt2_dir  # noqa: F401  (a fixture)

from kdedge.config import build_config
from kdedge.models.layouts import layout_for

FIRST = [("the film was", "good"), ("the plot is", "bad"), ("a movie and", "fun"),
         ("the cast was", "dull")] * 4  # the earlier task
TARGET = [("story very", "great"), ("it is a", "awful"), ("very smart", "fine"),
          ("a weak story", "poor")] * 4  # the run's own task, last in the stream


def lifelong_config(tiny_gpt2_dir: Path, first_csv: Path, replay: str,  # noqa: F811
                    kd: str = "word"):
    return build_config(overrides={
        "data.task": "causal-lm", "data.max_length": 8, "data.max_target_length": 3,
        "teacher.model": str(tiny_gpt2_dir), "distill.recipe": "lifelong", "distill.student": "1",
        "distill.lifelong": {"replay": replay, "replay_ratio": 0.5, "kd": kd, "tasks": [{
            "name": "first", "data": {"source": str(first_csv), "text_columns": ["prompt"],
                                      "label_column": "continuation",
                                      "validation_fraction": 0.25, "test_fraction": 0.25},
            "teacher": {"model": str(tiny_gpt2_dir), "training": {"epochs": 1,
                                                                  "batch_size": 4}}}]},
        "distill.training": {"epochs": 1, "batch_size": 4, "learning_rate": 3e-3}})


@pytest.mark.parametrize("replay", ["real", "generated"])
def test_the_stream_teaches_each_teacher_its_own_task_only_and_scores_every_step(
        replay: str, tiny_gpt2_dir: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kdedge.distill import generator
    from kdedge.teacher import generator as teacher_generator

    first_csv = tmp_path / "first.csv"
    pd.DataFrame([{"prompt": p, "continuation": c} for p, c in FIRST]).to_csv(first_csv,
                                                                              index=False)
    seen: list[set[str]] = []  # the texts every teacher fine-tuning trained on
    original = teacher_generator.fit

    def spy(model, layout, task, split, *args, **kwargs):
        seen.append(set(split.texts))
        return original(model, layout, task, split, *args, **kwargs)

    monkeypatch.setattr(teacher_generator, "fit", spy)
    from kdedge.distill import lifelong

    starts: list[int] = []  # the token every pseudo-sample was generated from
    sample = lifelong.pseudo_samples

    def spy_samples(model, layout, *args, **kwargs):
        starts.append(layout.start)
        return sample(model, layout, *args, **kwargs)

    monkeypatch.setattr(lifelong, "pseudo_samples", spy_samples)
    cfg = lifelong_config(tiny_gpt2_dir, first_csv, replay)
    teacher, tokenizer = loaded(tiny_gpt2_dir)  # the run's teacher: the target task's
    target = task_of(TARGET)
    student, metrics = generator.distill(cfg, teacher, tokenizer, target, ["gpt2"],
                                         work=tmp_path / "work")
    # the earlier task's teacher trained on that task's data and nothing of the target's
    assert len(seen) == 1 and seen[0] <= {p for p, _ in FIRST}
    assert not seen[0] & {p for p, _ in TARGET}
    life = metrics["lifelong"]
    assert life["stream"] == ["first", "target"] and life["replay"] == replay
    assert [s["task"] for s in life["after_step"]] == ["first", "target"]
    assert all(set(s["test_rougeL"]) == {"first", "target"} for s in life["after_step"])
    assert life["after_step"][0]["replayed"] == 0  # nothing before the first task
    if replay == "real":  # gamma x the target's 16 training rows, from the first task
        assert life["after_step"][1]["replayed"] == math.ceil(0.5 * len(TARGET))
    assert set(life["multitask_test_rougeL"]) == {"first", "target"}
    assert [row["phase"] for row in metrics["history"]] == ["first", "target"]
    assert student.config.num_hidden_layers == 1
    assert set(metrics["test"]) == {"bleu", "rouge1", "rouge2", "rougeL", "examples"}
    # the earlier task's generation token: added, learnt by the student, the source of replay
    gen = tokenizer.convert_tokens_to_ids("__gen_first__")
    assert gen == teacher.config.vocab_size and student.config.vocab_size == gen + 1
    assert starts == ([gen] if replay == "generated" else [])


def test_pseudo_samples_are_cut_at_the_separator_and_end_with_eos(tiny_gpt2_dir: Path,  # noqa: F811
                                                                 ) -> None:
    from kdedge.distill.lifelong import pseudo_samples

    model, tokenizer = loaded(tiny_gpt2_dir)
    layout = layout_for(model.config, tokenizer, 8)
    word = {w: tokenizer.convert_tokens_to_ids(w) for w in ("the", "film", "good", "bad")}
    sep, eos = layout.separator, layout.eos
    rows = [[word["the"], word["film"], sep, word["good"], eos, 0],  # kept
            [word["the"], word["film"], word["bad"], word["good"]],  # no separator: dropped
            [sep, word["good"], eos],  # no prompt: dropped
            [word["film"], sep, eos]]  # an empty target: dropped

    class Scripted(torch.nn.Module):
        training = False

        def generate(self, input_ids, attention_mask, generation_config):
            assert (input_ids[:, 0] == layout.start).all() and generation_config.do_sample
            assert generation_config.top_k == 20 and generation_config.eos_token_id is None
            width = max(len(r) for r in rows)
            padded = [[layout.start, *r, *[layout.pad] * (width - len(r))] for r in rows]
            return torch.tensor(padded[:len(input_ids)])

    samples = pseudo_samples(Scripted(), layout, 4, top_k=20, max_tokens=6, seed=0)
    assert samples == [("the film", [word["good"], eos])]


def test_the_report_tabulates_the_stream_step_by_step() -> None:
    from kdedge.report.builders import lifelong_rows

    life = {"stream": ["first", "target"],
            "after_step": [{"step": 1, "task": "first", "replayed": 0,
                            "test_rougeL": {"first": 10.0, "target": 1.0}},
                           {"step": 2, "task": "target", "replayed": 8,
                            "test_rougeL": {"first": 7.5, "target": 12.25}}],
            "teachers_test_rougeL": {"first": 11, "target": 13},
            "multitask_test_rougeL": {"first": 9, "target": 12}}
    assert lifelong_rows(life) == (["", "first", "target"], [
        ["after step 1 (first, 0 replayed)", "10.00", "1.00"],
        ["after step 2 (target, 8 replayed)", "7.50", "12.25"],
        ["each task's teacher", "11.00", "13.00"],
        ["multitask (all tasks at once)", "9.00", "12.00"]])
    assert lifelong_rows({"stream": ["a"], "after_step": []}) == ([], [])


def _kl(teacher: list[float], student: list[float], t: float) -> float:
    """t^2 KL(softmax(teacher / t) || softmax(student / t)), by hand."""
    p = [math.exp(v / t) / sum(math.exp(w / t) for w in teacher) for v in teacher]
    q = [math.exp(v / t) / sum(math.exp(w / t) for w in student) for v in student]
    return t * t * sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def _nll(student: list[float], token: int) -> float:
    return -math.log(math.exp(student[token]) / sum(math.exp(v) for v in student))


def test_l2kd_word_kd_is_the_kl_of_next_token_distributions_on_answer_and_lm_positions() -> None:
    """A fixed toy model: row 0 is the new task's (KL to the teacher), row 1 replayed (NLL).
    Positions 0-1 are the prompt's (language model), 2-3 the answer's."""
    from kdedge.distill.losses import LifelongWordKD
    from kdedge.training.outputs import Outputs

    student = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                            [[0.0, 0.0, 1.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 1.0]]])
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, -1.0], [0.0, 3.0, 0.0]],
                            [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]])
    prompt = torch.tensor([[True, True, False, False]] * 2)
    batch = {"mask": ~prompt, "prompt_mask": prompt, "pseudo": torch.tensor([False, True]),
             "labels": torch.tensor([[1, 0, 0, 1], [2, 1, 0, 0]])}
    got = LifelongWordKD(temperature=2.0, lm_weight=0.25)(Outputs(student), Outputs(teacher), batch)
    s, t = student.tolist(), teacher.tolist()
    answer_kd = (_kl(t[0][2], s[0][2], 2.0) + _kl(t[0][3], s[0][3], 2.0)) / 2
    lm_kd = (_kl(t[0][0], s[0][0], 2.0) + _kl(t[0][1], s[0][1], 2.0)) / 2
    answer_nll = (_nll(s[1][2], 0) + _nll(s[1][3], 0)) / 2
    lm_nll = (_nll(s[1][0], 2) + _nll(s[1][1], 1)) / 2
    expected = answer_kd + 0.25 * lm_kd + answer_nll + 0.25 * lm_nll
    assert float(got) == pytest.approx(expected, abs=1e-6)
    assert float(got) == pytest.approx(1.3170664, abs=1e-6)  # golden, should the hand math drift
    # the teacher's logits on replayed rows are never read: changing them changes nothing
    other = teacher.clone()
    other[1] = torch.randn(4, 3)
    again = LifelongWordKD(temperature=2.0, lm_weight=0.25)(Outputs(student), Outputs(other), batch)
    assert float(again) == float(got)


def test_the_lifelong_recipe_distills_the_teachers_distributions_on_a_causal_batch(
        tiny_gpt2_dir: Path) -> None:  # noqa: F811
    """The recipe's terms on a tiny GPT-2 batch: tau^2 KL on the answer positions plus lambda x
    tau^2 KL on the prompt's, nothing else (no prompt NLL on the new task's rows)."""
    from transformers import AutoModelForCausalLM

    from kdedge.distill.divergence import tempered_kl
    from kdedge.distill.generation_training import TargetSplit, collate, teacher_logits
    from kdedge.distill.losses import build
    from kdedge.distill.recipes import RECIPES, Dims
    from kdedge.training.outputs import Outputs
    from kdedge.training.trainer import model_inputs

    teacher, tokenizer = loaded(tiny_gpt2_dir)
    torch.manual_seed(1)
    student = AutoModelForCausalLM.from_config(teacher.config).eval()  # another random GPT-2
    cfg = build_config(overrides={"data.task": "causal-lm", "distill.recipe": "word-kd",
                                  "distill.lifelong.lm_weight": 0.5}).distill  # no stream needed
    (phase,) = RECIPES.get("lifelong")(cfg, Dims(0, 0, generation=True))
    assert [name for name, _, _ in phase.losses] == ["l2kd_word"]
    layout = layout_for(teacher.config, tokenizer, 8)
    split = TargetSplit([p for p, _ in TARGET[:4]], layout.targets([c for _, c in TARGET[:4]], 3),
                        pseudo=[False] * 4)
    batch = collate(layout, split, range(4))
    with torch.no_grad():
        s = student(**model_inputs(batch)).logits
        got, _ = build(phase.losses)(Outputs(s), teacher_logits(teacher)(batch), batch)
        t = teacher(**model_inputs(batch)).logits
    answer, prompt = batch["mask"], batch["prompt_mask"]
    assert answer.sum() == 8 and prompt.sum() > 0 and not (answer & prompt).any()
    expected = (tempered_kl(s[answer], t[answer], 2.0).mean()
                + 0.5 * tempered_kl(s[prompt], t[prompt], 2.0).mean())
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_each_step_keeps_the_epoch_best_on_every_task_seen_so_far(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Model selection: the mean validation ROUGE-L over the tasks seen so far, not the new
    task's alone (which would keep the epoch that forgot the old ones best)."""
    from kdedge.distill import lifelong

    asked: list[tuple[str, str]] = []

    def fake_score(model, layout, data, split, max_new_tokens, batch_size):
        asked.append((data["name"], split))
        return {"rougeL": data["rougeL"]}

    monkeypatch.setattr(lifelong, "score", fake_score)
    stream = [lifelong.StreamTask(name, {"name": name, "rougeL": value}, None, {})  # type: ignore[arg-type]
              for name, value in (("first", 0.2), ("second", 0.5), ("target", 0.8))]
    layouts = {t.name: None for t in stream}  # each task's: fake_score does not read them
    evaluate = lifelong.seen_so_far(stream[:2], layouts, 3, 8)  # type: ignore[arg-type]
    assert evaluate(None) == pytest.approx(0.35)
    assert asked == [("first", "validation"), ("second", "validation")]


def test_each_task_starts_with_its_generation_token_and_the_teacher_reads_bos(
        tiny_gpt2_dir: Path) -> None:  # noqa: F811
    import copy

    from kdedge.distill import lifelong
    from kdedge.distill.generation_training import TargetSplit
    from kdedge.distill.losses import LifelongWordKD
    from kdedge.training.outputs import Outputs

    teacher, tokenizer = loaded(tiny_gpt2_dir)
    student = copy.deepcopy(teacher)
    vocab = teacher.config.vocab_size
    layout = layout_for(teacher.config, tokenizer, 8)
    stream = [lifelong.StreamTask(name, None, None, {}) for name in ("first", "second", "target")]  # type: ignore[arg-type]
    layouts = lifelong.task_layouts(stream, layout, tokenizer, student)
    assert [layouts[n].start for n in ("first", "second", "target")] == [vocab, vocab + 1,
                                                                         layout.start]
    assert tokenizer.convert_ids_to_tokens([vocab, vocab + 1]) == ["__gen_first__", "__gen_second__"]
    assert student.get_input_embeddings().num_embeddings == vocab + 2
    split = TargetSplit(["the film was", "story very"], layout.targets(["good", "great"], 3),
                        pseudo=[True, False])
    batch = lifelong.starting_with(layouts["target"], split, [vocab, layout.start])([0, 1])
    assert batch["input_ids"][:, 0].tolist() == [vocab, layout.start]
    # a replayed row of the first task is exactly that task's own layout's row
    own = layouts["first"].batch(["the film was"], [split.targets[0]])
    width = own["input_ids"].shape[1]
    assert batch["input_ids"][0, :width].tolist() == own["input_ids"][0].tolist()
    out = lifelong.teacher_at_bos(teacher, layout, vocab + 2)(batch)
    with torch.no_grad():
        ids = batch["input_ids"].clone()
        ids[:, 0] = layout.start
        plain = teacher(input_ids=ids, attention_mask=batch["attention_mask"]).logits
    assert out.logits.shape[-1] == vocab + 2 and (out.logits[..., vocab:] == -1e4).all()
    assert torch.equal(out.logits[..., :vocab], plain)
    with torch.no_grad():
        s = Outputs(student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits)
    assert torch.isfinite(LifelongWordKD(2.0, 0.25)(s, out, batch))


def test_kd_none_is_lamol_without_a_teacher(tiny_gpt2_dir: Path, tmp_path: Path,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """kd none (the baselines: LAMOL with replay, fine-tuning in sequence without): the gold
    targets' NLL + lambda x the prompt's NLL on every row, and no task teacher is ever read."""
    from transformers import AutoModelForCausalLM

    from kdedge.distill import generator, lifelong
    from kdedge.distill.generation_training import TargetSplit, collate
    from kdedge.distill.losses import build
    from kdedge.distill.recipes import RECIPES, Dims
    from kdedge.training.outputs import Outputs

    cfg = build_config(overrides={"data.task": "causal-lm", "distill.recipe": "gold",
                                  "distill.lifelong": {"kd": "none", "lm_weight": 0.5}}).distill
    (phase,) = RECIPES.get("lifelong")(cfg, Dims(0, 0, generation=True))
    assert phase.losses == (("token_ce", 1.0, {}), ("prompt_lm", 0.5, {}))
    assert phase.targets == "data"
    teacher, tokenizer = loaded(tiny_gpt2_dir)
    layout = layout_for(teacher.config, tokenizer, 8)
    split = TargetSplit([p for p, _ in TARGET[:4]], layout.targets([c for _, c in TARGET[:4]], 3),
                        pseudo=[False, True, False, True])
    batch = collate(layout, split, range(4))
    torch.manual_seed(2)
    student = AutoModelForCausalLM.from_config(teacher.config).eval()
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got, _ = build(phase.losses)(Outputs(s), None, batch)
    answer, prompt = batch["mask"], batch["prompt_mask"]
    expected = (torch.nn.functional.cross_entropy(s[answer], batch["labels"][answer])
                + 0.5 * torch.nn.functional.cross_entropy(s[prompt], batch["labels"][prompt]))
    assert float(got) == pytest.approx(float(expected), rel=1e-6)

    def no_teacher(*args, **kwargs):
        raise AssertionError("kd none read a task teacher")

    monkeypatch.setattr(lifelong, "teacher_at_bos", no_teacher)
    monkeypatch.setattr(lifelong, "_teacher_outputs", no_teacher)
    first_csv = tmp_path / "first.csv"
    pd.DataFrame([{"prompt": p, "continuation": c} for p, c in FIRST]).to_csv(first_csv,
                                                                              index=False)
    run_cfg = lifelong_config(tiny_gpt2_dir, first_csv, "none", kd="none")
    _, metrics = generator.distill(run_cfg, teacher, tokenizer, task_of(TARGET), ["gpt2"],
                                   work=tmp_path / "work")
    life = metrics["lifelong"]
    assert life["kd"] == "none" and [s["replayed"] for s in life["after_step"]] == [0, 0]


def test_the_task_teachers_learn_lamols_objective_the_prompt_too(tiny_gpt2_dir: Path,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Word-level KD on the prompt reads the teachers' prompt distributions: every task teacher
    of the lifelong recipe is fine-tuned with the answer's NLL + lambda x the prompt's (a teacher
    trained on answers alone has random ones there). Other recipes keep the answer's alone."""
    from kdedge.teacher import generator as teacher_generator

    tasks = [{"name": "first", "data": {"source": "first.csv"}},
             {"name": "second", "data": {"source": "second.csv"},
              "teacher": {"lm_weight": 0.0}}]
    cfg = build_config(overrides={"data.task": "causal-lm", "distill.recipe": "lifelong",
                                  "distill.lifelong": {"lm_weight": 0.4, "tasks": tasks}})
    assert cfg.teacher.lm_weight == 0.4
    assert [t.teacher.lm_weight for t in cfg.distill.lifelong.tasks] == [0.4, 0.0]  # given: kept
    again = build_config(overrides={"data.task": "causal-lm", "distill.recipe": "lifelong",
                                    "teacher.lm_weight": 0.1,
                                    "distill.lifelong": {"tasks": tasks[:1]}})
    assert again.teacher.lm_weight == 0.1 and again.distill.lifelong.tasks[0].teacher.lm_weight == 0.25
    assert build_config(overrides={"data.task": "causal-lm", "distill.recipe": "word-kd"}
                        ).teacher.lm_weight == 0.0

    built: list[list[tuple]] = []
    original = teacher_generator.losses.build

    def spy(terms):
        built.append(list(terms))
        return original(terms)

    monkeypatch.setattr(teacher_generator.losses, "build", spy)
    teacher_cfg = cfg.teacher.model_copy(update={
        "model": str(tiny_gpt2_dir), "training": cfg.teacher.training.model_copy(
            update={"epochs": 1, "batch_size": 4, "patience": None})})
    data = cfg.data.model_copy(update={"max_length": 8, "max_target_length": 3})
    teacher_generator.prepare(teacher_cfg, data, task_of(TARGET), 0, tmp_path / "cache",
                              tmp_path / "model", None)
    assert built == [[("token_ce", 1.0, {}), ("prompt_lm", 0.4, {})]]


def test_pseudo_samples_run_past_the_separator_that_is_also_eos(tiny_gpt2_dir: Path,  # noqa: F811
                                                                ) -> None:
    """The separator is the model's EOS (BERT's [SEP] here, GPT-2's EOS when it has no SEP):
    sampling must not stop there, or no sample has an answer and LAMOL replays nothing. A model
    that always says the separator writes max_tokens of it; its own EOS is put back after."""
    from kdedge.distill import lifelong

    model, tokenizer = loaded(tiny_gpt2_dir)
    layout = layout_for(model.config, tokenizer, 8)
    assert layout.separator == layout.eos == model.generation_config.eos_token_id
    with torch.no_grad():  # final hidden state = the separator's embedding: it is the argmax
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(50 * model.transformer.wte.weight[layout.separator])
    lengths: list[int] = []
    original = model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        lengths.append(out.shape[1] - 1)
        return out

    model.generate = spy
    assert lifelong.pseudo_samples(model, layout, 3, top_k=1, max_tokens=6, seed=0) == []
    assert lengths == [6]
    assert model.generation_config.eos_token_id == layout.eos

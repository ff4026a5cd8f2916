"""Multi-teacher KD: golden weighted losses, and a selector that learns to drop a bad teacher."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_rows

from kdedge.config import TrainingConfig, build_config
from kdedge.data.dataset import TaskSplit
from kdedge.distill import losses
from kdedge.distill.losses import MultiTeacherKD
from kdedge.distill.multi_teacher import TeacherSelector, per_teacher_kd
from kdedge.errors import KdedgeError
from kdedge.training.outputs import Outputs
from kdedge.training.trainer import train

STUDENT = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
TEACHERS = torch.tensor([[[1.0, 0.0], [0.0, 2.0]],  # instance 0: teacher A, teacher B
                         [[0.0, 3.0], [1.0, 1.0]]])  # instance 1
BATCH = {"labels": torch.tensor([0, 1])}


def _kd(teacher: list[float], student: list[float], t: float) -> float:
    """T^2 KL(softmax(teacher/T) || softmax(student/T)), by hand."""
    def soft(row: list[float]) -> list[float]:
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]
    p, q = soft(teacher), soft(student)
    return t * t * sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


KD = [[_kd(TEACHERS[j, k].tolist(), STUDENT[j].tolist(), 2.0) for k in range(2)] for j in range(2)]


def test_per_teacher_kd_is_hinton_kd_for_every_pair() -> None:
    got = per_teacher_kd(STUDENT, TEACHERS, 2.0, regression=False)
    assert got.flatten().tolist() == pytest.approx([v for row in KD for v in row], abs=1e-6)
    # golden values, so a change of formula shows even if the hand computation drifted with it
    assert got.flatten().tolist() == pytest.approx([0.1118202, 1.8484686, 0.3609527, 0.1237192],
                                                   abs=1e-6)


@pytest.mark.parametrize(("weighting", "weights", "w"), [
    ("uniform", None, (0.5, 0.5)),
    ("fixed", (3.0, 1.0), (0.75, 0.25)),
])
def test_weighted_multi_teacher_loss(weighting: str, weights: tuple[float, ...] | None,
                                     w: tuple[float, float]) -> None:
    loss = MultiTeacherKD(2, temperature=2.0, weighting=weighting, weights=weights)
    got = loss(Outputs(STUDENT), Outputs(TEACHERS[:, 0], ensemble=TEACHERS), BATCH)
    expected = sum(w[0] * row[0] + w[1] * row[1] for row in KD) / 2
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_one_teacher_uniform_equals_plain_kd() -> None:
    one = TEACHERS[:, :1]
    multi = MultiTeacherKD(1, temperature=2.0)(Outputs(STUDENT), Outputs(one[:, 0], ensemble=one), BATCH)
    plain = losses.SoftTargetKL(temperature=2.0)(Outputs(STUDENT), Outputs(one[:, 0]), BATCH)
    assert float(multi) == pytest.approx(float(plain), abs=1e-6)


def test_warm_up_selects_every_teacher_and_later_steps_sample() -> None:
    loss = MultiTeacherKD(2, temperature=2.0, weighting="rl-select",
                          rl={"warmup_epochs": 1, "init_probability": 0.5})
    teacher = Outputs(TEACHERS[:, 0], ensemble=TEACHERS)
    loss.begin_epoch(1)
    warm = loss(Outputs(STUDENT), teacher, BATCH)
    assert float(warm) == pytest.approx(sum(0.5 * a + 0.5 * b for a, b in KD) / 2, abs=1e-6)
    assert loss.end_epoch() == {"teacher0_selected": 1.0, "teacher1_selected": 1.0,
                                "teacher0_policy_p": 0.5, "teacher1_policy_p": 0.5}
    loss.begin_epoch(2)
    for _ in range(50):
        loss(Outputs(STUDENT), teacher, BATCH)
    rates = loss.end_epoch()
    assert 0.3 < rates["teacher0_selected"] < 0.7 and 0.3 < rates["teacher1_selected"] < 0.7


def test_empty_selection_leaves_the_gold_label_term_alone() -> None:
    loss = MultiTeacherKD(2, weighting="rl-select", rl={"warmup_epochs": 0, "init_probability": 1e-6})
    got = loss(Outputs(STUDENT), Outputs(TEACHERS[:, 0], ensemble=TEACHERS), BATCH)
    assert float(got) == 0.0


def test_selector_features_have_one_column_per_feature() -> None:
    selector = TeacherSelector(2, state_features=("teacher_id", "teacher_gold_ce",
                                                  "teacher_confidence", "teacher_entropy",
                                                  "student_teacher_kl"))
    states = selector.state(STUDENT, Outputs(TEACHERS[:, 0], ensemble=TEACHERS), BATCH["labels"])
    assert states.shape == (2, 2, 6)
    assert states[0, 1, :2].tolist() == [0.0, 1.0]  # one-hot id of teacher B
    gold_ce_b = -math.log(math.exp(0.0) / (math.exp(0.0) + math.exp(2.0)))  # B says class 1, gold 0
    assert float(states[0, 1, 2]) == pytest.approx(math.log1p(gold_ce_b), abs=1e-6)
    assert float(states[1, 1, 4]) == pytest.approx(1.0, abs=1e-6)  # B is uniform on instance 1


def test_the_default_state_holds_each_teachers_and_the_students_soft_labels() -> None:
    """The paper's state: the teacher's soft labels and its gold loss; with the student's."""
    selector = TeacherSelector(2)
    states = selector.state(STUDENT, Outputs(TEACHERS[:, 0], ensemble=TEACHERS), BATCH["labels"])
    assert selector.features == ("teacher_id", "teacher_probs", "teacher_gold_ce", "student_probs")
    assert states.shape == (2, 2, 7)  # id 2 + teacher probs 2 + gold CE 1 + student probs 2
    e = math.exp
    # instance 1, teacher A: logits (0, 3); gold 1; the student's logits (0, 1)
    assert states[1, 0].tolist() == pytest.approx(
        [1.0, 0.0, 1 / (1 + e(3)), e(3) / (1 + e(3)), math.log1p(math.log(1 + e(-3))),
         1 / (1 + e(1)), e(1) / (1 + e(1))], abs=1e-6)
    assert torch.equal(states[:, 0, 5:], states[:, 1, 5:])  # the student's, beside each teacher
    scores = TeacherSelector(2, regression=True).state(
        STUDENT[:, :1], Outputs(TEACHERS[:, 0, :1], ensemble=TEACHERS[..., :1]),
        torch.tensor([1.5, 0.0]))
    # regression: the scores themselves; teacher B says 0.0 on instance 0, gold 1.5
    assert scores[0, 1].tolist() == pytest.approx([0.0, 1.0, 0.0, math.log1p(2.25), 2.0])


def _feedback(rows: slice, before: torch.Tensor, after: torch.Tensor):
    from kdedge.training.outputs import Feedback

    return Feedback({"labels": LABELS[rows]}, Outputs(before[rows]), Outputs(after[rows]))


# eight instances, two teachers: the student's logits on them before and after a step
LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
S_BEFORE = torch.tensor([[0.5, 0.1], [0.2, 0.3], [1.0, -1.0], [0.0, 0.0],
                         [0.3, 0.9], [-0.5, 0.5], [2.0, 1.0], [0.1, 0.4]])
S_AFTER = S_BEFORE + torch.tensor([[0.3, -0.3]]) * (1 - 2 * LABELS[:, None].float())
ENSEMBLE = torch.stack([S_BEFORE * 2, -S_BEFORE], 1)


def _selecting(rows: list[slice], reseed: bool = False) -> MultiTeacherKD:
    """A learning selector after one step whose batch came in `rows` (passes, or processes
    when `reseed`: each process draws from the same seed)."""
    loss = MultiTeacherKD(2, weighting="rl-select",
                          rl={"warmup_epochs": 0, "policy_lr": 0.1, "seed": 5})
    for part in rows:
        if reseed:
            loss.selector.generator.manual_seed(5)
        loss(Outputs(S_BEFORE[part]), Outputs(ENSEMBLE[part, 0], ensemble=ENSEMBLE[part]),
             {"labels": LABELS[part]})
    loss.after_step([_feedback(part, S_BEFORE, S_AFTER) for part in rows], lambda t: t)
    return loss


def test_rl_selection_with_gradient_accumulation_learns_from_every_pass() -> None:
    """Two accumulation passes of four rows update the policy exactly as one pass of eight:
    every pass's states and actions are rewarded with that pass's own rows."""
    whole = _selecting([slice(0, 8)]).selector.policy
    passes = _selecting([slice(0, 4), slice(4, 8)]).selector.policy
    assert whole is not None and passes is not None
    assert torch.equal(whole.weight, passes.weight) and torch.equal(whole.bias, passes.bias)
    assert whole.weight.abs().sum() > 0  # the policy did move


def test_rl_selection_rewards_the_step_alone_in_eval_mode(tiny_model_dir: Path) -> None:
    """The reward compares eval-mode losses on the same rows: a step that changes nothing
    (learning rate 0) rewards nothing, whatever the dropout, so the policy stays where it was;
    with accumulation 2, every row of the batch is rewarded once."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rows = toy_rows(32, seed=3)
    labels = np.array([0 if r["sentiment"] == "pos" else 1 for r in rows])
    split = TaskSplit([r["sentence"] for r in rows], labels)
    gold = torch.nn.functional.one_hot(torch.as_tensor(labels), 2).float()
    ensemble = torch.stack([4 * gold - 2, 2 - 4 * gold], 1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir,
                                                               hidden_dropout_prob=0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    loss = losses.build([("multi_teacher_kd", 0.7, {"teachers": 2, "weighting": "rl-select",
                                                    "rl": {"warmup_epochs": 0, "seed": 0}}),
                         ("ce", 0.3, {})])
    selector = loss.losses[0].selector
    rewarded: list[int] = []
    learn = selector.learn
    selector.learn = lambda passes, gather: (
        rewarded.append(sum(len(f.batch["labels"]) for f in passes)), learn(passes, gather))[-1]
    train(model, tokenizer, split, loss,
          teacher=lambda batch: Outputs(ensemble[batch["index"], 0],
                                        ensemble=ensemble[batch["index"]]),
          evaluate=lambda m: 0.0,
          cfg=TrainingConfig(epochs=1, batch_size=16, gradient_accumulation_steps=2).model_copy(
              update={"learning_rate": 0.0}),  # below what a user may set: a step that moves nothing
          max_length=16, seed=0, description="rl test", keep="last")
    assert rewarded == [16, 16]  # two steps, each of two passes of eight
    assert selector.policy is not None
    assert selector.policy.weight.abs().max().item() == 0.0  # zero reward: no move
    assert selector.policy.bias.item() == pytest.approx(math.log(0.9 / 0.1), abs=1e-7)


def _rank_main(rank: int, init: str, out: str) -> None:
    """One of two gloo processes: selects on its shard of the batch, then learns."""
    import torch.distributed as dist

    from kdedge.parallel import World

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        world = World(size=2, rank=rank, backend="gloo")
        mine = slice(4 * rank, 4 * rank + 4)
        loss = MultiTeacherKD(2, weighting="rl-select",
                              rl={"warmup_epochs": 0, "policy_lr": 0.1, "seed": 5})
        loss(Outputs(S_BEFORE[mine]), Outputs(ENSEMBLE[mine, 0], ensemble=ENSEMBLE[mine]),
             {"labels": LABELS[mine]})
        loss.after_step([_feedback(mine, S_BEFORE, S_AFTER)], world.gather)
        torch.save(loss.selector.policy.state_dict(), f"{out}/policy{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_rl_selection_on_two_processes_makes_one_update_from_the_whole_batch(
        tmp_path: Path) -> None:
    """Two gloo processes, four rows each: both gather the eight rows' states, actions and
    rewards and make the same update as one process seeing both shards (as two passes)."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"policy{r}.pt", weights_only=True) for r in (0, 1)]
    one = _selecting([slice(0, 4), slice(4, 8)], reseed=True).selector.policy
    assert one is not None
    for policy in ranks:
        assert torch.allclose(policy["weight"], one.weight, atol=1e-7)
        assert torch.allclose(policy["bias"], one.bias, atol=1e-7)
    assert one.weight.abs().sum() > 0


def test_regression_rejects_class_probability_features() -> None:
    with pytest.raises(ValueError, match="teacher_confidence and teacher_entropy need class"):
        TeacherSelector(2, state_features=("teacher_id", "teacher_confidence"), regression=True)


def test_rl_selector_learns_to_drop_a_corrupted_teacher(tiny_model_dir: Path) -> None:
    """Teacher 0 is right on every example, teacher 1 confidently wrong: the policy must learn
    to keep the first and drop the second from the student's feedback alone."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rows = toy_rows(320, seed=3)
    labels = np.array([0 if r["sentiment"] == "pos" else 1 for r in rows])
    split = TaskSplit([r["sentence"] for r in rows], labels)
    gold = torch.nn.functional.one_hot(torch.as_tensor(labels), 2).float()
    ensemble = torch.stack([4 * gold - 2, 2 - 4 * gold], 1)  # right, and the exact opposite
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rl = {"warmup_epochs": 1, "policy_lr": 0.05, "init_probability": 0.9, "seed": 0}  # the defaults
    # but a faster policy, for a short run
    loss = losses.build([("multi_teacher_kd", 0.7, {"teachers": 2, "weighting": "rl-select",
                                                    "temperature": 1.0, "rl": rl}),
                         ("ce", 0.3, {})])
    result = train(model, tokenizer, split, loss,
                   teacher=lambda batch: Outputs(ensemble[batch["index"], 0],
                                                 ensemble=ensemble[batch["index"]]),
                   evaluate=lambda m: 0.0, cfg=TrainingConfig(epochs=5, batch_size=16,
                                                              learning_rate=3e-3),
                   max_length=16, seed=0, description="rl test", keep="last")
    first, last = result.history[0], result.history[-1]
    assert first["teacher1_selected"] == 1.0  # warm-up: every teacher
    assert last["teacher0_policy_p"] > 0.7
    assert last["teacher1_policy_p"] < 0.3
    assert last["teacher1_selected"] < 0.3


def test_multi_teacher_config_errors() -> None:
    with pytest.raises(KdedgeError, match=r"multi-teacher recipe needs distill\.multi_teacher\.teachers"):
        build_config(overrides={"distill.recipe": "multi-teacher"})
    with pytest.raises(KdedgeError, match=r"fixed weighting needs weights, one per teacher \(2"):
        build_config(overrides={"distill.multi_teacher.teachers": [{"model": "demo"}],
                                "distill.multi_teacher.weighting": "fixed",
                                "distill.multi_teacher.weights": [1.0]})
    with pytest.raises(KdedgeError, match="non-empty subset of teacher_id"):
        build_config(overrides={"distill.multi_teacher.rl.state_features": ["loss"]})


def _train_rank(rank: int, port: int, model_dir: str, out: str) -> None:
    """One of two launched processes (gloo) training with rl-select and accumulation 2."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge import parallel

    parallel.world.cache_clear()
    assert parallel.world().size == 2
    torch.manual_seed(0)
    rows = toy_rows(64, seed=3)
    labels = np.array([0 if r["sentiment"] == "pos" else 1 for r in rows])
    gold = torch.nn.functional.one_hot(torch.as_tensor(labels), 2).float()
    ensemble = torch.stack([4 * gold - 2, 2 - 4 * gold], 1)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    loss = losses.build([("multi_teacher_kd", 0.7, {"teachers": 2, "weighting": "rl-select",
                                                    "rl": {"warmup_epochs": 0, "seed": 0,
                                                           "policy_lr": 0.05}}),
                         ("ce", 0.3, {})])
    selector = loss.losses[0].selector
    rewarded: list[int] = []
    learn = selector.learn

    def counting(passes, gather):  # every process must be rewarded with the global batch
        rewarded.append(int(gather(torch.tensor([sum(len(f.batch["labels"]) for f in passes
                                                     if f.counted)])).sum()))
        learn(passes, gather)

    selector.learn = counting
    train(model, AutoTokenizer.from_pretrained(model_dir), TaskSplit([r["sentence"] for r in rows],
                                                                     labels), loss,
          teacher=lambda batch: Outputs(ensemble[batch["index"], 0],
                                        ensemble=ensemble[batch["index"]]),
          evaluate=lambda m: 0.0, cfg=TrainingConfig(epochs=1, batch_size=16,
                                                     gradient_accumulation_steps=2,
                                                     learning_rate=3e-3),
          max_length=16, seed=0, description="rl test", keep="last")
    torch.save({"policy": selector.policy.state_dict(), "rewarded": rewarded},
               f"{out}/rank{rank}.pt")


def test_rl_selection_trains_on_two_launched_processes_with_accumulation(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """The loop itself on two gloo processes (as `accelerate launch` starts them), each
    accumulating two passes: every step rewards the policy with the whole global batch of 16,
    and the two processes' policies stay identical while they learn."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_train_rank, args=(port, str(tiny_model_dir), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["rewarded"] == ranks[1]["rewarded"] == [16, 16, 16, 16]
    first, second = ranks[0]["policy"], ranks[1]["policy"]
    assert torch.equal(first["weight"], second["weight"]) and torch.equal(first["bias"],
                                                                          second["bias"])
    assert first["weight"].abs().sum() > 0  # it learnt

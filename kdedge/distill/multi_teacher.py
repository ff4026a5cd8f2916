"""Multi-teacher distillation: per-teacher KD terms and the reinforced teacher selector.

The loss that weighs them is `multi_teacher_kd` in losses.py.

Every teacher tokenizes the raw text itself and its logits are cached; only the class logits
meet, so the teachers may differ in architecture and vocabulary but must share the labels.
The loss is, per instance j, sum_k w_jk * KD(teacher k, student), averaged over the batch:

- uniform: w_jk = 1/K;  fixed: w_jk = the configured weights, normalized;
- rl-select (Yuan et al. 2021, "Reinforced Multi-Teacher Selection for Knowledge
  Distillation"): a logistic policy looks at the state of each (instance, teacher) pair (as in
  the paper: the teacher's soft labels and its loss against the gold label, here with the
  student's soft labels and more) and samples whether that teacher's soft targets are used;
  w_jk = a_jk / sum_k a_jk (no teacher selected: the gold-label term alone). After each
  optimizer step the policy is rewarded by the student's gold-label performance on the
  instance, compared with the other instances of the batch (REINFORCE with the batch mean as
  baseline, or a moving average). During the warm-up epochs every teacher is used and the
  policy does not learn.

The reward: `ce_drop` (default) is the student's gold loss on the instance just before the step
minus just after it, both in eval mode on the same rows: the paper's reward is the student's
performance after the update (`neg_ce`, minus the loss after), and the drop is that same
quantity with the instance's own difficulty (its loss before) taken off, so the advantage
says what the step did rather than how hard the row is. Without dropout in either forward,
the only difference between the two is the update.

With gradient accumulation a step's rows come in several passes: each pass's states and
actions are kept and rewarded with that pass's outputs. With several processes, every process
gathers the whole global batch's states, actions and rewards and makes the same policy
update, so the policies stay identical without being broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdedge.distill.divergence import tempered_kl
from kdedge.training.outputs import Feedback, Outputs

Gather = Callable[[torch.Tensor], torch.Tensor]  # one process's rows -> every process's, in order


def has_gold(labels: torch.Tensor) -> torch.Tensor:
    """Rows with a gold label: teacher-labelled rows carry -100 (classes) or NaN (scores)."""
    return ~torch.isnan(labels) if labels.is_floating_point() else labels != -100


def gold_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Per-row loss against the gold label (CE, or squared error for scores); 0 where none."""
    known = has_gold(labels)
    if regression:
        target = torch.where(known, labels, torch.zeros_like(labels)).to(logits.dtype)
        return torch.where(known, (logits[..., 0] - target) ** 2, torch.zeros_like(target))
    safe = torch.where(known, labels, torch.zeros_like(labels))
    return F.cross_entropy(logits, safe, reduction="none") * known


def per_teacher_kd(student: torch.Tensor, ensemble: torch.Tensor, temperature: float,
                   regression: bool) -> torch.Tensor:
    """(batch, teachers): T^2 KL(teacher_k || student) at T per row, or squared score error."""
    if regression:
        return (ensemble[..., 0] - student[:, None, 0]) ** 2
    return tempered_kl(student[:, None, :], ensemble, temperature)


class TeacherSelector:
    """A Bernoulli policy per (instance, teacher) pair, trained by REINFORCE.

    State features (all detached, on the CPU where the policy lives): the teacher's id
    (one-hot), its soft labels (class probabilities; its score for regression), its loss
    against the gold label (log1p), the student's soft labels, the teacher's confidence and
    normalized entropy, the student-teacher divergence (log1p), and optionally the instance's
    sentence vector from the first teacher.
    """

    def __init__(self, teachers: int, warmup_epochs: int = 1, policy_lr: float = 0.01,
                 init_probability: float = 0.9, reward: str = "ce_drop", baseline: str = "batch",
                 baseline_decay: float = 0.9,
                 state_features: tuple[str, ...] = ("teacher_id", "teacher_probs", "teacher_gold_ce",
                                                    "student_probs"),
                 regression: bool = False, seed: int = 0) -> None:
        if regression and {"teacher_confidence", "teacher_entropy"} & set(state_features):
            raise ValueError("teacher_confidence and teacher_entropy need class probabilities; "
                             "drop them from rl.state_features for a regression task")
        self.teachers, self.features, self.regression = teachers, tuple(state_features), regression
        self.warmup_epochs, self.reward, self.decay = warmup_epochs, reward, baseline_decay
        self.init_probability, self.policy_lr = init_probability, policy_lr
        self.policy: nn.Linear | None = None  # sized on the first batch (instance width)
        self.optimizer: torch.optim.Optimizer | None = None
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline_kind, self.baseline = baseline, None
        self.learning = warmup_epochs == 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (states, actions) per pass
        self._epoch_actions: list[torch.Tensor] = []
        self._epoch_probs: list[torch.Tensor] = []

    def begin_epoch(self, epoch: int) -> None:
        self.learning = epoch > self.warmup_epochs
        self._epoch_actions, self._epoch_probs = [], []

    def end_epoch(self) -> dict[str, float]:
        """Share of instances each teacher was used for, and the policy's mean probability."""
        if not self._epoch_actions:
            return {}
        actions = torch.cat(self._epoch_actions).mean(0).tolist()
        probs = torch.cat(self._epoch_probs).mean(0).tolist()
        out = {f"teacher{k}_selected": round(a, 4) for k, a in enumerate(actions)}
        out.update({f"teacher{k}_policy_p": round(p, 4) for k, p in enumerate(probs)})
        return out

    def state(self, student: torch.Tensor, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        """(batch, teachers, features)."""
        assert teacher.ensemble is not None
        ensemble = teacher.ensemble.detach().float().cpu()
        student, labels = student.detach().float().cpu(), labels.cpu()
        batch, k = ensemble.shape[:2]
        columns: list[torch.Tensor] = []
        for name in self.features:
            if name == "teacher_id":
                columns.append(torch.eye(k).expand(batch, k, k))
            elif name == "teacher_probs":
                columns.append(ensemble[..., :1] if self.regression else ensemble.softmax(-1))
            elif name == "student_probs":
                mine = student[:, :1] if self.regression else student.softmax(-1)
                columns.append(mine[:, None, :].expand(batch, k, mine.shape[-1]))
            elif name == "teacher_gold_ce":
                gold = torch.stack([gold_loss(ensemble[:, i], labels, self.regression)
                                    for i in range(k)], 1)
                columns.append(gold.log1p()[..., None])
            elif name == "teacher_confidence":
                columns.append(ensemble.softmax(-1).amax(-1, keepdim=True))
            elif name == "teacher_entropy":
                p = ensemble.softmax(-1)
                entropy = -(p * p.clamp(min=1e-12).log()).sum(-1, keepdim=True)
                columns.append(entropy / math.log(ensemble.shape[-1]))
            elif name == "student_teacher_kl":
                columns.append(per_teacher_kd(student, ensemble, 1.0, self.regression).log1p()[..., None])
            elif name == "instance":
                if teacher.sentence is None or "cls" not in teacher.sentence:
                    raise ValueError("the instance feature needs the teacher's cached sentence vectors")
                vector = teacher.sentence["cls"].detach().float().cpu()
                columns.append(vector[:, None, :].expand(batch, k, vector.shape[-1]))
        return torch.cat([c.float() for c in columns], -1)

    def _policy(self, width: int) -> nn.Linear:
        if self.policy is None:
            self.policy = nn.Linear(width, 1)
            nn.init.zeros_(self.policy.weight)
            p = self.init_probability
            nn.init.constant_(self.policy.bias, math.log(p / (1 - p)))
            self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.policy_lr)
        return self.policy

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resumed run needs to select as this one would: policy, its optimizer, the
        sampling generator and the moving baseline (tensors and plain values only)."""
        return {"policy": None if self.policy is None else self.policy.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline}

    def restore_state(self, state: dict[str, Any]) -> None:
        if state["policy"] is not None:
            self._policy(state["policy"]["weight"].shape[1]).load_state_dict(state["policy"])
            assert self.optimizer is not None
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]

    def select(self, student: torch.Tensor, teacher: Outputs, batch: dict[str, Any]) -> torch.Tensor:
        """(batch, teachers) 0/1 actions for this pass; every teacher during warm-up. While the
        policy learns, the pass's states and actions wait for the step's feedback (`learn`)."""
        states = self.state(student, teacher, batch["labels"])
        with torch.no_grad():
            probs = torch.sigmoid(self._policy(states.shape[-1])(states)[..., 0])
        if self.learning:
            actions = torch.bernoulli(probs, generator=self.generator)
            self._pending.append((states, actions))
        else:
            actions = torch.ones_like(probs)
        self._epoch_actions.append(actions)
        self._epoch_probs.append(probs)
        return actions.to(student.device)

    def learn(self, passes: list[Feedback], gather: Gather) -> None:
        """REINFORCE on the step's rows, every pass and (through `gather`) every process."""
        pending, self._pending = self._pending, []
        if not self.learning:
            return
        assert len(pending) == len(passes), "one selection per accumulation pass"
        kept = [(p, f) for p, f in zip(pending, passes, strict=True) if f.counted]
        if kept:
            states = torch.cat([p[0] for p, _ in kept])
            actions = torch.cat([p[1] for p, _ in kept])
            labels = torch.cat([f.batch["labels"].cpu() for _, f in kept])
            before = torch.cat([f.before.logits.detach().float().cpu() for _, f in kept])
            after = torch.cat([f.after.logits.detach().float().cpu() for _, f in kept])
            loss_after = gold_loss(after, labels, self.regression)
            reward = (gold_loss(before, labels, self.regression) - loss_after
                      if self.reward == "ce_drop" else -loss_after)
            known = has_gold(labels)
        else:  # a process without rows this step still joins the gathering
            width = self._policy_width()
            states, actions = torch.zeros(0, self.teachers, width), torch.zeros(0, self.teachers)
            reward, known = torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        states, actions, reward, known = (gather(t) for t in (states, actions, reward, known))
        if not bool(known.any()):
            return
        reward = reward[known]
        if self.baseline_kind == "batch":  # what the step did to every row, its own action aside
            advantage = reward - reward.mean()
        else:
            mean = float(reward.mean())
            baseline = mean if self.baseline is None else self.baseline
            advantage = reward - baseline
            self.baseline = self.decay * baseline + (1 - self.decay) * mean
        assert self.policy is not None and self.optimizer is not None
        logits = self.policy(states[known])[..., 0]
        log_prob = -F.binary_cross_entropy_with_logits(logits, actions[known], reduction="none")
        loss = -(advantage[:, None] * log_prob).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _policy_width(self) -> int:
        assert self.policy is not None, "the policy is sized by the first selection"
        return self.policy.in_features

"""One typed, frozen config tree. YAML in, YAML out, validated before any work starts.

Precedence, lowest first: field defaults < the demo preset (only when the data is the demo)
< the YAML file given with --config < options on the command line.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdedge.errors import KdedgeError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Section):
    """Optimizer and loop settings shared by teacher fine-tuning and distillation."""

    epochs: int = Field(3, ge=1)  # with patience: the most epochs
    patience: int | None = Field(None, ge=1)  # stop once the validation score has not improved
    # for this many epochs (the best epoch is kept); None: run every epoch
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # linear warm-up, then linear decay to 0
    max_grad_norm: float = Field(1.0, gt=0)
    # each process's share of a batch is split into this many passes before the optimizer
    # step: less memory, the same step (batch_size stays the global batch of one step)
    gradient_accumulation_steps: int = Field(1, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # autocast; fp16 needs a CUDA GPU
    length_buckets: bool | None = None  # batch rows of similar token counts: about half the
    # padded tokens on short real texts, teacher epochs 1.6-1.9x faster (benchmarks/results/
    # real-data.md), but batches are then less random; None: the task kind's choice (on for
    # classes; off for regression, where a score that follows length cost accuracy)


class RunConfig(_Section):
    out: Path | None = None  # the run directory; default runs/<dataset name>
    seed: int = 42  # seeds python, numpy and torch, and the data split
    threads: int | None = Field(None, ge=1)  # torch threads for training; default: all cores


class DataConfig(_Section):
    source: str = "demo"  # "demo" (or "demo-news", "demo-noisy"), a CSV / JSONL / Parquet file, or a
    # datasets name
    dataset_config: str | None = None  # datasets config name, e.g. "sst2" for "glue"
    text_columns: tuple[str, ...] = ("text",)  # one column, or two for sentence pairs
    label_column: str = "label"
    teacher_text_column: str | None = None  # paired views: the teacher reads this column in
    # place of text_columns[0] (the clean text beside a noisy or transcribed one), the student
    # and every shipped model read text_columns; classification and regression only
    task: str = "auto"  # "auto" or a task kind: classification, regression, seq2seq, causal-lm, ...
    # auto: regression when the labels are numbers with fractions (3.8), classification otherwise
    # (names, integers, bools). seq2seq / causal-lm: text_columns[0] is the source (the prompt)
    # and label_column the target text (the continuation); never inferred, always given
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)  # used when the data has no such split
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_train_samples: int | None = Field(None, ge=1)  # a seeded, stratified subset
    max_eval_samples: int | None = Field(None, ge=1)  # caps validation and test alike
    max_length: int = Field(128, ge=8, le=4096)  # tokens; longer texts are truncated and counted
    max_target_length: int = Field(32, ge=2, le=1024)  # generation: target tokens kept, and the
    # most tokens generated per source when evaluating
    duplicates: Literal["group", "ignore"] = "group"  # group: copies of a text (equal once
    # whitespace and case are normalised) stay in one split, and train rows repeating a text of
    # the source's own validation / test split are dropped; ignore: rows are split one by one
    min_class_examples: int = Field(5, ge=1)  # a class with fewer in any split is warned about
    imbalance_ratio: float = Field(5.0, gt=1)  # warn when train's largest class has this many
    # times the examples of its smallest

    @field_validator("text_columns", mode="before")
    @classmethod
    def _one_or_two(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, list | tuple):
            return value  # pydantic's own type check names it
        if not 1 <= len(value) <= 2:
            raise ValueError("give one text column, or two for sentence pairs")
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from kdedge import tasks

        if value != tasks.AUTO and value not in tasks.KINDS:
            raise ValueError(f"unknown task; known: {', '.join([tasks.AUTO, *tasks.names()])}")
        return value

    @model_validator(mode="after")
    def _distinct_views(self) -> DataConfig:
        column = self.teacher_text_column
        if column is not None and (column in self.text_columns or column == self.label_column):
            role = "the label column" if column == self.label_column else "a student's text column"
            raise ValueError(f"teacher_text_column {column!r} is {role}; name the column of the "
                             "teacher's own view (the clean text), or unset it")
        return self


class TeacherConfig(_Section):
    model: str = "demo"  # "demo", a local directory, or a Hugging Face hub id
    revision: str | None = None  # hub revision (branch, tag or commit) for reproducible loads
    fine_tune: Literal["auto", "always", "never"] = "auto"  # auto: only without a matching head
    trust_remote_code: bool = False  # runs code from the model repository: opt in knowingly
    # until validation stops improving: an under-trained teacher is a weak reference for the
    # student, which can then even beat it
    training: TrainingConfig = TrainingConfig(epochs=5, patience=1, learning_rate=5e-5)
    lm_weight: float = Field(0.0, ge=0)  # causal-lm fine-tuning: lambda x the prompt's NLL beside
    # the target's (LAMOL's objective); the lifelong recipe sets it to its own lambda for every
    # task teacher unless given, since its word-level KD reads the teachers' prompt distributions


class AnnealingConfig(_Section):
    """Annealing-KD (Jafari et al. 2021). The paper's GLUE runs used tau_max 7, 14 + 4 epochs."""

    tau_max: int = Field(7, ge=1)  # phase I raises Phi from 1/tau_max to 1 in tau_max steps
    phase1_epochs: int = Field(7, ge=1)  # MSE to Phi x teacher logits; at least tau_max
    phase2_epochs: int = Field(2, ge=1)  # gold-label CE from the best phase-I checkpoint
    clamp_phi: bool = True  # hold Phi at 1 when phase1_epochs is not a multiple of tau_max

    @model_validator(mode="after")
    def _reaches_one(self) -> AnnealingConfig:
        if self.phase1_epochs < self.tau_max:
            raise ValueError(f"phase1_epochs {self.phase1_epochs} is below tau_max {self.tau_max}, so "
                             "Phi never reaches 1; raise phase1_epochs or lower tau_max")
        return self


class TwoStageConfig(_Section):
    """Two-stage KD (Kim et al. 2021): sentence vectors first, then logits."""

    stage1_epochs: int = Field(1, ge=1)  # match sentence vectors; the head is not trained
    stage2_epochs: int = Field(2, ge=1)
    stage2: Literal["l1", "kd"] = "l1"  # the paper's CE + L1 between logits (summed over classes,
    # averaged over the batch, no temperature), or distill.logit_loss with alpha and temperature
    pooling: Literal["cls", "mean"] = "cls"  # the paper matched [CLS] vectors
    distance: Literal["mse", "cosine", "l1"] = "l1"  # stage 1; the paper's choice is unpublished,
    # L1 matches its stage 2
    span_mask_prob: float = Field(0.2, ge=0, lt=1)  # stage 2: the student reads its tokens with
    # spans masked (the paper's select_prob; 0: off), the teacher the clean text
    span_mask_max: int = Field(5, ge=1)  # tokens per masked span


class AugmentConfig(_Section):
    """Teacher-labelled augmentation (QE-style; Gajbhiye et al. 2021). Off unless asked for."""

    unlabeled: str | None = None  # "unused": train rows cut by data.max_train_samples; or a file
    text_column: str = "text"  # the column of that file
    pair_column: str | None = None  # its second text column, which a sentence-pair task needs
    teacher_column: str | None = None  # paired views: the file's column of the teacher's view
    # of each text; default the data's teacher_text_column
    max_unlabeled: int | None = Field(None, ge=1)  # a seeded sample of the pool
    mask_copies: int = Field(0, ge=0)  # masked copies of every training text
    mask_prob: float = Field(0.15, gt=0, lt=1)  # share of words masked in a copy
    mask_span: int = Field(1, ge=1)  # words per masked span
    min_confidence: float | None = Field(None, gt=0, le=1)  # keep added rows whose teacher top
    # probability reaches this (the paper's exact confidence criterion is not published)
    max_score_std: float | None = Field(None, gt=0)  # regression: keep added rows whose teacher
    # score varies by at most this (standard deviation) over mc_samples dropout passes
    mc_samples: int = Field(8, ge=2)  # teacher passes with dropout on, for max_score_std

    @property
    def active(self) -> bool:
        return self.unlabeled is not None or self.mask_copies > 0


STATE_FEATURES = ("teacher_id", "teacher_probs", "teacher_gold_ce", "student_probs",
                  "teacher_confidence", "teacher_entropy", "student_teacher_kl", "instance")


class RLSelectConfig(_Section):
    """Reinforced teacher selection (Yuan et al. 2021). The paper's hyper-parameters are not
    published; these defaults are ours (see docs/recipes.md)."""

    warmup_epochs: int = Field(1, ge=0)  # all teachers selected; the policy does not learn yet
    policy_lr: float = Field(0.01, gt=0)  # Adam on the policy, once per batch
    init_probability: float = Field(0.9, gt=0, lt=1)  # of selecting a teacher, before learning
    reward: Literal["ce_drop", "neg_ce"] = "ce_drop"  # the student's gold loss on the row before
    # - after the step, both in eval mode (default), or the paper's: minus the loss after
    baseline: Literal["batch", "ema"] = "batch"  # subtract the batch's mean reward, or a moving average
    baseline_decay: float = Field(0.9, ge=0, lt=1)  # of the moving average
    state_features: tuple[str, ...] = STATE_FEATURES[:4]  # per instance and teacher: the
    # paper's (the teacher's soft labels and its gold loss) with the student's soft labels

    @field_validator("state_features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in STATE_FEATURES]
        if unknown or not value:
            raise ValueError(f"use a non-empty subset of {', '.join(STATE_FEATURES)}")
        return value


class MultiTeacherConfig(_Section):
    """Several teachers of the same labels; the teacher stage's model is the first of them."""

    teachers: tuple[TeacherConfig, ...] = ()  # the others; each fine-tuned like the teacher
    weighting: Literal["uniform", "fixed", "rl-select"] = "uniform"
    weights: tuple[float, ...] | None = None  # fixed: one per teacher, the stage's teacher first
    rl: RLSelectConfig = RLSelectConfig()

    @model_validator(mode="after")
    def _weights_fit(self) -> MultiTeacherConfig:
        count = 1 + len(self.teachers)
        if self.weighting == "fixed":
            if self.weights is None or len(self.weights) != count:
                raise ValueError(f"fixed weighting needs weights, one per teacher ({count}: the "
                                 "teacher stage's first, then distill.multi_teacher.teachers)")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
        return self


class TaskConfig(_Section):
    """Another task for multi-task distillation: its data and its teacher."""

    name: str = Field(min_length=1)  # names its head and its folder under 03_distill/tasks/
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()  # fine-tuned on this task's data unless it has a head

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        """The name becomes a folder inside the run: it may not climb out of it."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value) or ".." in value:
            raise ValueError("use letters, digits, '-', '_' and '.' only (it names a folder in the run)")
        return value


def distinct_names(tasks: tuple[TaskConfig, ...]) -> tuple[TaskConfig, ...]:
    """Other tasks name folders in the run and rows in the report: one name each."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names) or "target" in names:
        raise ValueError("give every task its own name, other than 'target'")
    return tasks


class MultiTaskConfig(_Section):
    """MKD (Liu et al. 2019): a shared student, a head per task, trained on every task's batches.

    The run's data and teacher are the target task; these are the others. Tasks may mix
    classification and regression; each head keeps its own losses and metric.
    """

    tasks: tuple[TaskConfig, ...] = ()
    teacher: Literal["multi-task", "per-task"] = "multi-task"  # multi-task (the paper's): the
    # teacher stage's teacher gets a head per task and is fine-tuned on every task at once
    # (teacher.training), then the student distils from its heads; per-task: each task's own
    # teacher (tasks[].teacher), fine-tuned on that task alone
    sampler: Literal["proportional", "temperature", "uniform"] = "proportional"  # which task's
    # batch comes next: p_t proportional to n_t, to n_t^(1/T), or equal
    sampler_temperature: float = Field(2.0, ge=1)
    logit_loss: Literal["mse", "kl", "l1"] = "mse"  # the paper regresses logits (Tang et al.)
    finetune_epochs: int = Field(1, ge=0)  # then the target task alone (0: skip)

    @field_validator("tasks")
    @classmethod
    def _distinct_names(cls, value: tuple[TaskConfig, ...]) -> tuple[TaskConfig, ...]:
        return distinct_names(value)

    @model_validator(mode="after")
    def _teachers_read(self) -> MultiTaskConfig:
        """A task's own teacher section is read by per-task teachers only: never ignore it."""
        own = [t.name for t in self.tasks if t.teacher != TeacherConfig()]
        if self.teacher == "multi-task" and own:
            raise ValueError(f"task {own[0]!r} names its own teacher, which only the per-task "
                             "teachers read; set distill.multi_task.teacher to per-task, or drop "
                             "its teacher section")
        return self

    @property
    def task_teachers(self) -> tuple[TeacherConfig, ...]:
        """The other tasks' own teachers, as far as the run uses them."""
        return tuple(t.teacher for t in self.tasks) if self.teacher == "per-task" else ()


class GenerationDistillConfig(_Section):
    """Settings of the generation recipes (methods-from-papers.md, ImitKD and L2KD).

    word-kd: alpha x soft cross-entropy to the teacher's per-token distribution + (1 - alpha) x
    gold cross-entropy. seq-kd: the teacher's beam outputs are the targets. imitkd: with
    probability beta a sequence keeps its data context, else the student's own rollout.
    """

    decoder: Literal["transformer", "gru"] = "transformer"  # the teacher's decoder layers, or a
    # GRU with attention over the encoder states (models/gru_decoder.py)
    decoder_layers: int | None = Field(None, ge=1)  # transformer: default as many as the encoder
    # keeps; gru: the GRU's depth (default 1)
    gru_hidden: int | None = Field(None, ge=8)  # the GRU's width; default the teacher's
    top_k: int | None = Field(None, ge=1)  # word-kd: the teacher's top k tokens only, renormalised
    beams: int = Field(4, ge=1)  # seq-kd: the teacher's beam width
    seq_kd_word_weight: float = Field(0.0, ge=0, le=1)  # seq-kd: weight of word-level KD beside it
    schedule: Literal["exponential", "linear", "reverse-sigmoid", "constant"] = "exponential"
    schedule_base: float = Field(200.0, gt=1)  # exponential: beta = base ** -(step / steps)
    schedule_warmup: float = Field(0.0, ge=0, lt=1)  # exponential: beta held at 1 for this share
    # of the steps, then base ** -(step / steps - warmup)
    beta: float = Field(1.0, ge=0, le=1)  # constant schedule's value
    imitation_target: Literal["oracle", "full"] = "oracle"  # the teacher's argmax (ImitKD) or its
    # whole distribution (ImitKD+Full) on the mixed contexts
    rollout: Literal["greedy", "sample"] = "greedy"  # how the student rolls out its contexts
    imitation_data: Literal["gold", "teacher"] = "gold"  # imitkd's data contexts: the gold
    # targets (ImitKD), or the teacher's beam outputs (ImitKD*, the paper's strongest)
    rollout_top_k: int = Field(5, ge=1)  # sampled rollouts draw from the student's top k


class LifelongConfig(_Section):
    """L2KD (Chuang et al. 2020) on LAMOL: a stream of tasks learnt one after another by one
    decoder-only model. For each task a teacher is fine-tuned on that task alone, then the
    lifelong model learns the task from it, replaying pseudo-samples of the earlier tasks that
    it generates itself. The run's data is the last task of the stream; these come before it.
    """

    tasks: tuple[TaskConfig, ...] = ()  # their data takes the run's task kind and lengths
    kd: Literal["word", "seq", "seq-soft", "none"] = "word"  # word-level KD, the teacher's
    # greedy outputs as targets, or both; none: the gold targets with NLL and no teacher (LAMOL
    # itself with replay generated, plain fine-tuning in sequence with replay none)
    temperature: float = Field(2.0, gt=0)  # word-level KD: tau^2 KL at this temperature
    lm_weight: float = Field(0.25, ge=0)  # lambda: the language-model term on the prompt
    replay: Literal["generated", "real", "none"] = "generated"  # LAMOL pseudo-samples, real
    # rows of the earlier tasks (an upper bound on replay), or nothing (plain fine-tuning)
    replay_ratio: float = Field(0.2, ge=0, le=1)  # gamma: replayed rows per new task's row
    replay_top_k: int = Field(20, ge=1)  # pseudo-samples are sampled from the model's top k
    multitask_baseline: bool = True  # also train the same student on every task at once

    @field_validator("tasks")
    @classmethod
    def _distinct_names(cls, value: tuple[TaskConfig, ...]) -> tuple[TaskConfig, ...]:
        return distinct_names(value)


class SearchConfig(_Section):
    """distill.student auto: the candidate students and the budget the winner must meet
    (kdedge/search/run.py)."""

    candidates: tuple[str, ...] = (  # distill.student specs, one per candidate
        "3", "2", "transformer:layers=4,hidden_size=256,heads=4",
        "bilstm:hidden_size=256,init_embeddings=true")
    vocabulary: str = "trim"  # every candidate's distill.vocabulary
    min_retention: float = Field(0.97, gt=0)  # of the teacher's primary validation metric
    max_latency_ms: float | None = Field(None, gt=0)  # batch-1 p50 on the target
    min_speedup: float | None = Field(None, gt=0)  # teacher latency / candidate latency
    first_epochs: int = Field(1, ge=1)  # every candidate trains this many epochs of its schedule,
    cost: float = Field(2.0, ge=1)  # then the most promising train to its end while the whole
    # search stays within this many times the costliest candidate's own distillation (timed by
    # the first epochs); the most promising one always finishes
    margin: float = Field(0.02, ge=0, lt=1)  # a candidate this far below min_retention after the
    # first epochs may still reach it, so it is worth finishing
    target_latency: Path | None = None  # the results JSON of `kdedge bench PROBE_BUNDLE` on the
    # target device: the candidates' latencies are read from it instead of timed here
    # (kdedge/search/device.py); None: timed on this machine

    @field_validator("candidates")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("give one or more distinct student specs")
        if "auto" in value:
            raise ValueError("a candidate is a student spec, not auto")
        return value

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _vocabulary(cls, value: Any) -> str:
        return _vocabulary_setting(value)


def _vocabulary_setting(value: Any) -> str:
    from kdedge.models.vocabulary import vocabulary_setting

    try:
        return str(vocabulary_setting(value))
    except KdedgeError as error:
        raise ValueError(str(error)) from None


AUTO_STUDENT = "auto"


class DistillConfig(_Section):
    student: str = "auto"  # layer count, teacher layers "1,3,5", a directory, a hub id, or auto
    # (the student search: distill.search); build_config gives the task kind's default
    vocabulary: str = "full"  # full | trim | a size: a student reading the teacher's WordPiece
    # tokenizer keeps only the pieces its training texts use (kdedge/models/vocabulary.py)
    recipe: str = "kd"  # kd | annealing | two-stage | multi-teacher | multi-task | gold; for
    # generation: gold | word-kd | seq-kd | imitkd | lifelong (causal-lm)
    temperature: float = Field(2.0, gt=0)  # softens both distributions in the KD term
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the KD term; 1 - alpha weighs gold-label CE
    logit_loss: Literal["kl", "mse", "l1"] = "kl"  # KL on softened logits, or MSE / L1 on raw ones
    annealing: AnnealingConfig = AnnealingConfig()
    two_stage: TwoStageConfig = TwoStageConfig()
    augment: AugmentConfig = AugmentConfig()  # composable with every recipe
    multi_teacher: MultiTeacherConfig = MultiTeacherConfig()
    multi_task: MultiTaskConfig = MultiTaskConfig()
    generation: GenerationDistillConfig = GenerationDistillConfig()
    lifelong: LifelongConfig = LifelongConfig()
    search: SearchConfig = SearchConfig()
    training: TrainingConfig = TrainingConfig(epochs=3, learning_rate=1e-4)  # per phase when
    # a recipe sets its own epochs (annealing), only the optimizer settings apply

    @field_validator("student", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _vocabulary(cls, value: Any) -> str:
        return _vocabulary_setting(value)

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        from kdedge.distill.recipes import RECIPES

        if value not in RECIPES:
            raise ValueError(f"unknown recipe; known: {', '.join(RECIPES.names())}")
        return value

    @model_validator(mode="after")
    def _recipe_has_inputs(self) -> DistillConfig:
        if self.recipe == "multi-teacher" and not self.multi_teacher.teachers:
            raise ValueError("the multi-teacher recipe needs distill.multi_teacher.teachers, e.g. "
                             "--extra-teacher DIR or --set 'distill.multi_teacher.teachers=[{model: DIR}]'")
        if self.recipe == "lifelong" and not self.lifelong.tasks:
            raise ValueError("the lifelong recipe needs the earlier tasks of the stream in "
                             "distill.lifelong.tasks, e.g. --set 'distill.lifelong.tasks=[{name: "
                             "first, data: {source: first.csv}}]'")
        if self.recipe == "multi-task" and not self.multi_task.tasks:
            raise ValueError("the multi-task recipe needs distill.multi_task.tasks, e.g. --set "
                             "'distill.multi_task.tasks=[{name: news, data: {source: demo-news}}]'")
        return self


class ExportConfig(_Section):
    opset: int = Field(18, ge=14, le=21)  # optimum's minimum for BERT-class exports is 18
    atol: float = Field(1e-4, gt=0)  # max |onnx - pytorch| allowed on the parity batches
    parity_samples: int = Field(32, ge=1)  # real validation texts compared at two batch shapes


class CalibrationConfig(_Section):
    """Static quantization's activation ranges, from training texts streamed in batches."""

    samples: int = Field(300, ge=1)  # the first N training examples
    batch_size: int = Field(8, ge=1)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    window: int = Field(4, ge=1)  # batches folded into the ranges at a time: bounds memory


class QuantizeConfig(_Section):
    mode: Literal["dynamic", "static"] = "dynamic"  # static: int8 QDQ with calibration
    preset: Literal["auto", "avx2", "avx512", "avx512_vnni", "arm64"] = "auto"  # auto: this CPU
    per_channel: bool = False
    reduce_range: bool = False  # 7-bit weights: avoids u8s8 saturation on AVX2 / AVX-512
    activation_type: Literal["int8", "uint8"] | None = None  # static only; default: the preset's
    weight_type: Literal["int8", "uint8"] | None = None  # default: the preset's
    exclude_nodes: tuple[str, ...] = ()  # node names kept in float
    calibration: CalibrationConfig = CalibrationConfig()
    optimization: Literal["none", "O1", "O2", "O3"] = "none"  # optimum's ORTOptimizer first
    preprocess: bool = False  # onnxruntime's quant_pre_process (shape inference) first
    max_drop: float | str | None = 0.01  # validation primary metric: 0.01 absolute, "1%" relative
    strict: bool = False  # a failed accuracy gate stops the run with an error
    fp16: bool = False  # also write student-fp16/ (for GPU targets)

    @field_validator("max_drop", mode="before")
    @classmethod
    def _drop(cls, value: Any) -> Any:
        from kdedge.errors import KdedgeError
        from kdedge.quantize.gate import parse_max_drop

        if not isinstance(value, int | float | str | None):
            return value  # pydantic's own type check names it
        try:
            parse_max_drop(value)
        except KdedgeError as err:
            raise ValueError(str(err).split("; ", 1)[-1].rstrip(".")) from None
        return value

    @model_validator(mode="after")
    def _static_only(self) -> QuantizeConfig:
        if self.mode == "dynamic" and self.activation_type == "int8":
            raise ValueError("quantize.activation_type int8 needs quantize.mode=static (dynamic "
                             "quantization computes uint8 activations); drop it or use static")
        return self


class BenchConfig(_Section):
    """The grid every model is timed over: targets x thread counts x lengths x batch sizes.

    The first thread count and sequence length are the headline configuration that the report
    ranks by; the others are the sweep. A scalar is taken as a one-element list.
    """

    models: tuple[str, ...] = ("teacher-pytorch", "teacher-onnx", "student-onnx", "student-int8",
                               "student-fp16")
    # default: the targets this machine has; an asked one that is absent (no GPU here, no
    # TensorRT in this onnxruntime) is skipped once, with the reason
    targets: tuple[Literal["cpu", "cuda", "tensorrt"], ...] | None = None
    batch_sizes: tuple[int, ...] = (1, 32)
    sequence_lengths: tuple[int, ...] | None = None  # default: what 95% of the texts fit in
    threads: tuple[int, ...] | None = None  # same for every model; default: physical cores
    warmup_runs: int = Field(10, ge=0)
    min_runs: int = Field(50, ge=1)
    min_duration_s: float = Field(5.0, ge=0)

    @field_validator("batch_sizes", "sequence_lengths", "threads", "targets", "models",
                     mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return (value,) if isinstance(value, int | str) else value

    @field_validator("batch_sizes", "sequence_lengths", "threads")
    @classmethod
    def _positive(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("give at least one value, each at least 1")
        return value if value is None else tuple(dict.fromkeys(value))


class ReportConfig(_Section):
    formats: tuple[Literal["json", "md", "html"], ...] = ("json", "md", "html")
    min_retained_accuracy: float = Field(0.95, gt=0, le=1.0)  # vs the teacher, to be recommended


class BundleConfig(_Section):
    """The deployment bundle: which artifact it ships, and texts for benchmarking on a device."""

    artifact: Literal["auto", "student-int8", "student-onnx", "teacher-onnx"] = "auto"  # auto:
    # the report's recommendation, or the fp32 student when it recommends nothing
    sample_texts: int = Field(32, ge=1)  # test texts copied to sample_texts.txt
    web: bool = True  # web/: the transformers.js layout (fp32 and q8), for transformer students
    mobile: bool = True  # mobile/: model.ort and its operator list for a reduced onnxruntime


class KdedgeConfig(_Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    bench: BenchConfig = BenchConfig()
    report: ReportConfig = ReportConfig()
    bundle: BundleConfig = BundleConfig()

    @model_validator(mode="after")
    def _consistent(self) -> KdedgeConfig:
        from kdedge import tasks

        tasks.declared(self.data.task).check(self.distill.recipe, self.data.task)
        self._views_fit()
        if (self.distill.recipe == "multi-task" and self.distill.multi_task.teacher == "multi-task"
                and self.teacher.fine_tune == "never"):
            raise ValueError("teacher.fine_tune never keeps the teacher as it is, but the "
                             "multi-task teacher is that teacher fine-tuned on every task; set "
                             "distill.multi_task.teacher to per-task, or teacher.fine_tune to auto")
        longest = max(self.bench.sequence_lengths or (0,))
        if longest > self.data.max_length:
            raise ValueError(
                f"bench.sequence_lengths {longest} exceeds data.max_length "
                f"{self.data.max_length}; lower it or raise data.max_length"
            )
        return self

    def _views_fit(self) -> None:
        """Paired views (data.teacher_text_column) need a kind whose teacher reads texts the
        student also reads (a labelled one), and a view of every text the teacher labels."""
        from kdedge import tasks

        kind = tasks.declared(self.data.task)
        others = [*self.distill.multi_task.tasks, *self.distill.lifelong.tasks]
        paired = [d for d in (self.data, *(t.data for t in others)) if d.teacher_text_column]
        if paired and not kind.paired_views:
            raise ValueError(f"data.teacher_text_column (paired views) does not fit data.task "
                             f"{self.data.task}: only a classification or regression teacher "
                             "reads another view of the student's text; unset it")
        augment = self.distill.augment
        if augment.teacher_column is not None and self.data.teacher_text_column is None:
            raise ValueError("distill.augment.teacher_column names the teacher's view of the "
                             "unlabelled file, which only paired views read; set "
                             "data.teacher_text_column or unset it")


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Return base updated by top, recursing into nested dicts."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"distill.alpha": 0.3} -> {"distill": {"alpha": 0.3}}."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        if not all(part.strip() for part in dotted.split(".")):
            raise KdedgeError(f"Config key {dotted!r} has an empty part; write dotted keys such as "
                              "distill.training.epochs.")
        for depth, part in enumerate(parents, start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KdedgeError(f"Config key {dotted!r} sets a field inside "
                                  f"{'.'.join(parents[:depth])!r}, which is given a value too; give "
                                  "only one of the two.")
        if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
            raise KdedgeError(f"Config key {dotted!r} is given a value and fields inside it too; give "
                              "only one of the two.")
        node[leaf] = value
    return nested


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdedgeError(f"Config file {path} does not exist; check the path given to --config.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0]
        raise KdedgeError(f"Config file {path} is not valid YAML ({first}); fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdedgeError(f"Config file {path} must hold a mapping of sections, not a list or value.")
    return data


def build_config(file_data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 ) -> KdedgeConfig:
    """Merge file and dotted CLI overrides over the defaults (and the demo preset) and validate."""
    merged = deep_merge(file_data or {}, dotted_to_nested(overrides or {}))
    data = merged.get("data")
    source = data.get("source", DataConfig().source) if isinstance(data, dict) else DataConfig().source
    task = data.get("task") if isinstance(data, dict) else None
    from kdedge import tasks
    from kdedge.data.noise import NOISY_DEMO, NOISY_PRESET

    kind = task if isinstance(task, str) else None  # a task that is not a name is left to the
    # validation below to explain
    if source == "demo":  # the built-in demo of this task kind, sized to run in minutes
        merged = deep_merge(tasks.demo_preset(kind), merged)
    if source == NOISY_DEMO:  # the same, with the teacher on the clean texts (paired views)
        merged = deep_merge(deep_merge(tasks.demo_preset(kind), NOISY_PRESET), merged)
    if kind is None or kind in tasks.names() or kind == tasks.AUTO:  # the kind's default student
        merged = deep_merge({"distill": {"student": tasks.declared(kind).default_student}}, merged)
    return validate_config(_lifelong_teachers(merged))


def _lifelong_teachers(merged: dict[str, Any]) -> dict[str, Any]:
    """L2KD trains every task teacher with LAMOL's objective (the answer's NLL + lambda x the
    prompt's): its word-level KD on the prompt reads the teachers' distributions there, which a
    teacher trained on the answers alone never learnt. The lifelong recipe's lambda becomes each
    teacher's lm_weight unless one is given, in the resolved config (so in the fingerprints)."""
    distill = merged.get("distill")
    if not isinstance(distill, dict) or distill.get("recipe") != "lifelong":
        return merged
    life = distill.get("lifelong") if isinstance(distill.get("lifelong"), dict) else {}
    weight = life.get("lm_weight", LifelongConfig().lm_weight)
    tasks = [({**t, "teacher": {"lm_weight": weight, **(t.get("teacher") or {})}}
              if isinstance(t, dict) else t) for t in life.get("tasks") or ()]
    teacher = merged.get("teacher") if isinstance(merged.get("teacher"), dict) else {}
    return {**merged, "teacher": {"lm_weight": weight, **teacher},
            "distill": {**distill, "lifelong": {**life, "tasks": tasks}}}


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> KdedgeConfig:
    return build_config(read_yaml(path) if path else {}, overrides)


def validate_config(data: dict[str, Any]) -> KdedgeConfig:
    """The config `data` gives, every field it leaves out at its default. A section given in
    part keeps its other fields' defaults: `distill.training.epochs` alone leaves distill's own
    learning rate, not TrainingConfig's."""
    try:
        return KdedgeConfig.model_validate(_section_defaults(KdedgeConfig, data))
    except ValidationError as err:
        raise KdedgeError(_explain(err)) from None


def _section_defaults(model: type[BaseModel], data: Any) -> Any:
    """`data` with every section given in part completed by the fields its default sets: a
    field declared `training: TrainingConfig = TrainingConfig(epochs=3, learning_rate=1e-4)`
    and given {"epochs": 2} becomes {"epochs": 2, "learning_rate": 1e-4}."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, field in model.model_fields.items():
        value, default = out.get(name), field.default
        if isinstance(value, dict) and isinstance(default, _Section):
            given = _section_defaults(type(default), value)
            preset = default.model_dump(include=default.model_fields_set)
            out[name] = {**preset, **given}
    return out


def dump_config(cfg: KdedgeConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _explain(err: ValidationError) -> str:
    """Turn pydantic's first error into one sentence with the key, the value and the fix."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else (
            f"known keys here: {', '.join(known)}.")
        return f"Unknown config key {key!r}; {hint}"
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return f"Invalid config: {message}."
    return f"Invalid value {first.get('input')!r} for {key}: {message}."


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = KdedgeConfig
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []

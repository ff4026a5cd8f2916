"""Checks before the first stage: every model, student spec and column a run names, and the
target device's latency file of a student search.

A wrong --student or --text-column, a missing model directory or a hub id with no network
would otherwise surface minutes in, after the data stage or teacher fine-tuning. Here each
fails at once with the stage's own one-line message; nothing is trained or written.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kdedge import tasks as task_kinds
from kdedge.config import AUTO_STUDENT, DataConfig, KdedgeConfig, TeacherConfig
from kdedge.errors import KdedgeError


def check(cfg: KdedgeConfig) -> None:
    """Raise the first problem the run would hit, as one KdedgeError line."""
    tasks = [*cfg.distill.multi_task.tasks, *cfg.distill.lifelong.tasks]
    for data in [cfg.data, *(task.data for task in tasks)]:
        _check_columns(data)
    teachers: list[TeacherConfig] = [cfg.teacher, *cfg.distill.multi_teacher.teachers,
                                     *cfg.distill.multi_task.task_teachers,
                                     *(task.teacher for task in cfg.distill.lifelong.tasks)]
    configs = [_teacher_config(t) for t in teachers]
    kind = task_kinds.declared(cfg.data.task)
    if kind.student_spec:  # a generator's student has its own builder
        specs = [cfg.distill.student]
        if cfg.distill.student == AUTO_STUDENT:
            if not kind.labelled:
                raise KdedgeError(f"distill.student auto searches students of a labelled task; "
                                  f"give a {kind.name} task one student, such as 3.")
            specs = list(cfg.distill.search.candidates)
        for spec in specs:
            _check_student(spec, configs[0], cfg.teacher.trust_remote_code)
    if cfg.distill.search.target_latency is not None:
        _check_target_latency(cfg, configs[0])


def _check_target_latency(cfg: KdedgeConfig, teacher: Any) -> None:
    """The device's results file times this run's candidates (the teacher too, when its layer
    count is known here), at bench.sequence_lengths when set (a length taken from the texts is
    known only after the data and teacher stages; the search checks it then)."""
    from kdedge.search import device
    from kdedge.search.probe import TEACHER, search_candidates

    if cfg.distill.student != AUTO_STUDENT:
        raise KdedgeError(f"distill.search.target_latency times the candidates of the student "
                          f"search, but distill.student is {cfg.distill.student}; pass --student "
                          "auto, or drop --target-latency.")
    layers = getattr(teacher, "num_hidden_layers", None)
    candidates = [c for c in search_candidates(cfg.distill.search, layers or 0)
                  if layers is not None or c.name != TEACHER]
    device.read_results(cfg.distill.search.target_latency, candidates,
                        (cfg.bench.sequence_lengths or (None,))[0])


def _teacher_config(teacher: TeacherConfig) -> Any:
    """The teacher's config; the demo teacher's layer count alone while it is not fetched yet
    (a dry run does not download it)."""
    from kdedge import demo
    from kdedge.hf import model_config

    if teacher.model == "demo" and not demo.teacher_cached():
        return SimpleNamespace(num_hidden_layers=demo.TEACHER_LAYERS)
    return model_config(teacher.model, "teacher", teacher.revision, teacher.trust_remote_code)


def _check_columns(data: DataConfig) -> None:
    from kdedge.data.loaders import columns
    from kdedge.data.stage import check_columns

    for split, names in (columns(data) or {}).items():
        check_columns(names, data, split)


def _check_student(text: str, teacher: Any, trust_remote_code: bool) -> None:
    from kdedge.hf import model_config
    from kdedge.models.students import parse_spec

    layers = getattr(teacher, "num_hidden_layers", None)
    if layers is None:  # an architecture without the usual field: the distill stage decides
        return
    spec = parse_spec(text, layers)
    if spec.builder == "pretrained":
        model_config(spec.source, "student", None, trust_remote_code)

"""The student families and `distill.student`, the spec that picks one:

- a layer count ("3"): that many of the teacher's layers, evenly spaced and ending at its top
  layer (for 6 -> 3: layers 1, 3, 5), with embeddings and the task head copied;
- a list of teacher layers ("0,2,4"): exactly those;
- "transformer:layers=4,hidden_size=256,heads=4[,intermediate_size=1024][,init=teacher|random]":
  a narrower transformer of the teacher's architecture; init=teacher (default) copies the
  leading slice of every teacher tensor (evenly spaced teacher layers), init=random does not;
- "bilstm" / "bigru", optionally with options ("bilstm:hidden_size=256,num_layers=2"): a
  bidirectional recurrent student with attention pooling over the teacher's tokenizer;
- a local directory or a hub id: that pretrained model, with a fresh head for these labels.

Each family is a module of kdedge/models/ (transformer.py, birnn.py) listed in FAMILIES below;
the generation students (seq2seq.py, gru_decoder.py) are picked by the generation recipes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from kdedge.errors import KdedgeError
from kdedge.models import birnn, transformer
from kdedge.models.transformer import evenly_spaced
from kdedge.registry import Registry

FAMILIES: Registry[Any] = Registry("student family")
FAMILIES.register("teacher-layers")(transformer.from_teacher_layers)
FAMILIES.register("transformer")(transformer.narrower_transformer)
FAMILIES.register("pretrained")(transformer.from_pretrained)
FAMILIES.register("birnn")(birnn.build)

# the learning rate a family trains at when it is one candidate among others (the student
# search), where the families differ; the others train at distill.training.learning_rate
LEARNING_RATES: dict[str, float] = {"birnn": birnn.LEARNING_RATE}

# option name -> parser, per student kind that takes "kind:key=value,..." options
OPTIONS: dict[str, dict[str, Any]] = {"bilstm": birnn.OPTIONS, "bigru": birnn.OPTIONS,
                                      "transformer": transformer.OPTIONS}


@dataclass(frozen=True)
class StudentSpec:
    builder: str  # a name in FAMILIES
    layers: tuple[int, ...] = ()
    source: str = ""
    options: tuple[tuple[str, Any], ...] = ()


def _with_options(text: str) -> StudentSpec:
    """"kind:key=value,key=value" for the student kinds that take options."""
    kind, _, rest = text.partition(":")
    allowed = OPTIONS[kind]
    options: list[tuple[str, Any]] = [("cell", kind[2:])] if kind in ("bilstm", "bigru") else []
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, _, value = pair.partition("=")
        try:
            options.append((key, allowed[key](value)))
        except (KeyError, ValueError):
            raise KdedgeError(f"Student option {pair!r} is not valid for {kind}; use "
                              f"{', '.join(f'{k}=...' for k in allowed)}.") from None
    builder = "birnn" if kind in ("bilstm", "bigru") else kind
    return StudentSpec(builder, source=text, options=tuple(options))


def parse_spec(text: str, teacher_layers: int) -> StudentSpec:
    text = text.strip()
    if text.partition(":")[0] in OPTIONS:
        return _with_options(text)
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= teacher_layers:
            raise KdedgeError(f"Student layer count {count} must be between 1 and the teacher's "
                              f"{teacher_layers} layers; change --student.")
        return StudentSpec("teacher-layers", evenly_spaced(teacher_layers, count))
    if re.fullmatch(r"\d+(\s*,\s*\d+)+", text):
        layers = tuple(int(part) for part in text.split(","))
        bad = [i for i in layers if i >= teacher_layers]
        if bad or len(set(layers)) != len(layers):
            raise KdedgeError(f"Student layers {text!r} must be distinct teacher layer indices "
                              f"below {teacher_layers}; change --student.")
        return StudentSpec("teacher-layers", tuple(sorted(layers)))
    return StudentSpec("pretrained", source=text)


def learning_rate(text: str, teacher_layers: int) -> float | None:
    """The family's own learning rate for the student `text`, or None for the configured one."""
    return LEARNING_RATES.get(parse_spec(text, teacher_layers).builder)


def build_student(text: str, teacher: nn.Module, trust_remote_code: bool = False,
                  ) -> tuple[nn.Module, dict[str, Any]]:
    spec = parse_spec(text, teacher.config.num_hidden_layers)
    student = FAMILIES.get(spec.builder)(spec, teacher, trust_remote_code=trust_remote_code)
    info = {
        "source": spec.source or f"teacher layers {list(spec.layers)}",
        "builder": spec.builder,
        "layers": list(spec.layers) or None,
        "num_layers": student.config.num_hidden_layers,
        "hidden_size": getattr(student.config, "hidden_size", None),
        "state_size": getattr(student.config, "output_size", None)
        or getattr(student.config, "hidden_size", None),  # width of the vectors losses see
        "parameters": sum(p.numel() for p in student.parameters()),
    }
    return student, info

"""Student builders. `distill.student` picks one:

- a layer count ("3"): that many of the teacher's layers, evenly spaced and ending at its top
  layer (for 6 -> 3: layers 1, 3, 5), with embeddings and the task head copied;
- a list of teacher layers ("0,2,4"): exactly those;
- "transformer:layers=4,hidden_size=256,heads=4[,intermediate_size=1024][,init=teacher|random]":
  a narrower transformer of the teacher's architecture; init=teacher (default) copies the
  leading slice of every teacher tensor (evenly spaced teacher layers), init=random does not;
- "bilstm" / "bigru", optionally with options ("bilstm:hidden_size=256,num_layers=2"): a
  bidirectional recurrent student with attention pooling over the teacher's tokenizer;
- a local directory or a hub id: that pretrained model, with a fresh head for these labels.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

import kdedge.distill.bilstm  # noqa: F401  (registers the BiRNN with the Auto classes)
from kdedge.errors import KdedgeError
from kdedge.registry import Registry

STUDENTS: Registry[Any] = Registry("student builder")


@dataclass(frozen=True)
class StudentSpec:
    builder: str  # "teacher-layers", "birnn" or "pretrained"
    layers: tuple[int, ...] = ()
    source: str = ""
    options: tuple[tuple[str, Any], ...] = ()


def _flag(value: str) -> bool:
    return {"true": True, "false": False}[value.lower()]


def _init(value: str) -> str:
    if value not in ("teacher", "random"):
        raise ValueError(value)
    return value


# option name -> parser, per student kind that takes "kind:key=value,..." options
OPTIONS: dict[str, dict[str, Any]] = {
    "bilstm": {"embedding_dim": int, "hidden_size": int, "num_layers": int, "dropout": float,
               "init_embeddings": _flag},
    "transformer": {"layers": int, "hidden_size": int, "heads": int, "intermediate_size": int,
                    "init": _init},
}
OPTIONS["bigru"] = OPTIONS["bilstm"]


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


def evenly_spaced(total: int, count: int) -> tuple[int, ...]:
    """`count` of `total` layers, evenly spaced, always keeping the top one."""
    return tuple(round((i + 1) * total / count) - 1 for i in range(count))


def layer_stack(model: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList]:
    """The transformer's list of layers: the ModuleList with one entry per hidden layer."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return name, module
    raise KdedgeError(f"Cannot find the layer stack of this {type(model).__name__}; pass a student "
                      "directory or hub id with --student instead of a layer count.")


@STUDENTS.register("teacher-layers")
def from_teacher_layers(spec: StudentSpec, teacher: nn.Module, **_: Any) -> nn.Module:
    """A copy of the teacher that keeps only some layers (embeddings and head included)."""
    student = copy.deepcopy(teacher)
    name, _ = layer_stack(student, teacher.config.num_hidden_layers)
    parent_name, _, attr = name.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    stack = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([stack[i] for i in spec.layers]))
    student.config.num_hidden_layers = len(spec.layers)
    return student


@STUDENTS.register("birnn")
def birnn(spec: StudentSpec, teacher: nn.Module, **_: Any) -> nn.Module:
    """A BiLSTM / BiGRU with attention pooling (the QE-distillation and MKD students)."""
    from kdedge.distill.bilstm import build_birnn

    return build_birnn(teacher, **dict(spec.options))


@STUDENTS.register("transformer")
def narrower_transformer(spec: StudentSpec, teacher: nn.Module, **_: Any) -> nn.Module:
    """The teacher's architecture with fewer layers, a smaller width or fewer heads."""
    import torch

    opts = dict(spec.options)
    config = copy.deepcopy(teacher.config)
    n_teacher = config.num_hidden_layers
    config.num_hidden_layers = opts.get("layers", n_teacher)
    config.hidden_size = opts.get("hidden_size", config.hidden_size)
    config.num_attention_heads = opts.get("heads", config.num_attention_heads)
    config.intermediate_size = opts.get("intermediate_size", 4 * config.hidden_size)
    if config.hidden_size % config.num_attention_heads:
        raise KdedgeError(f"Student hidden_size {config.hidden_size} is not divisible by heads "
                          f"{config.num_attention_heads}; change --student.")
    if not 1 <= config.num_hidden_layers <= n_teacher:
        raise KdedgeError(f"Student layers {config.num_hidden_layers} must be between 1 and the "
                          f"teacher's {n_teacher}; change --student.")
    student = type(teacher)(config)
    if opts.get("init", "teacher") == "teacher":
        stack, _ = layer_stack(teacher, n_teacher)
        picked = evenly_spaced(n_teacher, config.num_hidden_layers)
        source = teacher.state_dict()
        with torch.no_grad():
            for key, value in student.state_dict().items():
                match = re.match(rf"{re.escape(stack)}\.(\d+)\.(.*)", key)
                origin = f"{stack}.{picked[int(match[1])]}.{match[2]}" if match else key
                teacher_value = source.get(origin)
                if teacher_value is not None and teacher_value.ndim == value.ndim and all(
                        s <= t for s, t in zip(value.shape, teacher_value.shape, strict=True)):
                    value.copy_(leading_slice(teacher_value, value.shape))
    return student


def leading_slice(tensor: Any, shape: Any) -> Any:
    """The first shape[d] entries along every dimension d (the same indices in every layer)."""
    return tensor[tuple(slice(0, size) for size in shape)]


@STUDENTS.register("pretrained")
def from_pretrained(spec: StudentSpec, teacher: nn.Module, *, trust_remote_code: bool = False,
                    **_: Any) -> nn.Module:
    from kdedge.hf import load_classifier

    config = teacher.config
    return load_classifier(spec.source, config.id2label, revision=None,
                           trust_remote_code=trust_remote_code)[0]


def build_student(text: str, teacher: nn.Module, trust_remote_code: bool = False,
                  ) -> tuple[nn.Module, dict[str, Any]]:
    spec = parse_spec(text, teacher.config.num_hidden_layers)
    student = STUDENTS.get(spec.builder)(spec, teacher, trust_remote_code=trust_remote_code)
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

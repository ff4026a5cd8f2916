"""Transformer students made from the teacher: a cut that keeps some of its layers, a narrower
transformer of its architecture initialised from slices of its weights, or a pretrained model.

Built and saved as Hugging Face models, so optimum exports them and the runtime runs them like
the teacher; nothing here needs a module of its own at export or run time.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from torch import nn

from kdedge.errors import KdedgeError

# "transformer:key=value,..." options and their parsers
OPTIONS: dict[str, Any] = {"layers": int, "hidden_size": int, "heads": int, "intermediate_size": int,
                           "init": lambda value: {"teacher": "teacher", "random": "random"}[value]}


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

def from_teacher_layers(spec: Any, teacher: nn.Module, **_: Any) -> nn.Module:
    """A copy of the teacher that keeps only some layers (embeddings and head included)."""
    student = copy.deepcopy(teacher)
    name, _ = layer_stack(student, teacher.config.num_hidden_layers)
    parent_name, _, attr = name.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    stack = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([stack[i] for i in spec.layers]))
    student.config.num_hidden_layers = len(spec.layers)
    return student

def narrower_transformer(spec: Any, teacher: nn.Module, **_: Any) -> nn.Module:
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

def from_pretrained(spec: Any, teacher: nn.Module, *, trust_remote_code: bool = False,
                    **_: Any) -> nn.Module:
    from kdedge.hf import load_classifier

    config = teacher.config
    return load_classifier(spec.source, config.id2label, revision=None,
                           trust_remote_code=trust_remote_code)[0]

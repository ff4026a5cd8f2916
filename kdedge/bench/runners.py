"""Bench runtimes: how one model folder is loaded and run on one tokenized batch.

A runtime is registered by name; a new target (onnxruntime's CUDA EP with IO binding, a
generate loop for seq2seq students) is one more `Runtime` here, nothing else changes. The
contract that keeps timing honest on any device: `Loaded.run` returns only when the outputs
are ready (a CUDA runtime synchronizes inside it), and everything that is not the model call
(dtype conversion, host-to-device copies, binding) happens in the untimed `Loaded.prepare`.

Framework imports stay inside the functions, so a device with only onnxruntime can bench ONNX
folders, and the measuring child imports only the framework it measures.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.registry import Registry
from kdedge.runtime import ONNX_FILE

Batch = dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids: int64 [batch, seq]
TOKENIZER_FILE = "tokenizer.json"


def _identity(batch: Batch) -> Any:
    return batch


def _no_count() -> int | None:
    return None


@dataclass(frozen=True)
class Loaded:
    """A model ready to time."""

    run: Callable[[Any], object]  # timed: one forward pass, returns when outputs are ready
    prepare: Callable[[Batch], Any] = _identity  # untimed: numpy batch -> what `run` takes
    count_parameters: Callable[[], int | None] = _no_count  # called after timing, off the clock
    info: dict[str, Any] = field(default_factory=dict)  # settings read back from the framework


@dataclass(frozen=True)
class Runtime:
    """One way to execute a model folder."""

    setup: Callable[[int], None]  # import the framework and fix its thread budget
    load: Callable[[Path, int], Loaded]  # (folder, intra-op threads) -> loaded model
    required_files: tuple[str, ...]  # what the folder must hold; checked before spawning


RUNTIMES: Registry[Runtime] = Registry("bench runtime")


def missing_files(runtime: str, folder: Path) -> str | None:
    """Why `folder` cannot be benched with `runtime`, or None when it can."""
    spec = RUNTIMES.get(runtime)
    if not folder.is_dir():
        return f"model folder {folder} does not exist"
    absent = [name for name in spec.required_files if not (folder / name).is_file()]
    if absent:
        return f"model folder {folder} lacks {', '.join(absent)}"
    return None


def guess_runtime(folder: Path) -> str:
    """The runtime a bare folder needs: ONNX when it holds model.onnx, else PyTorch."""
    return "onnxruntime" if (folder / ONNX_FILE).is_file() else "pytorch"


# --- pytorch -------------------------------------------------------------------------------


def _torch_setup(threads: int) -> None:
    import torch
    import transformers  # imported here so the baseline RSS includes it

    transformers.logging.set_verbosity_error()  # keep the parent's progress bar readable
    torch.set_num_threads(threads)
    # like onnxruntime's inter_op_num_threads=1; raises if already fixed in this process, and
    # then the intra-op budget, which is what matters, is still set above
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _torch_load(folder: Path, threads: int) -> Loaded:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    accepted = set(inspect.signature(model.forward).parameters)

    def prepare(batch: Batch) -> dict[str, Any]:
        # DistilBERT-like models take no token_type_ids; from_numpy shares memory, no copy
        return {k: torch.from_numpy(v) for k, v in batch.items() if k in accepted}

    def run(feed: dict[str, Any]) -> object:
        with torch.inference_mode():
            return model(**feed).logits

    def count() -> int:
        return int(sum(p.numel() for p in model.parameters()))

    info = {"intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(), "dtype": str(model.dtype)}
    return Loaded(run=run, prepare=prepare, count_parameters=count, info=info)


RUNTIMES.register("pytorch")(Runtime(setup=_torch_setup, load=_torch_load,
                                     required_files=("config.json", TOKENIZER_FILE)))


# --- onnxruntime (CPU) ---------------------------------------------------------------------


def _ort_setup(threads: int) -> None:
    import onnxruntime  # noqa: F401  (imported here so the baseline RSS includes it)


def onnx_parameters(path: Path) -> int | None:
    """Elements in the graph's initializers (the weights); None without the onnx package."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    return int(sum(int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer))


def _ort_load(folder: Path, threads: int) -> Loaded:
    from kdedge.runtime import ort_feed, ort_session

    session = ort_session(folder, threads)
    output_names = [out.name for out in session.get_outputs()]
    options = session.get_session_options()

    def prepare(batch: Batch) -> dict[str, np.ndarray]:
        return ort_feed(session, batch)

    def run(feed: dict[str, np.ndarray]) -> object:
        return session.run(output_names, feed)

    info = {"providers": session.get_providers(),
            "intra_op_threads": options.intra_op_num_threads,
            "inter_op_threads": options.inter_op_num_threads,
            "cpu_mem_arena": options.enable_cpu_mem_arena,
            "graph_optimization_level": str(options.graph_optimization_level)}
    return Loaded(run=run, prepare=prepare,
                  count_parameters=lambda: onnx_parameters(folder / ONNX_FILE), info=info)


RUNTIMES.register("onnxruntime")(Runtime(setup=_ort_setup, load=_ort_load,
                                         required_files=(ONNX_FILE, TOKENIZER_FILE)))

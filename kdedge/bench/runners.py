"""Bench runtimes: how one model folder is loaded and run on one tokenized batch.

A runtime is registered by name, one per framework and target: `pytorch` and `onnxruntime` on
the CPU, `pytorch-cuda`, `onnxruntime-cuda` (IO binding) and `onnxruntime-tensorrt` on a GPU.
A new target is one more `Runtime` here, nothing else changes. The
contract that keeps timing honest on any device: `Loaded.run` returns only when the outputs
are ready (a CUDA runtime synchronizes inside it), and everything that is not the model call
(dtype conversion, host-to-device copies, binding) happens in the untimed `Loaded.prepare`.

Framework imports stay inside the functions, so a device with only onnxruntime can bench ONNX
folders, and the measuring child imports only the framework it measures.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
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


def _always_available() -> str | None:
    return None


@dataclass(frozen=True)
class Loaded:
    """A model ready to time."""

    run: Callable[[Any], object]  # timed: one forward pass, returns when outputs are ready
    prepare: Callable[[Batch], Any] = _identity  # untimed: numpy batch -> what `run` takes
    count_parameters: Callable[[], int | None] = _no_count  # called after timing, off the clock
    info: dict[str, Any] = field(default_factory=dict)  # settings read back from the framework
    # peak accelerator memory in bytes, read after timing; None where there is no counter
    device_peak_bytes: Callable[[], int | None] = _no_count
    # generation models: `run` generates exactly `new_tokens` tokens per row, `first_token`
    # generates one (its time is the time to first token); None / 0 for one-pass models
    first_token: Callable[[Any], object] | None = None
    new_tokens: int = 0


@dataclass(frozen=True)
class Runtime:
    """One way to execute a model folder."""

    setup: Callable[[int], None]  # import the framework and fix its thread budget
    load: Callable[[Path, int], Loaded]  # (folder, intra-op threads) -> loaded model
    required_files: tuple[str, ...]  # what the folder must hold; checked before spawning
    # why this runtime cannot run on this machine (no GPU, framework missing), or None;
    # asked in the parent before spawning, so an absent target is skipped, never a crash
    unavailable: Callable[[], str | None] = _always_available


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


TARGETS = ("cpu", "cuda", "tensorrt")


def runtime_for(framework: str, target: str, generation: bool = False) -> str | None:
    """The registered runtime that runs `framework` models on `target` (generating text when
    `generation`), or None when none does."""
    name = f"{framework}-generate" if generation else framework
    name = name if target == "cpu" else f"{name}-{target}"
    return name if name in RUNTIMES else None


def target_unavailable(target: str) -> str | None:
    """Why no runtime can time anything on `target` here (no GPU, no provider), or None.

    Asked once per target, so an absent GPU is one skipped target, not one skipped row per
    model; a runtime that fails although another on the target works is still skipped alone.
    """
    names = [runtime_for(framework, target, generation) for framework in ("pytorch", "onnxruntime")
             for generation in (False, True)]
    reasons = [RUNTIMES.get(name).unavailable() for name in dict.fromkeys(names) if name]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return "; ".join(dict.fromkeys(r for r in reasons if r))


def split_targets(asked: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The targets to time and the asked ones absent here with the reason; by default (None)
    every target this machine has, so a CPU-only machine times only the CPU."""
    wanted = list(asked) if asked is not None else list(TARGETS)
    reasons = {target: target_unavailable(target) for target in wanted}
    present = [target for target, reason in reasons.items() if reason is None]
    absent = {t: r for t, r in reasons.items() if r is not None} if asked is not None else {}
    return present, absent


def _torch_cuda_unavailable() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def _ort_provider_unavailable(provider: str) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        available = ort.get_available_providers()
        if provider not in available:
            return (f"this onnxruntime build has no {provider} (it has "
                    f"{', '.join(available)}; install onnxruntime-gpu on a machine with a GPU)")
        return None
    return check


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


def _torch_loader(device: str) -> Callable[[Path, int], Loaded]:
    def load(folder: Path, threads: int) -> Loaded:
        import torch
        from transformers import AutoModelForSequenceClassification

        from kdedge.models import register_auto_classes

        register_auto_classes()  # a BiRNN student loads through the Auto classes
        model = AutoModelForSequenceClassification.from_pretrained(folder).to(device)
        model.eval()
        accepted = set(inspect.signature(model.forward).parameters)
        on_gpu = device != "cpu"

        def prepare(batch: Batch) -> dict[str, Any]:
            # DistilBERT-like models take no token_type_ids; from_numpy shares memory, no copy;
            # the copy to the GPU happens here, off the clock
            return {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k in accepted}

        def run(feed: dict[str, Any]) -> object:
            with torch.inference_mode():
                logits = model(**feed).logits
            if on_gpu:
                torch.cuda.synchronize()  # the clock stops when the GPU is done, not when queued
            return logits

        def count() -> int:
            return int(sum(p.numel() for p in model.parameters()))

        def device_peak() -> int | None:
            return int(torch.cuda.max_memory_allocated()) if on_gpu else None

        info = {"intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(), "dtype": str(model.dtype),
                "device": torch.cuda.get_device_name() if on_gpu else "cpu"}
        return Loaded(run=run, prepare=prepare, count_parameters=count, info=info,
                      device_peak_bytes=device_peak)
    return load


NEW_TOKENS = 32  # tokens generated per row when timing a generation model


def _torch_generate_loader(device: str) -> Callable[[Path, int], Loaded]:
    """Greedy generation of exactly NEW_TOKENS tokens per row, seq2seq or decoder-only."""
    def load(folder: Path, threads: int) -> Loaded:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from kdedge.models import register_auto_classes

        register_auto_classes()

        config = AutoConfig.from_pretrained(folder)
        family = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = family.from_pretrained(folder).to(device)
        model.eval()
        on_gpu = device != "cpu"
        pad = model.generation_config.pad_token_id
        if pad is None:
            pad = model.generation_config.eos_token_id or 0

        def prepare(batch: Batch) -> dict[str, Any]:
            return {k: torch.from_numpy(batch[k]).to(device)
                    for k in ("input_ids", "attention_mask")}

        def generate(feed: dict[str, Any], tokens: int) -> object:
            with torch.inference_mode():
                out = model.generate(**feed, max_new_tokens=tokens, min_new_tokens=tokens,
                                     do_sample=False, num_beams=1, pad_token_id=pad)
            if on_gpu:
                torch.cuda.synchronize()
            return out

        info = {"intra_op_threads": torch.get_num_threads(), "dtype": str(model.dtype),
                "device": torch.cuda.get_device_name() if on_gpu else "cpu",
                "generation": f"greedy, {NEW_TOKENS} new tokens per row",
                "encoder_decoder": bool(config.is_encoder_decoder)}
        return Loaded(run=lambda feed: generate(feed, NEW_TOKENS), prepare=prepare,
                      count_parameters=lambda: int(sum(p.numel() for p in model.parameters())),
                      info=info, first_token=lambda feed: generate(feed, 1),
                      new_tokens=NEW_TOKENS,
                      device_peak_bytes=lambda: (int(torch.cuda.max_memory_allocated())
                                                 if on_gpu else None))
    return load


def _ort_generate_loader(folder: Path, threads: int) -> Loaded:
    """The bundle's torch-free generate.py over the folder's graphs (encoder and decoder, or
    one decoder-only graph) on the CPU provider: what a shipped generator runs."""
    from kdedge.bundle.generate import Generator

    model = Generator(folder, threads)

    def prepare(batch: Batch) -> tuple[Any, Any]:
        return batch["input_ids"].astype("int64"), batch["attention_mask"].astype("int64")

    def generate(feed: tuple[Any, Any], tokens: int) -> object:
        return model.greedy(*feed, max_new_tokens=tokens, min_new_tokens=tokens)

    graphs = sorted(folder.glob("*.onnx"))
    info = {"providers": ["CPUExecutionProvider"], "intra_op_threads": threads,
            "generation": f"greedy, {NEW_TOKENS} new tokens per row (generate.py)",
            "graphs": [p.name for p in graphs]}
    return Loaded(run=lambda feed: generate(feed, NEW_TOKENS), prepare=prepare,
                  count_parameters=lambda: sum(onnx_parameters(p) or 0 for p in graphs) or None,
                  info=info, first_token=lambda feed: generate(feed, 1), new_tokens=NEW_TOKENS)


_TORCH_FILES = ("config.json", TOKENIZER_FILE)
RUNTIMES.register("pytorch")(Runtime(setup=_torch_setup, load=_torch_loader("cpu"),
                                     required_files=_TORCH_FILES))
RUNTIMES.register("pytorch-cuda")(Runtime(setup=_torch_setup, load=_torch_loader("cuda"),
                                          required_files=_TORCH_FILES,
                                          unavailable=_torch_cuda_unavailable))
RUNTIMES.register("pytorch-generate")(Runtime(setup=_torch_setup,
                                              load=_torch_generate_loader("cpu"),
                                              required_files=_TORCH_FILES))
RUNTIMES.register("pytorch-generate-cuda")(Runtime(setup=_torch_setup,
                                                   load=_torch_generate_loader("cuda"),
                                                   required_files=_TORCH_FILES,
                                                   unavailable=_torch_cuda_unavailable))


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


def bound_runner(session: Any, device: str) -> tuple[Callable[[Batch], Any], Callable[[Any], object]]:
    """prepare/run with IO binding: inputs copied to `device` untimed, outputs left there.

    onnxruntime's run returns once the device's stream has finished, and synchronize_outputs
    makes that explicit, so the clock around `run` covers the whole computation.
    """
    import onnxruntime as ort

    from kdedge.runtime import ort_feed

    output_names = [out.name for out in session.get_outputs()]

    def prepare(batch: Batch) -> Any:
        binding = session.io_binding()
        for name, array in ort_feed(session, batch).items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
        for name in output_names:
            binding.bind_output(name, device)
        return binding

    def run(binding: Any) -> object:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding

    return prepare, run


def _ort_loader(provider: str, device: str) -> Callable[[Path, int], Loaded]:
    def load(folder: Path, threads: int) -> Loaded:
        from kdedge.runtime import ort_feed, ort_session

        session = ort_session(folder, threads, provider)
        used = session.get_providers()
        if used[0] != provider:  # onnxruntime falls back quietly when a provider cannot start
            raise RuntimeError(f"{provider} could not start (onnxruntime fell back to {used[0]})")
        options = session.get_session_options()
        if device == "cpu":
            output_names = [out.name for out in session.get_outputs()]

            def prepare(batch: Batch) -> Any:
                return ort_feed(session, batch)

            def run(feed: Any) -> object:
                return session.run(output_names, feed)
        else:
            prepare, run = bound_runner(session, device)

        info = {"providers": used, "io_binding": device != "cpu",
                "intra_op_threads": options.intra_op_num_threads,
                "inter_op_threads": options.inter_op_num_threads,
                "cpu_mem_arena": options.enable_cpu_mem_arena,
                "graph_optimization_level": str(options.graph_optimization_level)}
        return Loaded(run=run, prepare=prepare,
                      count_parameters=lambda: onnx_parameters(folder / ONNX_FILE), info=info)
    return load


_ORT_FILES = (ONNX_FILE, TOKENIZER_FILE)
RUNTIMES.register("onnxruntime-generate")(Runtime(setup=_ort_setup, load=_ort_generate_loader,
                                                  required_files=_TORCH_FILES))
RUNTIMES.register("onnxruntime")(Runtime(setup=_ort_setup,
                                         load=_ort_loader("CPUExecutionProvider", "cpu"),
                                         required_files=_ORT_FILES))
for _target, _provider in (("cuda", "CUDAExecutionProvider"),
                           ("tensorrt", "TensorrtExecutionProvider")):
    RUNTIMES.register(f"onnxruntime-{_target}")(Runtime(
        setup=_ort_setup, load=_ort_loader(_provider, "cuda"), required_files=_ORT_FILES,
        unavailable=_ort_provider_unavailable(_provider)))

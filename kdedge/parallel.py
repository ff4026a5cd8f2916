"""The processes a run trains on: this one, or several started by `accelerate launch`.

Hugging Face Accelerate starts the processes (torchrun underneath, on one machine or many) and
sets up torch.distributed between them: gloo between CPU processes, NCCL between GPUs. Every
process then runs the same pipeline. The training stages (teacher fine-tuning, distillation)
run on all of them: each takes its shard of every batch and DDP averages the gradients. Every
other stage runs on the main process alone, and only the main process writes artifacts,
caches, checkpoints and manifests; the others wait for it at barriers.

A batch size is always the global batch of one optimizer step, however many processes share
it, so a run means the same with one process or eight and its checkpoints resume on either.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kdedge.errors import KdedgeError

T = TypeVar("T")
# Accelerate's switches for sharded training; kdedge's loop keeps a whole model per process
UNSUPPORTED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_size: int = 1  # processes on this machine, which share its cores
    device: str = "cpu"
    backend: str | None = None  # gloo or nccl when size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the processes a stage trained on."""
        return {"world_size": self.size, "backend": self.backend, "device": self.device}

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def shard(self, rows: Sequence[T]) -> list[T]:
        """This process's rows of a global batch (every size-th row, from its rank)."""
        return list(rows[self.rank::self.size])

    def block(self, count: int) -> tuple[int, int]:
        """This process's contiguous share [start, stop) of `count` rows."""
        per = -(-count // self.size)
        return min(count, self.rank * per), min(count, (self.rank + 1) * per)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, tensor: Any) -> Any:
        """Every process's rows of `tensor`, concatenated in rank order, on the CPU."""
        if not self.distributed:
            return tensor
        import torch
        import torch.distributed as dist

        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, tensor.detach().cpu())
        return torch.cat(parts)

    def from_main(self, value: T) -> T:
        """The main process's value, in every process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the main process, then on the others: for work that fills a cache once,
        which the other processes then read."""
        if self.is_main:
            result = fn()
            self.barrier()
            return result
        self.barrier()
        return fn()


def launched() -> bool:
    """Whether this process is one of several a launcher started (read without torch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def helper_process() -> bool:
    """Whether this is a launched process other than the main one, which prints and draws
    nothing (read without torch, so the command line can ask before importing it)."""
    return int(os.environ.get("RANK", "0")) > 0


@functools.cache
def world() -> World:
    """This process's place among the processes `accelerate launch` (or torchrun) started."""
    if not launched():
        return World()
    for variable, name in UNSUPPORTED.items():
        if os.environ.get(variable, "").lower() in ("1", "true"):
            raise KdedgeError(f"The Accelerate config asks for {name}, which kdedge's training "
                              "loop does not support (it keeps a whole model in each process); "
                              "choose multi-GPU or multi-CPU (DDP) in `accelerate config`.")
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return World(size=state.num_processes, rank=state.process_index,
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes)),
                 device=str(state.device), backend=state.backend)

"""Per-epoch training checkpoints, so an interrupted run continues at the next epoch.

One folder per finished epoch, written under a temporary name and renamed, so a folder named
`epoch-N` is always whole: the model's weights and the best epoch's weights (safetensors), the
loop's state (optimizer, learning-rate schedule, the loss's own state, the shuffling generator
and torch's random state) saved with torch.save and read back with `weights_only=True`, so a
checkpoint cannot run code when loaded, and the history with numpy's and Python's random states
as JSON. Restoring all of it makes a resumed run train exactly as an uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdedge.artifacts import read_json, write_json
from kdedge.errors import KdedgeError

PREFIX = "epoch-"
WEIGHTS, BEST, LOOP, PROGRESS = "model.safetensors", "best.safetensors", "loop.pt", "progress.json"


@dataclass
class Resumed:
    epoch: int  # the last finished epoch; training continues at epoch + 1
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    best_state: dict[str, torch.Tensor] | None


def latest(folder: Path) -> Path | None:
    """The newest whole epoch folder, or None when there is none."""
    epochs = [p for p in folder.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()]
    return max(epochs, key=lambda p: int(p.name[len(PREFIX):]), default=None)


def save(folder: Path, epoch: int, model: nn.Module, loss_fn: nn.Module,
         optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator,
         best_epoch: int, best_score: float, history: list[dict[str, float]],
         best_state: dict[str, torch.Tensor] | None) -> Path:
    """Write epoch `epoch`'s checkpoint and drop the older ones."""
    from safetensors.torch import save_file

    tmp = folder / f".{PREFIX}{epoch}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(_plain(model.state_dict()), tmp / WEIGHTS)
        if best_state is not None and best_epoch != epoch:  # else the best is this epoch's weights
            save_file(_plain(best_state), tmp / BEST)
        torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "loss": loss_fn.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state()}, tmp / LOOP)
        numpy_rng = np.random.get_state()
        write_json(tmp / PROGRESS, {
            "epoch": epoch, "best_epoch": best_epoch, "best_score": best_score, "history": history,
            "has_best": best_state is not None,
            "numpy_rng": [numpy_rng[0], numpy_rng[1].tolist(), *numpy_rng[2:]],
            "python_rng": _listed(random.getstate()),
        })
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint only takes space
        raise
    final = folder / f"{PREFIX}{epoch}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in folder.glob(f"{PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore(folder: Path, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
            schedule: Any, generator: torch.Generator) -> Resumed | None:
    """Load the newest checkpoint in `folder` into the loop's objects; None when there is none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = latest(folder)
    if path is None:
        return None
    try:
        progress = read_json(path / PROGRESS)
        model.load_state_dict(load_file(path / WEIGHTS))
        loop = torch.load(path / LOOP, weights_only=True)
        loss_fn.load_state_dict(loop["loss"])
        optimizer.load_state_dict(loop["optimizer"])
        schedule.load_state_dict(loop["schedule"])
        generator.set_state(loop["generator"])
        torch.set_rng_state(loop["torch_rng"])
        best: dict[str, torch.Tensor] | None = None
        if progress["has_best"]:
            best = (load_file(path / BEST) if progress["best_epoch"] != progress["epoch"]
                    else _plain(model.state_dict()))
    except (OSError, KeyError, RuntimeError, ValueError, SafetensorError, KdedgeError) as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise KdedgeError(f"Training checkpoint {path} cannot be read ({first}); delete that folder "
                          "to train from the start.") from None
    name, keys, *rest = progress["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, state, gauss = progress["python_rng"]
    random.setstate((version, tuple(state), gauss))
    return Resumed(progress["epoch"], progress["best_epoch"], progress["best_score"],
                   progress["history"], best)


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors accepts: contiguous copies, none sharing memory with another."""
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, tuple | list) else value

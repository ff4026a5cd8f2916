"""Seeds and thread counts, set the same way by every stage."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads (default: this process's share of the cores, all of them
    unless several training processes run on this machine); returns the number set."""
    import torch

    from kdedge.parallel import world

    count = threads or max(1, (os.cpu_count() or 1) // world().local_size)
    torch.set_num_threads(count)
    return count

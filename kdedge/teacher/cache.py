"""The user cache of fine-tuned teachers, keyed by fingerprint and the teacher's identity.

A second run (or another run on the same data and teacher settings) finds its teacher here and
skips the fine-tuning; extra teachers (multi-teacher, multi-task, lifelong) share it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from kdedge import parallel
from kdedge.artifacts import MODEL_DIR, copy_tree, fingerprint, write_json
from kdedge.config import TeacherConfig
from kdedge.demo import cache_dir
from kdedge.hf import resolve_source

log = logging.getLogger("kdedge")


def teacher_key(cfg: TeacherConfig, seed: int, data_fingerprint: str) -> str:
    """The fingerprint the teacher stage would have for this teacher on this data.

    Extra teachers (multi-teacher distillation) use it too, so a teacher fine-tuned once is
    found in the cache whichever role it plays.
    """
    return fingerprint("teacher", {"teacher": cfg.model_dump(mode="json"), "seed": seed},
                       {"data": data_fingerprint})


def cache_entry(key: str, source: str, revision: str | None) -> Path:
    """Cache folder keyed by the teacher's fingerprint and its files' identity."""
    location = resolve_source(source)
    identity = [location, revision]
    folder = Path(location)
    if folder.is_dir():  # a local teacher: its files' names, sizes and times stand for content
        identity += [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in sorted(folder.rglob("*")) if p.is_file()]
    key = hashlib.sha256(repr([key, identity]).encode()).hexdigest()[:20]
    return cache_dir() / "teachers" / key


def store(cached: Path, model_dir: Path, metrics: dict[str, Any]) -> None:
    if not parallel.world().is_main:  # one process writes the user cache
        return
    tmp = cached.with_name(cached.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        copy_tree(model_dir, tmp / MODEL_DIR)
        write_json(tmp / "metrics.json", metrics)
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
    except OSError as err:  # the cache is an optimization: a full disk there must not fail the run
        log.warning("  could not cache the fine-tuned teacher (%s)", err)
        shutil.rmtree(tmp, ignore_errors=True)

"""The stage order, resume and progress: the only module that knows the order of stages.

Stages exchange paths and manifests, never live objects, so each can run alone.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kdedge import __version__, environment, parallel
from kdedge.artifacts import (
    MANIFEST,
    Manifest,
    atomic_write_text,
    fingerprint,
    list_outputs,
    read_json,
    sha256_file,
    write_json,
)
from kdedge.config import KdedgeConfig, dump_config, load_config
from kdedge.errors import KdedgeError

log = logging.getLogger("kdedge")

RESOLVED_CONFIG = "config.resolved.yaml"
RUN_MANIFEST = "run.json"
CHECKPOINTS = ".checkpoints"  # per-epoch training state of unfinished stages, by fingerprint
DISK_FULL_BYTES = 1 << 20  # a stage that fails with less free space than this ran out of it
FAULT_ENV = "KDEDGE_TEST_KILL_AFTER"  # tests only: a stage name; see _fault_hook


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]  # upstream stages whose outputs this one reads
    entry: str  # "module:function" taking a StageContext, returning metrics; imported lazily
    trains: bool = False  # runs on every training process (see kdedge.parallel); others on
    # the main process alone

    def function(self) -> Callable[[StageContext], dict[str, Any]]:
        module, _, attr = self.entry.partition(":")
        return getattr(importlib.import_module(module), attr)


STAGES: tuple[Stage, ...] = (
    Stage("data", (), "kdedge.data.stage:run"),
    Stage("teacher", ("data",), "kdedge.teacher.stage:run", trains=True),
    Stage("distill", ("data", "teacher"), "kdedge.distill.stage:run", trains=True),
    Stage("export", ("data", "teacher", "distill"), "kdedge.export.stage:run"),
    Stage("quantize", ("data", "export"), "kdedge.quantize.stage:run"),
    Stage("bench", ("data", "teacher", "export", "quantize"), "kdedge.bench.stage:run"),
    Stage("report", ("data", "teacher", "distill", "export", "quantize", "bench"),
          "kdedge.report.stage:run"),
    Stage("bundle", ("data", "export", "quantize", "bench", "report"), "kdedge.bundle.stage:run"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stage_dirname(name: str) -> str:
    return f"{STAGE_NAMES.index(name) + 1:02d}_{name}"


def stage_config(cfg: KdedgeConfig, name: str) -> dict[str, Any]:
    """The part of the config a stage's result depends on (its fingerprint input)."""
    section = getattr(cfg, name).model_dump(mode="json")
    return {name: section, "seed": cfg.run.seed}


@dataclass(frozen=True)
class StageContext:
    cfg: KdedgeConfig
    run_dir: Path
    work: Path  # the stage writes here; renamed to its final directory on success
    fingerprint: str
    input_fingerprints: dict[str, str]
    checkpoints: Path | None = None  # survives an interruption; deleted when the stage completes

    def input(self, name: str) -> Path:
        return self.run_dir / stage_dirname(name)

    def manifest(self, name: str) -> Manifest:
        return Manifest.load(self.input(name))


def fingerprints(cfg: KdedgeConfig) -> dict[str, str]:
    fps: dict[str, str] = {}
    for stage in STAGES:
        fps[stage.name] = fingerprint(stage.name, stage_config(cfg, stage.name),
                                      {name: fps[name] for name in stage.inputs})
    return fps


def default_run_dir(cfg: KdedgeConfig) -> Path:
    if cfg.run.out is not None:
        return cfg.run.out
    source = cfg.data.source
    name = Path(source).stem if Path(source).suffix else source.replace("/", "-")
    if source == "demo":  # the demo of another task kind has a run of its own
        name = {"auto": "demo"}.get(cfg.data.task, f"demo-{cfg.data.task}")
    return Path("runs") / (name.strip(".") or "data")  # never "runs/.." or "runs/"


def prepare_run(cfg: KdedgeConfig, run_dir: Path, *, resume: bool, force: bool) -> None:
    """Create the run directory and write the resolved config; refuse to mix two runs."""
    world = parallel.world()
    if not world.is_main:  # the main process prepares; the others wait and find it done
        world.barrier()
        return
    _prepare_run(cfg, run_dir, resume=resume, force=force)
    world.barrier()  # (a failure ends this process, and torchrun then stops the others)


def _prepare_run(cfg: KdedgeConfig, run_dir: Path, *, resume: bool, force: bool) -> None:
    run_dir = run_dir.resolve()
    existing = (run_dir / RUN_MANIFEST).exists()
    if existing and not (resume or force):
        raise KdedgeError(f"Run directory {run_dir} already holds a run; pass --resume to continue "
                          "it, --force to start it over, or --out for a new directory.")
    if existing and force:
        shutil.rmtree(run_dir)
    elif run_dir.exists() and not existing and any(run_dir.iterdir()):
        raise KdedgeError(f"Output directory {run_dir} is not empty and is not a kdedge run; "
                          "choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RESOLVED_CONFIG, dump_config(cfg))
    if not (run_dir / RUN_MANIFEST).exists():
        write_json(run_dir / RUN_MANIFEST, {
            "kdedge_version": __version__,
            "created_at": _now(),
            "environment": environment.capture(),
            "stages": {},
        })


def load_run(run_dir: Path) -> KdedgeConfig:
    """The config a run was made with, read back from its directory."""
    path = run_dir / RESOLVED_CONFIG
    if not path.is_file():
        raise KdedgeError(f"{run_dir} is not a kdedge run directory (no {RESOLVED_CONFIG}); "
                          "pass the directory `kdedge compress --out` wrote.")
    return load_config(path)


def run(cfg: KdedgeConfig, run_dir: Path, *, resume: bool = False,
        only: tuple[str, ...] | None = None, until: str | None = None) -> dict[str, Any]:
    """Run the stages in order (or only the named ones), up to and including `until` if
    given; return the run manifest."""
    run_dir = run_dir.resolve()
    fps = fingerprints(cfg)
    world = parallel.world()
    last = len(STAGES) if until is None else STAGE_NAMES.index(until) + 1
    for index, stage in enumerate(STAGES[:last], start=1):
        final = run_dir / stage_dirname(stage.name)
        label = f"[{index}/{len(STAGES)}] {stage.name}"
        if only is not None and stage.name not in only:
            continue
        world.barrier()  # every process sees the stages before this one finished
        if not (stage.trains or world.is_main):
            continue
        inputs = {}
        for name in stage.inputs:
            upstream = run_dir / stage_dirname(name)
            if not (upstream / MANIFEST).is_file():
                raise KdedgeError(f"Stage {name!r} has not completed in {run_dir}; run "
                                  f"`kdedge compress --resume --out {run_dir}` first.")
            if only is not None:  # a stage run alone trusts no input it has not checked
                _check_input(upstream, run_dir)
            inputs[name] = {"fingerprint": fps[name],
                            "manifest_sha256": sha256_file(upstream / MANIFEST)}
        if resume and only is None:
            stale = _why_stale(final, fps[stage.name], inputs)
            if stale is None:
                log.info("%s: up to date, skipped", label)
                continue
            log.info("%s: runs again (%s)", label, stale)
        else:
            log.info("%s", label)
        _execute(stage, cfg, run_dir, final, fps[stage.name], inputs)
    return read_json(run_dir / RUN_MANIFEST)


def _check_input(upstream: Path, run_dir: Path) -> None:
    """Refuse an upstream stage whose outputs changed since its manifest was written (a corrupt,
    truncated or edited model file): resume re-runs that stage."""
    problem = Manifest.load(upstream).verify(upstream)
    if problem is not None:
        raise KdedgeError(f"{problem} (its sha256 no longer matches {upstream / MANIFEST}); run "
                          f"`kdedge compress --resume --out {run_dir}` to write it again.")


def _why_stale(final: Path, fp: str, inputs: dict[str, dict[str, str]]) -> str | None:
    if not (final / MANIFEST).is_file():
        return "not run yet"
    manifest = Manifest.load(final)
    if manifest.status != "complete":
        return "did not complete"
    if manifest.fingerprint != fp:
        return "its config changed"
    if manifest.inputs != inputs:
        return "an upstream stage ran again"
    return manifest.verify(final)


def _execute(stage: Stage, cfg: KdedgeConfig, run_dir: Path, final: Path, fp: str,
             inputs: dict[str, dict[str, str]]) -> None:
    from kdedge.torch_utils import seed_everything

    world = parallel.world()
    checkpoints = _checkpoint_dir(run_dir, stage.name, fp, clean=world.is_main)
    seed_everything(cfg.run.seed)
    if not world.is_main:  # a helper process of a training stage: it trains, writes nothing
        with tempfile.TemporaryDirectory(prefix=f"kdedge-rank{world.rank}-") as scratch:
            stage.function()(StageContext(cfg, run_dir, Path(scratch), fp,
                                          {k: v["fingerprint"] for k, v in inputs.items()},
                                          checkpoints))
        world.barrier()  # until the main process has written the stage
        return
    _execute_main(stage, cfg, run_dir, final, fp, inputs, checkpoints)
    if stage.trains:
        world.barrier()  # the other processes wait above until the stage is written


def _execute_main(stage: Stage, cfg: KdedgeConfig, run_dir: Path, final: Path, fp: str,
                  inputs: dict[str, dict[str, str]], checkpoints: Path) -> None:
    work = run_dir / f".{final.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    started, t0 = _now(), time.perf_counter()
    ctx = StageContext(cfg, run_dir, work, fp, {k: v["fingerprint"] for k, v in inputs.items()},
                       checkpoints)
    try:
        metrics = stage.function()(ctx)
    except Exception as err:
        if not _disk_full(err, run_dir):
            raise
        shutil.rmtree(work, ignore_errors=True)  # frees the space and leaves no partial output
        if isinstance(err, KdedgeError):  # already names the file
            raise
        where = getattr(err, "filename", None) or run_dir
        raise KdedgeError(f"No space left on the device writing {where} in stage {stage.name!r}; "
                          f"free some space, then run `kdedge compress --resume --out {run_dir}`.",
                          ) from None
    _fault_hook(stage.name)
    if stage.trains:  # the processes it trained on (kdedge.parallel)
        metrics = {**metrics, "processes": parallel.world().describe()}
    manifest = Manifest(
        stage=stage.name, fingerprint=fp, config=stage_config(cfg, stage.name), inputs=inputs,
        started_at=started, duration_s=round(time.perf_counter() - t0, 3),
        outputs=list_outputs(work), metrics=metrics, environment=environment.capture(),
    )
    manifest.save(work)
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    shutil.rmtree(checkpoints, ignore_errors=True)
    with contextlib.suppress(OSError):  # only when no other stage keeps checkpoints there
        checkpoints.parent.rmdir()
    summary = read_json(run_dir / RUN_MANIFEST)
    summary["stages"][stage.name] = {"status": "complete", "fingerprint": fp,
                                     "duration_s": manifest.duration_s, "finished_at": _now()}
    write_json(run_dir / RUN_MANIFEST, summary)
    log.info("  %s done in %.1f s", stage.name, manifest.duration_s)


def _disk_full(err: Exception, run_dir: Path) -> bool:
    """Whether a stage failed because the disk filled up. Writers report it differently: an
    OSError with ENOSPC (Python, pyarrow), a message with the OS's words (safetensors), or an
    unrelated-looking error (torch.save); for those, the free space left decides."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if isinstance(err, KdedgeError):
        return str(err).startswith("No space left")
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    try:
        return shutil.disk_usage(run_dir).free < DISK_FULL_BYTES
    except OSError:
        return False


def _checkpoint_dir(run_dir: Path, stage: str, fp: str, *, clean: bool) -> Path:
    """Where the stage keeps training checkpoints for this fingerprint; with `clean` (the main
    process), those of another fingerprint (a changed config) are stale and removed."""
    folder = run_dir / CHECKPOINTS / f"{stage}-{fp}"
    for stale in (run_dir / CHECKPOINTS).glob(f"{stage}-*") if clean else ():
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def _fault_hook(stage: str) -> None:
    """Fault-injection tests set KDEDGE_TEST_KILL_AFTER=<stage> to SIGKILL the run right after
    that stage's work is done and before its directory is renamed: the worst moment to die."""
    if os.environ.get(FAULT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

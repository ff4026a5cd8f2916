"""Run one measurement in a freshly spawned process and watch its memory from outside.

Why a spawned child: one model's allocations, arenas and thread pools must not disturb the
next, and a peak RSS must belong to one model. Why from outside: a process that samples its
own memory perturbs what it measures, and a crash would take the numbers with it.

The child names its phase changes (imports done, model loaded, inference done) and then waits
for the parent's acknowledgement, so the parent reads the RSS at the exact boundary and each
sample is charged to the right phase. Between boundaries the parent samples RSS every few ms;
on Linux it also resets and reads the kernel's high-water mark (VmHWM, via clear_refs) so a
spike shorter than the sampling interval is not missed.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdedge.errors import KdedgeError

SAMPLE_INTERVAL_S = 0.005  # RSS sampling period without a kernel high-water mark
# With VmHWM the kernel keeps the exact peak, so sampling only has to be frequent enough to
# notice a crash or a timeout: every 5 ms, the parent's wake-ups slowed a 2-thread model on a
# 2-core machine by 10-20 % (benchmarks/crosscheck.py), every 100 ms they do not show.
HWM_SAMPLE_INTERVAL_S = 0.1
ACK_TIMEOUT_S = 600.0  # a child whose parent stopped listening gives up after this
JOIN_TIMEOUT_S = 30.0
STARTUP_PHASE = "startup"


class ChildFailed(KdedgeError):
    """The measuring process crashed, raised, or ran out of time; the reason is one line."""


class Reporter:
    """The child's side of the channel: phase changes, progress, the result."""

    def __init__(self, messages: Any, acks: Any) -> None:
        self._messages = messages
        self._acks = acks

    def phase(self, name: str) -> None:
        """Enter phase `name`; blocks until the parent has read the RSS at this boundary."""
        self._messages.put(("phase", name))
        try:
            self._acks.get(timeout=ACK_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError("the benchmarking parent process stopped answering") from None

    def event(self, data: Any) -> None:
        """A progress note for the parent (e.g. one batch size finished)."""
        self._messages.put(("event", data))


@dataclass
class Watched:
    """What the parent saw: the child's result and the RSS per phase."""

    result: Any
    boundary_rss: dict[str, int] = field(default_factory=dict)  # RSS when each phase began
    peak_rss: dict[str, int] = field(default_factory=dict)  # highest RSS seen in each phase
    samples: int = 0
    high_water_mark: bool = False  # peaks include the kernel's VmHWM, not only samples
    interval_s: float = SAMPLE_INTERVAL_S  # the RSS sampling period used


def _child_main(target: str, payload: Any, messages: Any, acks: Any) -> None:
    """Entry point of the spawned process: run `module:function(payload, reporter)`."""
    try:
        module, _, attr = target.partition(":")
        function = getattr(importlib.import_module(module), attr)
        messages.put(("result", function(payload, Reporter(messages, acks))))
    except BaseException as err:  # everything goes back to the parent as one line
        last = (str(err).strip().splitlines() or [""])[-1]
        where = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
        at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
        messages.put(("error", f"{type(err).__name__}: {last}{at}"))
    finally:
        messages.close()
        messages.join_thread()  # flush the result before the process exits


def _read_hwm(pid: int) -> int | None:
    """Peak RSS since the last reset, from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_hwm(pid: int) -> bool:
    """Reset the child's peak-RSS counter to its current RSS (Linux 4.0+)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def run_watched(target: str, payload: Any, *, timeout_s: float,
                on_event: Callable[[Any], None] | None = None,
                interval_s: float | None = None) -> Watched:
    """Spawn a child that runs `target(payload, reporter)`; return its result and memory.

    `interval_s` is the RSS sampling period; by default HWM_SAMPLE_INTERVAL_S where the kernel
    reports the peak (Linux), else SAMPLE_INTERVAL_S. Raises ChildFailed when the child
    raises, dies, or exceeds `timeout_s`.
    """
    import psutil

    ctx = multiprocessing.get_context("spawn")
    messages, acks = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=_child_main, args=(target, payload, messages, acks),
                          daemon=True, name="kdedge-bench")
    process.start()
    pid = process.pid
    if pid is None:  # start() sets it; only a failed spawn leaves it unset
        raise ChildFailed("the benchmark process could not be started")
    watched = Watched(result=None)
    phase = STARTUP_PHASE
    watched.peak_rss[phase] = 0
    watched.high_water_mark = _read_hwm(pid) is not None
    if interval_s is None:
        interval_s = HWM_SAMPLE_INTERVAL_S if watched.high_water_mark else SAMPLE_INTERVAL_S
    watched.interval_s = interval_s
    deadline = time.monotonic() + timeout_s
    try:
        handle: psutil.Process | None = psutil.Process(pid)
    except psutil.Error:  # died at once: the exit is reported by the loop below
        handle = None

    def sample() -> int:
        if handle is None:
            return 0
        try:
            rss = int(handle.memory_info().rss)
        except psutil.Error:  # gone between two samples: the exit is reported below
            return 0
        watched.samples += 1
        watched.peak_rss[phase] = max(watched.peak_rss[phase], rss)
        return rss

    def close_phase() -> None:
        hwm = _read_hwm(pid) if watched.high_water_mark else None
        if hwm is None:
            watched.high_water_mark = False
        else:  # the kernel's peak since this phase began (counter reset at its start)
            watched.peak_rss[phase] = max(watched.peak_rss[phase], hwm)

    try:
        while True:
            if time.monotonic() > deadline:
                raise ChildFailed(f"the benchmark process timed out after {timeout_s:g} s "
                                  f"during {phase!r}")
            sample()
            try:
                kind, data = messages.get(timeout=interval_s)
            except queue.Empty:
                if process.is_alive():
                    continue
                kind, data = _last_words(messages)
                if kind is None:
                    raise ChildFailed(f"the benchmark process {_exit_reason(process.exitcode)} "
                                      f"during {phase!r}") from None
            if kind == "phase":
                rss = sample()  # the child is blocked until acked: this is the boundary
                close_phase()
                phase = data
                watched.boundary_rss[phase] = rss
                watched.peak_rss[phase] = rss
                if watched.high_water_mark and not _reset_hwm(pid):
                    watched.high_water_mark = False
                acks.put(True)
            elif kind == "event":
                if on_event is not None:
                    on_event(data)
            elif kind == "error":
                process.join(JOIN_TIMEOUT_S)
                raise ChildFailed(f"the benchmark process failed during {phase!r}: {data}")
            elif kind == "result":
                close_phase()
                watched.result = data
                process.join(JOIN_TIMEOUT_S)
                return watched
    finally:
        if process.is_alive():
            process.kill()
            process.join(JOIN_TIMEOUT_S)
        for channel in (messages, acks):
            channel.close()
            with contextlib.suppress(AssertionError, OSError):
                channel.join_thread()


def _last_words(messages: Any) -> tuple[Any, Any]:
    """A message the child flushed just before exiting, if any."""
    try:
        return messages.get(timeout=0.5)
    except queue.Empty:
        return None, None

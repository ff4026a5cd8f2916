"""The accuracy gate: a quantized model ships only if its validation score (the task's primary
metric, measured through onnxruntime) stays within quantize.max_drop of the fp32 model's. The
score is the worse of one text per call and batched (evaluate.shipping_score): dynamic int8
depends on the batch, and the model must keep its accuracy however an app calls it.

When the asked-for mode breaks the bound, fallbacks are tried in order: per-channel weights,
then also keeping the sensitive nodes (embeddings, pooler, classifier) in float, then also
reduce-range, then plain dynamic quantization. Every attempt is recorded with its score,
size and a short in-process batch-1 latency.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdedge.errors import KdedgeError
from kdedge.quantize.modes import PRESET_TYPES, QuantSpec

log = logging.getLogger("kdedge")

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_max_drop(value: float | str | None) -> tuple[str, float] | None:
    """0.01 -> ("absolute", 0.01); "1%" -> ("relative", 0.01); None -> no gate."""
    if value is None:
        return None
    if isinstance(value, str):
        match = _RELATIVE.match(value)
        if match:
            return "relative", float(match.group(1)) / 100
        try:
            value = float(value)
        except ValueError:
            raise KdedgeError(f"quantize.max_drop {value!r} is neither a number nor a percentage; "
                              "write e.g. 0.01 (absolute) or \"1%\" (relative).") from None
    if isinstance(value, bool) or not 0 <= float(value) < 1:
        raise KdedgeError(f"quantize.max_drop {value!r} is out of range; give an absolute drop "
                          "in [0, 1) like 0.01, or a percentage like \"1%\".")
    return "absolute", float(value)


def allowed_drop(max_drop: float | str | None, fp32_score: float) -> float | None:
    """The largest absolute score drop the bound allows for this fp32 score."""
    parsed = parse_max_drop(max_drop)
    if parsed is None:
        return None
    kind, amount = parsed
    return amount * abs(fp32_score) if kind == "relative" else amount


def fallback_specs(spec: QuantSpec, sensitive: list[str]) -> list[tuple[str, QuantSpec]]:
    """The asked-for spec first, then each fallback that differs from the ones before it."""
    steps = [("asked", spec)]
    current = spec.replace(per_channel=True)
    steps.append(("per-channel", current))
    current = current.replace(exclude=tuple(dict.fromkeys([*current.exclude, *sensitive])))
    steps.append(("exclude sensitive nodes", current))
    current = current.replace(reduce_range=True)
    steps.append(("reduce-range", current))
    activation, weight = PRESET_TYPES[spec.preset]
    steps.append(("dynamic", QuantSpec(mode="dynamic", preset=spec.preset,
                                       activation_type=activation, weight_type=weight)))
    seen: list[QuantSpec] = []
    out = []
    for reason, candidate in steps:
        if candidate not in seen:
            seen.append(candidate)
            out.append((reason, candidate))
    return out


def batch1_latency_ms(path: Path, feed: dict[str, np.ndarray], threads: int | None,
                      runs: int = 20, warmup: int = 3) -> float:
    """A short in-process p50 at batch 1; the bench stage does the real measurement."""
    from kdedge.runtime import ort_session

    session = ort_session(path, threads)
    names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in names}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


@dataclass
class GateResult:
    passed: bool | None  # None: no gate configured
    chosen: dict[str, Any]  # the attempt whose graph became the artifact
    attempts: list[dict[str, Any]]
    fp32_score: float
    allowed_drop: float | None
    reason: str | None


def run_gate(build: Callable[[QuantSpec, Path], None], score: Callable[[Path], float],
             latency: Callable[[Path], float], specs: list[tuple[str, QuantSpec]],
             fp32_score: float, max_drop: float | str | None, metric: str, work: Path,
             ) -> tuple[GateResult, Path]:
    """Try specs in order until one keeps the validation score within the bound.

    Returns the result and the .onnx file of the chosen attempt: the first that passed, or,
    when none did, the one with the best validation score (the report then says the gate
    failed). Without a bound only the first spec is built.
    """
    bound = allowed_drop(max_drop, fp32_score)
    attempts: list[dict[str, Any]] = []
    files: list[Path | None] = []
    for index, (reason, spec) in enumerate(specs if bound is not None else specs[:1]):
        path = work / f"attempt-{index}.onnx"
        try:
            build(spec, path)
        except KdedgeError as err:
            if index == 0:  # the mode the user asked for must build
                raise
            log.warning("  %s: %s", spec.label(), err)
            attempts.append({"step": reason, **spec.as_dict(), "error": str(err), "passed": False})
            files.append(None)
            continue
        value = score(path)
        drop = fp32_score - value
        passed = None if bound is None else drop <= bound + 1e-12
        attempt = {"step": reason, **spec.as_dict(), f"validation_{metric}": value,
                   "drop": drop, "passed": passed, "bytes": path.stat().st_size,
                   "batch1_p50_ms": latency(path)}
        attempts.append(attempt)
        files.append(path)
        log.info("  %-28s validation %s %.4f (change %+.4f%s), %.1f MB, %.2f ms at batch 1",
                 spec.label(), metric, value, -drop,
                 "" if bound is None else f", bound {bound:.4f}: {'ok' if passed else 'FAILED'}",
                 attempt["bytes"] / 1e6, attempt["batch1_p50_ms"])
        if passed is not False:
            return GateResult(passed, attempt, attempts, fp32_score, bound, None), path
    built = [i for i, f in enumerate(files) if f is not None]
    best = max(built, key=lambda i: attempts[i][f"validation_{metric}"])
    reason = (f"no quantized model kept validation {metric} within {bound:.4f} of fp32's "
              f"{fp32_score:.4f} (quantize.max_drop={max_drop}); the best, "
              f"{attempts[best]['label']}, lost {attempts[best]['drop']:.4f}")
    return GateResult(False, attempts[best], attempts, fp32_score, bound, reason), files[best]


def cleanup(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


def enforce(check: dict[str, Any], strict: bool) -> None:
    """With --strict, a failed accuracy gate stops the run with one line."""
    if check["passed"] is False and strict:
        raise KdedgeError(f"The quantization accuracy gate failed: {check['reason']}; raise "
                          "--max-accuracy-drop, or drop --strict to ship the fp32 student.")

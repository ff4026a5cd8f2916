"""Number-to-text helpers shared by compare (its sentences) and the renderers (their cells).

One place decides how a percentage or a ratio looks, so the verdict sentence and the table
beside it print the same value the same way. None always becomes "n/a": a missing part of a
run is shown, never crashed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NA = "n/a"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def fmt_pct(value: float | None, digits: int = 1) -> str:
    """A fraction (0.934) as a percentage ("93.4%")."""
    return NA if value is None else f"{value * 100:.{digits}f}%"


def fmt_pp(value: float | None, digits: int = 2) -> str:
    """A difference of two fractions as signed percentage points ("-1.20 pp")."""
    return NA if value is None else f"{value * 100:+.{digits}f} pp"


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    """A ratio as a multiplier ("3.10×"); below 0.1 in significant digits, so a 300× slower
    artifact reads "0.0034×" rather than "0.00×"."""
    if value is None:
        return NA
    return f"{value:.{digits}f}×" if abs(value) >= 0.1 else f"{value:.{digits}g}×"


def fmt_num(value: float | None, digits: int = 2) -> str:
    """A plain number with fixed decimals (milliseconds, losses, samples/s)."""
    return NA if value is None else f"{value:.{digits}f}"


def fmt_ms(value: float | None) -> str:
    """A latency with its unit, for sentences."""
    return NA if value is None else f"{value:.2f} ms"


def fmt_sci(value: float | None) -> str:
    """Small tolerances and differences (1e-4 and below) stay readable in scientific form."""
    return NA if value is None else f"{value:.2e}"


def fmt_int(value: int | None) -> str:
    """A count with thousands separators ("1,234,567")."""
    return NA if value is None else f"{value:,}"


def fmt_bytes(value: int | None) -> str:
    """A byte count in binary units ("255.4 MiB"); the exact count is in report.json."""
    if value is None:
        return NA
    size, unit = float(value), _UNITS[0]
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            break
        size /= 1024
    return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def fmt_bool(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    return NA if value is None else (yes if value else no)


def fmt_processes(processes: Mapping[str, Any] | None) -> str:
    """The processes a stage trained on: "1 (cpu)", "4 (nccl, cuda:0 on the main one)"."""
    if not processes:
        return NA
    size = processes.get("world_size")
    if size == 1 or not processes.get("backend"):
        return f"{fmt_int(size)} ({processes.get('device')})"
    return f"{fmt_int(size)} ({processes.get('backend')}, {processes.get('device')} on the main one)"


# How each quality metric is named in sentences and printed: accuracy is a fraction shown as a
# percentage; correlations and MSE are plain numbers, their changes signed.
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "pearson": "Pearson",
                "spearman": "Spearman", "mse": "MSE"}
_PERCENT_DELTAS = ("accuracy", "macro_f1")


def metric_name(metric: str) -> str:
    """"accuracy", "macro-F1", "Pearson", ...: as a sentence names the metric."""
    return METRIC_NAMES.get(metric, metric)


def metric_title(metric: str) -> str:
    """The metric's name opening a table header ("Macro-F1")."""
    name = metric_name(metric)
    return name[:1].upper() + name[1:]


def fmt_metric(value: float | None, metric: str) -> str:
    """A metric's value: accuracy as "87.00%", the others as "0.9342"."""
    return fmt_pct(value, 2) if metric == "accuracy" else fmt_num(value, 4)


def fmt_metric_delta(value: float | None, metric: str) -> str:
    """A change of a metric: percentage points for accuracy and macro-F1, else "+0.0123"."""
    if metric in _PERCENT_DELTAS:
        return fmt_pp(value)
    return NA if value is None else f"{value:+.4f}"


def dig(data: Any, *keys: str | None) -> Any:
    """A nested value of report data (`dig(row, "latency", "1", "p50_ms")`), None where any
    level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data

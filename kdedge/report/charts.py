"""SVG charts for report.html: small pure functions from report data to an <svg> string.

A chart only places values that compare.py computed; what it computes is geometry (pixels and
axis ticks), never a number a reader is told. Every text from a run (artifact names, phases)
goes through html.escape, and the SVG is inline and script-free, so the page opens from disk
without a network request. Each chart carries a title, axis labels with units, and a
`data-chart` name that the browser test looks for; with nothing to plot it says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 340
_MARGIN = {"left": 70, "right": 20, "top": 56, "bottom": 52}  # the top holds title and legend
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2",
           "#65a30d", "#475569")


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    highlight: bool = False  # on the Pareto front


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Spread:
    """One latency distribution as the bench summarizes it (milliseconds)."""

    label: str
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round axis ticks covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt_tick(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2 and 5 times powers of ten, from the last at or below lo to the first at or above hi
    (lo > 0)."""
    exponent = math.floor(math.log10(lo))
    candidates = [round(m * 10.0 ** e, 12) for e in range(exponent, math.ceil(math.log10(hi)) + 1)
                  for m in (1, 2, 5)]
    first = max(t for t in candidates if t <= lo)
    last = min(t for t in candidates if t >= hi)
    return [t for t in candidates if first <= t <= last]


def wants_log(lo: float, hi: float) -> bool:
    """A latency axis goes logarithmic when its values span more than 20x: a slow PyTorch
    teacher must not squash the ONNX artifacts into one corner."""
    return lo > 0 and hi / lo > 20


class _Frame:
    """A plot area with linear (or logarithmic x) scales and the SVG around it.

    integer_x: the x values are counts (epochs), so ticks fall on whole numbers and the ends
    are padded by half a step to keep end points off the axes.
    """

    def __init__(self, name: str, title: str, x_label: str, y_label: str,
                 x_range: tuple[float, float], y_range: tuple[float, float],
                 height: int = HEIGHT, left: int = _MARGIN["left"], y_scale: bool = True,
                 x_log: bool = False, integer_x: bool = False) -> None:
        self.name, self.height, self.y_scale, self.x_log = name, height, y_scale, x_log
        if x_log:
            self.x_ticks = log_ticks(*x_range)
        elif integer_x:
            lo, hi = math.floor(x_range[0]), math.ceil(x_range[1])
            step = max(1, math.ceil((hi - lo) / 10))
            self.x_ticks = [float(v) for v in range(lo, hi + 1, step)]
        else:
            self.x_ticks = nice_ticks(*x_range)
        self.y_ticks = nice_ticks(*y_range)
        pad = 0.5 * ((self.x_ticks[1] - self.x_ticks[0]) if len(self.x_ticks) > 1 else 1) \
            if integer_x else 0.0
        self.x0, self.x1 = self._fx(self.x_ticks[0]) - pad, self._fx(self.x_ticks[-1]) + pad
        if x_log:  # the axis spans the data; ticks beyond it are dropped, not room made for them
            self.x0, self.x1 = math.log10(x_range[0]), math.log10(x_range[1])
            self.x_ticks = [t for t in self.x_ticks if x_range[0] <= t <= x_range[1]]
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]
        self.left, self.right = left, WIDTH - _MARGIN["right"]
        self.top, self.bottom = _MARGIN["top"], height - _MARGIN["bottom"]
        self.parts = [_title(title), *self._axes(x_label + (", log scale" if x_log else ""),
                                                 y_label)]

    def _fx(self, value: float) -> float:
        return math.log10(value) if self.x_log else value

    def x(self, value: float) -> float:
        return self.left + (self._fx(value) - self.x0) / ((self.x1 - self.x0) or 1) * (
            self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y0) / ((self.y1 - self.y0) or 1) * (self.bottom - self.top)

    def _axes(self, x_label: str, y_label: str) -> list[str]:
        parts = []
        for tick in self.y_ticks if self.y_scale else ():
            y = self.y(tick)
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.right}" y1="{y:.1f}" '
                         f'y2="{y:.1f}"/><text class="tick" x="{self.left - 6}" y="{y + 4:.1f}" '
                         f'text-anchor="end">{_fmt_tick(tick)}</text>')
        for tick in self.x_ticks:
            x = self.x(tick)
            parts.append(f'<line class="tickmark" x1="{x:.1f}" x2="{x:.1f}" y1="{self.bottom}" '
                         f'y2="{self.bottom + 4}"/><text class="tick" x="{x:.1f}" '
                         f'y="{self.bottom + 17}" text-anchor="middle">{_fmt_tick(tick)}</text>')
        parts.append(f'<line class="axis" x1="{self.left}" x2="{self.right}" y1="{self.bottom}" '
                     f'y2="{self.bottom}"/><line class="axis" x1="{self.left}" x2="{self.left}" '
                     f'y1="{self.top}" y2="{self.bottom}"/>')
        parts.append(f'<text class="label" x="{(self.left + self.right) / 2:.1f}" '
                     f'y="{self.height - 10}" text-anchor="middle">{escape(x_label)}</text>')
        middle = (self.top + self.bottom) / 2
        parts.append(f'<text class="label" x="16" y="{middle:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 16 {middle:.1f})">{escape(y_label)}</text>')
        return parts

    def svg(self) -> str:
        return _svg(self.name, self.parts, self.height)


def _svg(name: str, parts: list[str], height: int = HEIGHT) -> str:
    return (f'<svg data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">'
            + "".join(parts) + "</svg>")


def _title(title: str) -> str:
    return f'<text class="title" x="{WIDTH / 2}" y="22" text-anchor="middle">{escape(title)}</text>'


def empty(name: str, title: str, reason: str) -> str:
    """A chart with nothing to plot says why, in the chart's place."""
    return _svg(name, [_title(title), f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" '
                                      f'text-anchor="middle">{escape(reason)}</text>'])


def _pad(lo: float, hi: float, share: float = 0.08) -> tuple[float, float]:
    span = (hi - lo) or (abs(hi) or 1.0)
    return lo - span * share, hi + span * share


def scatter(name: str, points: Sequence[Point], *, title: str, x_label: str, y_label: str,
            front_label: str = "Pareto front", join: bool = True,
            x_limit: float | None = None, y_limit: float | None = None,
            other_label: str = "other artifacts") -> str:
    """Points with labels; highlighted points joined left to right as the front (unless not
    `join`); x_limit and y_limit draw a budget as a dashed line across the plot."""
    if not points:
        return empty(name, title, "No artifact has both a latency and a test score.")
    xs = [p.x for p in points] + ([x_limit] if x_limit else [])
    ys = [p.y for p in points] + ([y_limit] if y_limit is not None else [])
    log = wants_log(min(xs), max(xs))
    frame = _Frame(name, title, x_label, y_label,
                   (min(xs) / 1.3, max(xs) * 1.3) if log else (0.0, max(xs) * 1.1),
                   _pad(min(ys), max(ys)), x_log=log)
    if x_limit:
        frame.parts.append(f'<line class="budget" x1="{frame.x(x_limit):.1f}" '
                           f'y1="{frame.top}" x2="{frame.x(x_limit):.1f}" y2="{frame.bottom}"/>')
    if y_limit is not None:
        frame.parts.append(f'<line class="budget" x1="{frame.left}" y1="{frame.y(y_limit):.1f}" '
                           f'x2="{frame.right}" y2="{frame.y(y_limit):.1f}"/>')
    front = sorted((p for p in points if p.highlight), key=lambda p: p.x)
    if len(front) > 1 and join:
        path = " ".join(f"{frame.x(p.x):.1f},{frame.y(p.y):.1f}" for p in front)
        frame.parts.append(f'<polyline class="front" points="{path}"/>')
    for i, p in enumerate(points):
        cx, cy = frame.x(p.x), frame.y(p.y)
        # centred on its point, above or below by turns, so neighbours keep readable labels
        dy = -11 if i % 2 == 0 else 19
        anchor = "start" if cx < frame.left + 50 else ("end" if cx > frame.right - 50 else "middle")
        frame.parts.append(
            f'<circle class="{"on-front" if p.highlight else "point"}" cx="{cx:.1f}" '
            f'cy="{cy:.1f}" r="6"><title>{escape(p.label)}</title></circle>'
            f'<text class="point-label" x="{cx:.1f}" y="{cy + dy:.1f}" '
            f'text-anchor="{anchor}">{escape(p.label)}</text>')
    if front:
        frame.parts.append(_legend([(front_label, "front", ""), (other_label, "point", "")]))
    return frame.svg()


def _legend(entries: Sequence[tuple[str, str, str]]) -> str:
    """A row of (label, mark class, colour) under the title, left to right, clear of the plot."""
    parts, x, y = [], float(_MARGIN["left"]), 40.0
    for label, cls, color in entries:
        if cls in ("series", "front"):
            stroke = f' stroke="{color}"' if color else ""
            parts.append(f'<line class="{cls}"{stroke} x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y}" '
                         f'y2="{y}"/>')
            if cls == "front":  # a front of one point has no line: show its marker too
                parts.append(f'<circle class="on-front" cx="{x + 9:.1f}" cy="{y}" r="4"/>')
        else:
            parts.append(f'<circle class="{cls}" cx="{x + 9:.1f}" cy="{y}" r="5"/>')
        parts.append(f'<text class="legend" x="{x + 24:.1f}" y="{y + 4}">{escape(label)}</text>')
        x += 24 + 6.5 * len(label) + 18
    return "".join(parts)


def spreads(name: str, rows: Sequence[Spread], *, title: str, x_label: str) -> str:
    """One horizontal strip per artifact: a whisker from min to max, a box from p50 to p95, a
    bar at p50 and ticks at p90 and p99."""
    if not rows:
        return empty(name, title, "No latency was measured in this run.")
    row_h, height = 34, _MARGIN["top"] + _MARGIN["bottom"] + 34 * len(rows) + 10
    left = 170  # no y scale: the rows are artifacts, named left of the plot
    lo, hi = min(r.min for r in rows), max(r.max for r in rows)
    log = wants_log(lo, hi)
    frame = _Frame(name, title, x_label, "", (lo / 1.1, hi * 1.1) if log else (0.0, hi * 1.02),
                   (0, 1), height, left=left, y_scale=False, x_log=log)
    for i, r in enumerate(rows):
        y = frame.top + 10 + i * row_h + row_h / 2
        x = frame.x
        frame.parts.append(
            f'<g class="spread"><title>{escape(r.label)}: min {r.min:g}, p50 {r.p50:g}, '
            f'p90 {r.p90:g}, p95 {r.p95:g}, p99 {r.p99:g}, max {r.max:g} ms</title>'
            f'<line class="whisker" x1="{x(r.min):.1f}" x2="{x(r.max):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/>'
            f'<rect class="box" x="{x(r.p50):.1f}" y="{y - 9:.1f}" '
            f'width="{max(x(r.p95) - x(r.p50), 2):.1f}" height="18" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<line class="median" x1="{x(r.p50):.1f}" x2="{x(r.p50):.1f}" y1="{y - 11:.1f}" '
            f'y2="{y + 11:.1f}"/>'
            + "".join(f'<line class="pct" x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{y - 6:.1f}" '
                      f'y2="{y + 6:.1f}"/>' for v in (r.p90, r.p99))
            + f'</g><text class="row-label" x="{left - 8}" y="{y + 4:.1f}" '
              f'text-anchor="end">{escape(r.label)}</text>')
    return frame.svg()


def bars(name: str, items: Sequence[tuple[str, float, str]], *, title: str,
         x_label: str) -> str:
    """Horizontal bars (label, value, value as printed)."""
    if not items:
        return empty(name, title, "No artifact size was recorded in this run.")
    row_h = 30
    height = _MARGIN["top"] + _MARGIN["bottom"] + row_h * len(items) + 10
    frame = _Frame(name, title, x_label, "", (0.0, max(v for _, v, _ in items) * 1.15), (0, 1),
                   height, left=170, y_scale=False)
    for i, (label, value, printed) in enumerate(items):
        y = frame.top + 10 + i * row_h
        width = max(frame.x(value) - frame.left, 1.0)
        frame.parts.append(
            f'<rect class="bar" x="{frame.left}" y="{y + 4}" width="{width:.1f}" '
            f'height="{row_h - 10}" fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: '
            f'{escape(printed)}</title></rect>'
            f'<text class="row-label" x="{frame.left - 8}" y="{y + row_h / 2 + 4}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<text class="value" x="{frame.left + width + 5:.1f}" y="{y + row_h / 2 + 4}">'
            f'{escape(printed)}</text>')
    return frame.svg()


def lines(name: str, series: Sequence[Series], *, title: str, x_label: str, y_label: str,
          integer_x: bool = False) -> str:
    """One polyline with markers per series, and a legend naming them; integer_x for counts."""
    series = [s for s in series if s.points]
    if not series:
        return empty(name, title, "No per-epoch history in this run.")
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    frame = _Frame(name, title, x_label, y_label, (min(xs), max(xs)), _pad(min(ys), max(ys)),
                   integer_x=integer_x)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in s.points)
        frame.parts.append(f'<polyline class="series" stroke="{color}" points="{path}"/>')
        frame.parts += [f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="3.5" '
                        f'fill="{color}"><title>{escape(s.name)}: {x:g}, {y:g}</title></circle>'
                        for x, y in s.points]
    frame.parts.append(_legend([(s.name, "series", PALETTE[i % len(PALETTE)])
                                for i, s in enumerate(series)]))
    return frame.svg()

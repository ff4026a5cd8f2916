"""What a report section is: a small tree of frozen values that both formats render.

A builder (builders.py, or a caller's own) turns the report data (compare.py's report.json)
into one Section, or None when its part of the run is absent. Every value in a Section is
final text, formatted with kdedge.report.formatting but not escaped: escaping is the
renderer's job (render.py for Markdown, html.py for the page), so both formats print the same
words and numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kdedge.report.formatting import NA, fmt_bool, fmt_int


@dataclass(frozen=True)
class Code:
    """Text shown as code (fingerprints, paths): <code> on the page, plain in Markdown."""

    text: str


Cell = str | Code


@dataclass(frozen=True)
class Text:
    """A paragraph. style: "" (plain), "strong" (the verdict's headline) or "muted"."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Bullets:
    """A list, with an optional title above it."""

    items: tuple[str, ...]
    title: str = ""


@dataclass(frozen=True)
class Facts:
    """Name: value lines."""

    items: tuple[tuple[str, Cell], ...]


@dataclass(frozen=True)
class Figures:
    """Headline numbers, (value, what it measures): large on the page, bold in Markdown."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    """A header and rows of cells. The first text_cols columns are text (left-aligned), column
    `wrap` holds long text that may wrap, and the rows in `marked` are highlighted."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    text_cols: int = 1
    wrap: int | None = None
    marked: tuple[int, ...] = ()


@dataclass(frozen=True)
class Chart:
    """An inline SVG from charts.py (its texts escaped there); the page shows it, Markdown
    leaves it out."""

    name: str
    svg: str
    caption: str


Block = Text | Bullets | Facts | Figures | Table | Chart


@dataclass(frozen=True)
class Section:
    """A titled part of the report: its blocks in order, then its subsections. style names how
    the page sets it apart ("verdict", "warnings", "grid", "side-by-side"); Markdown ignores it."""

    id: str
    title: str
    blocks: tuple[Block, ...] = ()
    parts: tuple[Section, ...] = ()
    style: str = ""


Builder = Callable[[Mapping[str, Any]], Section | None]


def table(header: Iterable[str], rows: Iterable[Iterable[Cell]], **options: Any) -> Table:
    """A Table from any iterables (builders write lists; the Section keeps tuples)."""
    return Table(tuple(header), tuple(tuple(r) for r in rows), **options)


def facts(pairs: Iterable[tuple[str, Cell]]) -> Facts:
    """Facts from any iterable of (name, value) pairs."""
    return Facts(tuple(pairs))


def cell(value: Any) -> str:
    """Any plain value as cell text: numbers formatted, containers as JSON, None as n/a."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return fmt_bool(value)
    if isinstance(value, int):
        return fmt_int(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)

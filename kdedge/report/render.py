"""Report formats: each turns the report data from compare.py into the text of one file.

Renderers only format: every number they print was computed in compare.py, and every section
is built once in sections.py, so report.json, report.md and report.html always agree. This
module holds the registry of formats and the Markdown writer; html.py writes the page. A new
format is one function registered in FORMATS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kdedge.registry import Registry
from kdedge.report.builders import build_sections, comparison_sections, comparison_subtitle, subtitle
from kdedge.report.formatting import NA
from kdedge.report.html import render_comparison_html, render_html
from kdedge.report.sections import (
    Block,
    Builder,
    Bullets,
    Cell,
    Chart,
    Code,
    Facts,
    Figures,
    Section,
    Table,
    Text,
)

# A report format: (report data, extra section builders) -> the file's text.
Renderer = Callable[..., str]
FORMATS: Registry[Renderer] = Registry("report format")
COMPARISON_FORMATS: Registry[Renderer] = Registry("comparison format")
FORMATS.register("html")(render_html)
COMPARISON_FORMATS.register("html")(render_comparison_html)


def render(fmt: str, data: Mapping[str, Any], extra_builders: Sequence[Builder] = ()) -> str:
    """The text of report.<fmt>; an unknown format names the known ones. extra_builders: a
    caller's own sections (see builders.build_sections), in every format that has sections."""
    return FORMATS.get(fmt)(data, extra_builders)


def file_name(fmt: str) -> str:
    return f"report.{fmt}"


def render_comparison(fmt: str, data: Mapping[str, Any]) -> str:
    """The text of a several-run comparison file (compare.build_comparison's data)."""
    return COMPARISON_FORMATS.get(fmt)(data)


@COMPARISON_FORMATS.register("json")
@FORMATS.register("json")
def render_json(data: Mapping[str, Any], extra_builders: Sequence[Builder] = ()) -> str:
    """The report data as is: the machine-readable report is the data itself."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


@FORMATS.register("md")
def render_markdown(data: Mapping[str, Any], extra_builders: Sequence[Builder] = ()) -> str:
    """The report for a person deciding what to ship: the verdict first, the evidence after."""
    return markdown("kdedge deployment report", subtitle(data), build_sections(data, extra_builders))


@COMPARISON_FORMATS.register("md")
def render_comparison_markdown(data: Mapping[str, Any]) -> str:
    """Runs side by side: one verdict per run, then one column group per run per artifact."""
    return markdown("kdedge run comparison", comparison_subtitle(data), comparison_sections(data))


# ---------------------------------------------------------------------------------------------
# Markdown

# Characters that change meaning anywhere in a line or table cell. `<`, `>` and `&` become
# entities so no label can open an HTML tag; the rest are backslash-escaped.
_MD_ESCAPES = {c: "\\" + c for c in "\\`*_{}[]|~#$"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LEADING_BLOCK = re.compile(r"^(\d+)([.)])|^([-+=])")  # would start a list or heading


def escape_md(value: Any, *, line_start: bool = False) -> str:
    """Text from a run (labels, paths, model names) as inert Markdown, on one line.

    line_start: the text opens a line, so a leading "1." or "-" must not start a list. Only
    then, so versions like "3.11" stay readable inside cells and bullets.
    """
    if value is None:
        return NA
    text = " ".join(str(value).split())  # newlines would break a table row
    text = "".join(_MD_ESCAPES.get(c, c) for c in text)
    if not line_start:
        return text
    return _LEADING_BLOCK.sub(lambda m: (f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}"), text,
                              count=1)


def markdown(title: str, sub: str, sections: Iterable[Section]) -> str:
    """A whole Markdown file: the title, a line saying what it covers, then every section."""
    lines = [f"# {escape_md(title)}", "", escape_md(sub, line_start=True), ""]
    for section in sections:
        lines += _section(section, 2)
    return "\n".join(lines).rstrip() + "\n"


def _section(section: Section, level: int) -> list[str]:
    """A section's lines, each block followed by a blank line; nothing when it has only charts
    (Markdown has no pictures: the page shows them)."""
    body = [line for block in section.blocks for line in (*_block(block), "")
            if not isinstance(block, Chart)]
    for part in section.parts:
        body += _section(part, level + 1)
    return [f"{'#' * level} {escape_md(section.title)}", "", *body] if body else []


def _block(block: Block) -> list[str]:
    if isinstance(block, Text):
        text = escape_md(block.text, line_start=True)
        return [f"**{text}**" if block.style == "strong" else text]
    if isinstance(block, Bullets):
        title = [f"**{escape_md(block.title)}**", ""] if block.title else []
        return [*title, *[f"- {escape_md(item)}" for item in block.items]]
    if isinstance(block, Facts):
        return [f"- {escape_md(key)}: {_cell(value)}" for key, value in block.items]
    if isinstance(block, Figures):
        return [f"- **{escape_md(value)}** {escape_md(label)}" for value, label in block.items]
    if isinstance(block, Table):
        return table_lines(block)
    return []  # a Chart


def _cell(value: Cell) -> str:
    return escape_md(value.text if isinstance(value, Code) else value)


def table_lines(table: Table) -> list[str]:
    """A GitHub table."""
    return ["| " + " | ".join(map(escape_md, table.header)) + " |",
            "|" + "---|" * len(table.header),
            *["| " + " | ".join(map(_cell, row)) + " |" for row in table.rows]]

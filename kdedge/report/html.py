"""report.html: the report as one self-contained page, with SVG charts.

The page is rendered from the same sections as report.md (kdedge.report.sections) by a Jinja2
template with autoescape on, so every string from a run is escaped on its way in; the only
markup let through unescaped is the inline SVG of charts.py, which escapes its own texts.
The template (page.html.j2) holds an inline <style>, and there is no script, font, image or
link to fetch, so the page opens from disk offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from jinja2 import Environment

from kdedge.report.builders import build_sections, comparison_sections, comparison_subtitle, subtitle
from kdedge.report.sections import (
    Builder,
    Bullets,
    Chart,
    Code,
    Facts,
    Figures,
    Section,
    Table,
    Text,
)

CHARTS = ("quality-vs-latency", "latency-distribution", "training-loss", "training-validation",
          "size")

_ENV = Environment(autoescape=True, keep_trailing_newline=True)
_ENV.tests.update(code=lambda v: isinstance(v, Code), text=lambda v: isinstance(v, Text),
                  bullets=lambda v: isinstance(v, Bullets), facts=lambda v: isinstance(v, Facts),
                  figures=lambda v: isinstance(v, Figures), table=lambda v: isinstance(v, Table),
                  chart=lambda v: isinstance(v, Chart))
_PAGE = _ENV.from_string(
    resources.files("kdedge.report").joinpath("page.html.j2").read_text(encoding="utf-8"))


def page(title: str, sub: str, sections: Iterable[Section]) -> str:
    """The whole document: inline style, the sections in order, no script, nothing fetched."""
    return _PAGE.render(title=title, subtitle=sub, sections=list(sections))


def render_html(data: Mapping[str, Any], extra_builders: Sequence[Builder] = ()) -> str:
    """The report page: verdict, charts, then the evidence tables."""
    return page("kdedge deployment report", subtitle(data), build_sections(data, extra_builders))


def render_comparison_html(data: Mapping[str, Any]) -> str:
    """Runs side by side: verdicts, a chart of each run's artifacts, one column group per run."""
    return page("kdedge run comparison", comparison_subtitle(data), comparison_sections(data))

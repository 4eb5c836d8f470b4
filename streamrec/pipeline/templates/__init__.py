"""The report pages' templates (this folder) and the one Jinja2 environment that renders them.

Pages (each extends ``base.html``, which holds the shared CSS)::

    index.html     reports/index.html                 (streamrec.pipeline.reports.write_index)
    gate.html      reports/gates/<version>.html       (streamrec.pipeline.reports.gate_report)
    tuning.html    reports/tuning/<run>/index.html    (streamrec.pipeline.tuning_report.write)
    macros.html    table cells, links, a gate decision, a parameter list
    charts.svg     the inline SVG charts: the RMSE per version and the score per tuning trial

Python computes what a page shows (values, chart coordinates); the templates say how. Every ``{{ value }}``
is escaped: ``autoescape`` is on for ``.html``/``.svg``/``.xml``, and ``finalize`` escapes each value the way
:func:`html.escape` does (``'`` as ``&#x27;``, ``"`` as ``&quot;``, as the pages always wrote them) and
returns it as :class:`~markupsafe.Markup`, so autoescape does not escape it twice; macro output is already
markup. ``None`` is shown as an em dash. A name a template uses but the context lacks raises
:class:`jinja2.UndefinedError` (``StrictUndefined``): optional facts are made explicit (``None``) in Python.
Numbers are formatted by the filters registered here (:data:`FILTERS`), not by string building.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, Undefined, select_autoescape
from markupsafe import Markup

__all__ = ["ENV", "FILTERS", "chart_frame", "macro", "render"]

DASH = "\u2014"


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: markup as it is, ``None`` as an em dash, anything else ``html.escape``-d."""
    if hasattr(value, "__html__"):
        return value
    if value is None:
        return DASH
    return Markup(html.escape(str(value), quote=True))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 4) -> Any:
    """A float with ``digits`` decimals, an int as it is; anything else (text, NaN, ``None``) unchanged."""
    if not _is_number(value):
        return value
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def thousands(value: int) -> str:
    """``12345`` as ``12,345``."""
    return f"{value:,}"


def pct(value: Any) -> Any:
    """A fraction as a percentage with one decimal (``0.01`` as ``1.0%``); anything else unchanged."""
    return f"{value:.1%}" if _is_number(value) else value


def fixed(value: float, digits: int = 1) -> str:
    """A chart coordinate or axis value with ``digits`` decimals."""
    return f"{value:.{digits}f}"


def points(pairs: Iterable[tuple[float, float]]) -> str:
    """``[(x, y), ...]`` as an SVG ``points`` list (``x,y x,y``, one decimal)."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pairs)


def url(path: str) -> str:
    """A relative link, URL-quoted (the attribute escaping follows as for every value)."""
    return quote(path, safe="/._-~#")


def budget(minutes: Any) -> str:
    """A tuning run's time budget in minutes (``None`` or ``<= 0``: no limit)."""
    return f"{minutes:g} min" if _is_number(minutes) and minutes > 0 else "no limit"


FILTERS: dict[str, Callable[..., Any]] = {
    "num": num,
    "thousands": thousands,
    "pct": pct,
    "fixed": fixed,
    "points": points,
    "url": url,
    "budget": budget,
}


def _strict(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` refusing an undefined argument with :class:`jinja2.UndefinedError` (as ``{{ value }}`` does)
    instead of formatting it or failing with a ``TypeError`` far from the missing name."""

    @functools.wraps(f)
    def strict(*args: Any) -> Any:
        for a in args:
            if isinstance(a, Undefined):
                str(a)  # StrictUndefined raises UndefinedError naming the missing field
        return f(*args)

    return strict


ENV = Environment(
    loader=PackageLoader("streamrec.pipeline", "templates"),
    autoescape=select_autoescape(["html", "svg", "xml"]),
    undefined=StrictUndefined,
    finalize=_finalize,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENV.filters.update({name: _strict(f) for name, f in FILTERS.items()})


def render(name: str, **context: Any) -> str:
    """The template ``name`` rendered with ``context``."""
    return ENV.get_template(name).render(**context)


def macro(template: str, name: str) -> Callable[..., Markup]:
    """The macro ``name`` of ``template`` (e.g. ``macro("charts.svg", "rmse")(chart)``)."""
    return getattr(ENV.get_template(template).module, name)


def chart_frame(
    width: int,
    height: int,
    box: tuple[int, int, int, int],
    span: tuple[float, float],
    sy: Callable[[float], float],
    label: str,
    aria: str,
) -> dict:
    """The frame of an SVG chart (``charts.svg``'s ``frame``): the plot box ``(left, top, pw, ph)``, five
    horizontal grid lines over ``span = (lo, hi)`` (``sy`` maps a value to its y) and the y-axis ``label``."""
    left, top, pw, ph = box
    lo, hi = span
    grid = [{"y": sy(v), "value": v} for v in (lo + (hi - lo) * k / 4 for k in range(5))]
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "pw": pw,
        "ph": ph,
        "grid": grid,
        "label": label,
        "aria": aria,
    }

"""Pages users review: one gate report per candidate version, and the index of everything.

Written through a :class:`~streamrec.storage.bucket.Bucket` (local folder or ``s3://``)::

    reports/index.html                 versions, quarantined partitions, the RMSE chart (write_index)
    reports/gates/<version>.html       candidate vs published, the decision and its reasons, the chart
    reports/gates/<version>.json       the same facts as data
    reports/partitions/<id>/report.json, reports/datadocs/<id>/...   written by streamrec.pipeline.contract (linked here)

Every page is self-contained (inline CSS and SVG; no script, no CDN) and links only relatively inside
``reports/``, so the folder can be served, copied or opened from S3 as it is. Every value put into HTML is
escaped (partition names and manifest fields come from users), and every link is URL-quoted.

The RMSE chart plots the validation RMSE (``manifest["metrics"]["validation"]["rmse"]``) of each version in
creation order; the marker shape tells the kind (square bootstrap, diamond retrain, circle update) and the fill
the status (filled published, hollow red rejected, grey candidate). Versions validated on different validation
sets (the set grows with every partition) are not strictly comparable: the chart shows the trend, the gate
compares candidate and published model on the same rows.
"""

from __future__ import annotations

import html
import math
import posixpath
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from streamrec.core import layout
from streamrec.pipeline.contract import DATADOCS, PARTITION_REPORTS, QUARANTINE, REFUSED_WHY, refused_incoming
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import PUBLISHED, REJECTED, ModelStore

__all__ = [
    "GATES",
    "INDEX",
    "REPORTS",
    "gate_report",
    "history_points",
    "rmse_svg",
    "version_history",
    "write_index",
]

REPORTS = layout.REPORTS
GATES = f"{REPORTS}/gates"
INDEX = f"{REPORTS}/index.html"

_MARKERS = {"bootstrap": "square", "retrain": "diamond", "update": "circle"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1d2433;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d8dee9}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}
th,td{border:1px solid #d8dee9;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17683a;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#6b7280}
.banner{padding:.6rem 1rem;border-radius:.4rem;margin:1rem 0;font-size:1.1rem}
.banner.ok{background:#e7f6ec;border:1px solid #17683a}.banner.bad{background:#fdecea;border:1px solid #b42318}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;word-break:break-all}
ul{margin:.2rem 0;padding-left:1.2rem}svg{max-width:100%;height:auto}
""".strip()


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    """``value`` as escaped HTML text (``None`` as an em dash)."""
    return "\u2014" if value is None else html.escape(str(value), quote=True)


def _href(path: str) -> str:
    """A relative link, URL-quoted then attribute-escaped."""
    return html.escape(quote(path, safe="/._-~#"), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return _e(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _rmse(manifest: dict) -> float | None:
    """The validation RMSE of a manifest (``metrics.validation.rmse``) or of a history row (``rmse``)."""
    value = manifest.get("rmse")
    if value is None:
        value = ((manifest.get("metrics") or {}).get("validation") or {}).get("rmse")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _gate_of(manifest: dict) -> tuple[bool | None, list[str]]:
    """(accepted?, reasons) from a manifest's ``gate`` dict or its rejection ``reason``."""
    gate = manifest.get("gate")
    if isinstance(gate, dict) and "accepted" in gate:
        reasons = gate.get("reasons") or []
        return bool(gate["accepted"]), [str(r) for r in (reasons if isinstance(reasons, list) else [reasons])]
    if manifest.get("status") == REJECTED:
        return False, [str(manifest.get("reason") or "rejected")]
    return None, []


def _decision_html(accepted: bool | None, reasons: Sequence[str]) -> str:
    if accepted is None:
        return '<span class="muted">no gate</span>'
    label = '<span class="ok">accepted</span>' if accepted else '<span class="bad">rejected</span>'
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    return f"{label}<ul>{items}</ul>" if items else label


# ------------------------------------------------------------------------------------------------------------
# the RMSE chart
# ------------------------------------------------------------------------------------------------------------
def history_points(history: Iterable[dict]) -> list[dict]:
    """Normalise manifests or rows (``version``, ``kind``, ``status``, ``created_at``, RMSE as ``rmse`` or
    ``metrics.validation.rmse``) to chart points, sorted by creation time then version id."""
    points = []
    for h in history:
        points.append(
            {
                "version": str(h.get("version", "?")),
                "kind": str(h.get("kind") or "?"),
                "status": str(h.get("status") or ("published" if h.get("published") else "candidate")),
                "created_at": h.get("created_at"),
                "rmse": _rmse(h),
            }
        )
    points.sort(key=lambda p: (str(p["created_at"] or ""), p["version"]))
    return points


def _marker(kind: str, x: float, y: float, r: float, fill: str, stroke: str) -> str:
    shape = _MARKERS.get(kind, "triangle")
    style = f'fill="{fill}" stroke="{stroke}" stroke-width="1.8"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {style}/>'
    if shape == "square":
        s = r * 1.7
        return f'<rect x="{x - s / 2:.1f}" y="{y - s / 2:.1f}" width="{s:.1f}" height="{s:.1f}" {style}/>'
    if shape == "diamond":
        d = r * 1.4
        pts = f"{x:.1f},{y - d:.1f} {x + d:.1f},{y:.1f} {x:.1f},{y + d:.1f} {x - d:.1f},{y:.1f}"
        return f'<polygon points="{pts}" {style}/>'
    d = r * 1.3
    pts = f"{x:.1f},{y - d:.1f} {x + d:.1f},{y + d * 0.8:.1f} {x - d:.1f},{y + d * 0.8:.1f}"
    return f'<polygon points="{pts}" {style}/>'


def _colours(status: str) -> tuple[str, str]:
    if status == PUBLISHED:
        return "#2563eb", "#1e40af"
    if status == REJECTED:
        return "#ffffff", "#b42318"
    return "#d1d5db", "#4b5563"


def svg_frame(
    width: int, height: int, box: tuple, span: tuple[float, float], sy, label: str, aria: str
) -> list[str]:
    """The opening of an inline SVG chart: the plot box ``(left, top, pw, ph)``, five horizontal grid lines
    with their values over ``span = (lo, hi)`` (``sy`` maps a value to y), and the rotated y-axis ``label``.
    Returns the list of SVG fragments to append the series to (and ``</svg>``)."""
    left, top, pw, ph = box
    lo, hi = span
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_e(label)} {_e(aria)}" font-family="sans-serif">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfcfe" stroke="#d8dee9"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = sy(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#4b5563">{v:.4f}</text>'
        )
    out.append(
        f'<text x="14" y="{top + ph / 2:.1f}" font-size="11" fill="#4b5563" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2:.1f})">{_e(label)}</text>'
    )
    return out


def rmse_svg(
    history: Iterable[dict],
    highlight: str | None = None,
    width: int = 760,
    height: int = 340,
    highlight_label: str = "this candidate",
) -> str:
    """An inline SVG line chart of validation RMSE per version (see the module docstring for the markers).

    ``highlight`` rings one version (the candidate of a gate report; ``highlight_label`` names it in the
    legend). Versions without an RMSE are left out."""
    points = [p for p in history_points(history) if p["rmse"] is not None]
    if not points:
        return '<p class="muted">No version has a validation RMSE yet.</p>'
    left, right, top, bottom = 72, 24, 16, 150
    pw, ph = width - left - right, height - top - bottom
    lo, hi = min(p["rmse"] for p in points), max(p["rmse"] for p in points)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad

    def sx(i: int) -> float:
        return left + (pw / 2 if len(points) == 1 else 14 + (pw - 28) * i / (len(points) - 1))

    def sy(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    out = svg_frame(width, height, (left, top, pw, ph), (lo, hi), sy, "validation RMSE", "per version")
    line = " ".join(f"{sx(i):.1f},{sy(p['rmse']):.1f}" for i, p in enumerate(points))
    out.append(f'<polyline points="{line}" fill="none" stroke="#93a3b8" stroke-width="1.5"/>')
    step = max(1, math.ceil(len(points) / 14))
    for i, p in enumerate(points):
        x, y = sx(i), sy(p["rmse"])
        fill, stroke = _colours(p["status"])
        if highlight is not None and p["version"] == highlight:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="none" stroke="#f59e0b" stroke-width="2.5"/>'
            )
        tip = f"{p['version']} ({p['kind']}, {p['status']}): RMSE {p['rmse']:.4f}"
        out.append(f"<g><title>{_e(tip)}</title>{_marker(p['kind'], x, y, 5.0, fill, stroke)}</g>")
        if i % step == 0 or i == len(points) - 1:
            ly = top + ph + 14
            out.append(
                f'<text x="{x:.1f}" y="{ly}" font-size="10" fill="#374151" text-anchor="end" '
                f'transform="rotate(-60 {x:.1f} {ly})">{_e(p["version"])}</text>'
            )
    # legend
    lx, ly = left, height - 10
    items = [
        ("bootstrap", PUBLISHED, "bootstrap"),
        ("retrain", PUBLISHED, "retrain"),
        ("update", PUBLISHED, "update"),
    ]
    items += [("update", REJECTED, "rejected"), ("update", "candidate", "candidate")]
    for kind, status, label in items:
        fill, stroke = _colours(status)
        out.append(_marker(kind, lx + 6, ly - 4, 5.0, fill, stroke))
        out.append(f'<text x="{lx + 16}" y="{ly}" font-size="11" fill="#374151">{_e(label)}</text>')
        lx += 24 + 7 * len(label)
    if highlight is not None:
        out.append(
            f'<circle cx="{lx + 6}" cy="{ly - 4}" r="7" fill="none" stroke="#f59e0b" stroke-width="2.5"/>'
        )
        out.append(f'<text x="{lx + 18}" y="{ly}" font-size="11" fill="#374151">{_e(highlight_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def version_history(store: ModelStore) -> list[dict]:
    """Chart points of every complete version in ``store`` (for :func:`gate_report`'s ``history``)."""
    return history_points(store.list_versions())


# ------------------------------------------------------------------------------------------------------------
# gate report
# ------------------------------------------------------------------------------------------------------------
def _summary(manifest: dict | None) -> dict | None:
    """The facts of a manifest a reviewer compares (JSON-able)."""
    if manifest is None:
        return None
    metrics = manifest.get("metrics") or {}
    validation = metrics.get("validation") or {}
    partitions = manifest.get("partitions") or []
    return {
        "version": manifest.get("version"),
        "kind": manifest.get("kind"),
        "parent": manifest.get("parent"),
        "status": manifest.get("status"),
        "created_at": manifest.get("created_at"),
        "published_at": manifest.get("published_at"),
        "rank": manifest.get("rank"),
        "mu": manifest.get("mu"),
        "n_ratings": manifest.get("n_ratings"),
        "n_users": manifest.get("n_users"),
        "n_items": manifest.get("n_items"),
        "partitions": list(partitions),
        "validation_rmse": _rmse(manifest),
        "validation_mae": validation.get("mae"),
        "validation_n": validation.get("n"),
        "prequential": metrics.get("prequential") or {},
    }


_ROWS = [
    ("version", "version"),
    ("kind", "kind"),
    ("parent", "parent"),
    ("status", "status"),
    ("created_at", "created"),
    ("published_at", "published"),
    ("rank", "rank"),
    ("mu", "global mean \u03bc"),
    ("n_ratings", "ratings absorbed"),
    ("n_users", "users"),
    ("n_items", "items"),
    ("validation_n", "validation rows"),
    ("validation_rmse", "validation RMSE"),
    ("validation_mae", "validation MAE"),
]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{_num(value)}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{_e(value)}</td>"


def gate_report(
    bucket: Bucket,
    candidate_manifest: dict,
    published_manifest: dict | None,
    decision: dict,
    history: list[dict],
) -> str:
    """Write ``reports/gates/<version>.json`` and ``.html`` for a gated candidate; return the HTML key.

    ``decision`` is ``streamrec.core.gate.GateDecision.as_dict()`` (``accepted``, ``reasons``, the RMSEs, ``ceiling``,
    ``tolerance``); ``history`` the versions to chart (manifests or :func:`version_history` points; the candidate
    is added when missing)."""
    version = ModelStore.check_version(str(candidate_manifest.get("version")))
    cand, pub = _summary(candidate_manifest), _summary(published_manifest)
    assert cand is not None
    points = history_points(history)
    if version not in {p["version"] for p in points}:
        points = history_points([*history, candidate_manifest])
    new_parts = [p for p in cand["partitions"] if p not in set((pub or {}).get("partitions") or [])]
    known_reports = {o.key for o in bucket.list(PARTITION_REPORTS)}
    doc = {
        "version": version,
        "decision": decision,
        "candidate": cand,
        "published": pub,
        "new_partitions": new_parts,
        "history": points,
    }
    json_key, html_key = f"{GATES}/{version}.json", f"{GATES}/{version}.html"
    bucket.write_json(json_key, doc)

    accepted = bool(decision.get("accepted"))
    reasons = decision.get("reasons") or []
    banner = "ok" if accepted else "bad"
    verdict = "ACCEPTED: may be published" if accepted else "REJECTED: will not be published"
    body = [
        '<p><a href="../index.html">\u2190 all versions</a></p>',
        f"<h1>Gate report: <code>{_e(version)}</code></h1>",
        f'<div class="banner {banner}">{_e(verdict)}</div>',
        "<h2>Reasons</h2><ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>",
        "<h2>The numbers that decided</h2><table><tr><th>candidate RMSE</th><th>published RMSE (same rows)</th>"
        "<th>biases-only baseline</th><th>ceiling</th><th>tolerance</th></tr><tr>"
        + "".join(
            _cell(decision.get(k)) for k in ("candidate_rmse", "published_rmse", "baseline_rmse", "ceiling")
        )
        + f'<td class="num">{_e(_pct(decision.get("tolerance")))}</td></tr></table>',
        "<h2>Candidate vs published</h2><table><tr><th></th><th>candidate</th><th>published</th></tr>",
    ]
    for field, label in _ROWS:
        body.append(f"<tr><th>{_e(label)}</th>{_cell(cand.get(field))}{_cell((pub or {}).get(field))}</tr>")
    body.append(
        f"<tr><th>partitions absorbed</th>{_cell(len(cand['partitions']))}"
        f"{_cell(len(pub['partitions']) if pub else None)}</tr></table>"
    )
    if new_parts:
        body.append(
            "<h2>Partitions new in this candidate</h2><table><tr><th>partition</th>"
            "<th>prequential RMSE (model before absorbing it)</th><th>contract report</th></tr>"
        )
        for pid in new_parts:
            preq = (cand["prequential"] or {}).get(pid)
            preq_rmse = preq.get("rmse") if isinstance(preq, dict) else preq
            rkey = f"{PARTITION_REPORTS}/{pid}/report.json"
            link = (
                f'<a href="{_href(posixpath.relpath(rkey, GATES))}">report.json</a>'
                if rkey in known_reports
                else '<span class="muted">none</span>'
            )
            body.append(f"<tr><td><code>{_e(pid)}</code></td>{_cell(preq_rmse)}<td>{link}</td></tr>")
        body.append("</table>")
    if pub is None:
        body.append('<p class="muted">No published version to compare with (a first bootstrap).</p>')
    body.append("<h2>Validation RMSE per version</h2>")
    body.append(rmse_svg(points, highlight=version))
    bucket.write_text(html_key, _page(f"Gate report {version}", "\n".join(body)))
    return html_key


def _pct(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.1%}"
    return value


# ------------------------------------------------------------------------------------------------------------
# index
# ------------------------------------------------------------------------------------------------------------
def _quarantined(bucket: Bucket) -> list[dict]:
    """``quarantine/<id>/reason.txt`` entries, newest first."""
    rows = []
    for obj in bucket.list(QUARANTINE):
        parts = obj.key.split("/")
        if len(parts) == 3 and parts[2] == "reason.txt":
            try:
                reason = bucket.read_text(obj.key).strip()
            except (FileNotFoundError, UnicodeDecodeError):
                reason = "(reason unreadable)"
            rows.append({"id": parts[1], "reason": reason, "mtime": obj.mtime or 0.0})
    rows.sort(key=lambda r: (-r["mtime"], r["id"]))
    return rows


def write_index(bucket: Bucket, store: ModelStore) -> str:
    """Write ``reports/index.html`` (versions, quarantined partitions, the RMSE chart) and return its key.

    Versions are read from ``store`` (newest first); quarantined partitions from ``quarantine/*/reason.txt``;
    links go to the gate reports, Data Docs and partition reports that exist. ``store.clock`` stamps the page."""
    versions = store.list_versions()
    current = store.current()
    report_keys = {o.key for o in bucket.list(REPORTS)}
    body = [
        "<h1>streamrec</h1>",
        f'<p class="muted">Generated {_e(_stamp(store.clock()))} from <code>{_e(bucket.uri())}</code>. '
        f"Current version: <code>{_e(current)}</code>.</p>",
        "<h2>Validation RMSE per version</h2>",
        rmse_svg(versions),
        f"<h2>Versions ({len(versions)})</h2>",
    ]
    if versions:
        body.append(
            "<table><tr><th>version</th><th>kind</th><th>parent</th><th>status</th><th>partitions absorbed</th>"
            "<th>validation RMSE</th><th>gate decision</th><th>gate report</th></tr>"
        )
        for m in reversed(versions):
            v = str(m.get("version"))
            status = str(m.get("status") or "?")
            if v == current:
                status += " (current)"
            gate_key = f"{GATES}/{v}.html"
            link = (
                f'<a href="{_href(posixpath.relpath(gate_key, REPORTS))}">gate report</a>'
                if gate_key in report_keys
                else '<span class="muted">none</span>'
            )
            accepted, reasons = _gate_of(m)
            body.append(
                f"<tr><td><code>{_e(v)}</code></td><td>{_e(m.get('kind'))}</td>"
                f"<td><code>{_e(m.get('parent'))}</code></td><td>{_e(status)}</td>"
                f"{_cell(len(m.get('partitions') or []))}{_cell(_rmse(m))}"
                f"<td>{_decision_html(accepted, reasons)}</td><td>{link}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append('<p class="muted">No model version yet.</p>')
    refused = refused_incoming(bucket)
    if refused:
        body.append(f"<h2>Refused object keys ({len(refused)})</h2>")
        body.append(f'<p class="muted">{_e(REFUSED_WHY)}.</p>')
        body.append("<table><tr><th>object key</th></tr>")
        body += [f"<tr><td><code>{_e(k)}</code></td></tr>" for k in refused]
        body.append("</table>")
    quarantined = _quarantined(bucket)
    body.append(f"<h2>Quarantined partitions ({len(quarantined)})</h2>")
    if quarantined:
        body.append("<table><tr><th>partition</th><th>reason</th><th>Data Docs</th><th>report</th></tr>")
        for q in quarantined:
            pid = q["id"]
            docs = f"{DATADOCS}/{pid}/index.html"
            rep = f"{PARTITION_REPORTS}/{pid}/report.json"
            docs_link = (
                f'<a href="{_href(posixpath.relpath(docs, REPORTS))}">Data Docs</a>'
                if docs in report_keys
                else '<span class="muted">none</span>'
            )
            rep_link = (
                f'<a href="{_href(posixpath.relpath(rep, REPORTS))}">report.json</a>'
                if rep in report_keys
                else '<span class="muted">none</span>'
            )
            body.append(
                f"<tr><td><code>{_e(pid)}</code></td><td>{_e(q['reason'])}</td><td>{docs_link}</td>"
                f"<td>{rep_link}</td></tr>"
            )
        body.append("</table>")
        body.append(
            '<p class="muted">The raw files are kept under <code>quarantine/&lt;partition&gt;/files/</code>; '
            "fix them and drop them into <code>ratings/incoming/</code> again.</p>"
        )
    else:
        body.append('<p class="muted">No partition has failed the data contract.</p>')
    bucket.write_text(INDEX, _page("streamrec: versions and data quality", "\n".join(body)))
    return INDEX


def _stamp(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")

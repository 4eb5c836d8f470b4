"""Pages users review: one gate report per candidate version, and the index of everything.

Written through a :class:`~streamrec.storage.bucket.Bucket` (local folder or ``s3://``)::

    reports/index.html                 versions, quarantined partitions, the RMSE chart (write_index)
    reports/gates/<version>.html       candidate vs published, the decision and its reasons, the chart
    reports/gates/<version>.json       the same facts as data
    reports/partitions/<id>/report.json, reports/datadocs/<id>/...   written by streamrec.pipeline.contract (linked here)

The pages are rendered from the Jinja2 templates in ``streamrec/pipeline/templates/`` (``index.html``,
``gate.html``, the chart in ``charts.svg``; see :mod:`streamrec.pipeline.templates` for the escaping and the
number filters); this module gathers what they show. Every page is self-contained (inline CSS and SVG; no
script, no CDN) and links only relatively inside ``reports/``, so the folder can be served, copied or opened
from S3 as it is. Every value put into HTML is escaped (partition names and manifest fields come from users),
and every link is URL-quoted.

The RMSE chart plots the validation RMSE (``manifest["metrics"]["validation"]["rmse"]``) of each version in
creation order; the marker shape tells the kind (square bootstrap, diamond retrain, circle update) and the fill
the status (filled published, hollow red rejected, grey candidate). Versions validated on different validation
sets (the set grows with every partition) are not strictly comparable: the chart shows the trend, the gate
compares candidate and published model on the same rows.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from streamrec.core import layout
from streamrec.pipeline.contract import (
    DATADOCS,
    INCOMING,
    PARTITION_REPORTS,
    QUARANTINE,
    REFUSED_WHY,
    WAITING_WHY,
    list_incoming,
)
from streamrec.pipeline.templates import chart_frame, macro, render
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import PUBLISHED, REJECTED, ModelStore

__all__ = [
    "GATES",
    "INDEX",
    "REPORTS",
    "gate_report",
    "history_points",
    "quarantined",
    "rmse_chart",
    "rmse_svg",
    "version_history",
    "write_index",
]

REPORTS = layout.REPORTS
GATES = f"{REPORTS}/gates"
INDEX = f"{REPORTS}/index.html"

_MARKERS = {"bootstrap": "square", "retrain": "diamond", "update": "circle"}


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


def _gate_of(manifest: dict) -> tuple[bool | None, list[str]]:
    """(accepted?, reasons) from a manifest's ``gate`` dict or its rejection ``reason``; ``(None, [])``: no
    gate yet."""
    gate = manifest.get("gate")
    if isinstance(gate, dict) and "accepted" in gate:
        reasons = gate.get("reasons") or []
        return bool(gate["accepted"]), [str(r) for r in (reasons if isinstance(reasons, list) else [reasons])]
    if manifest.get("status") == REJECTED:
        return False, [str(manifest.get("reason") or "rejected")]
    return None, []


def _link(key: str, existing: set[str], start: str) -> str | None:
    """``key`` relative to the folder ``start`` when it exists, else ``None`` (the page says "none")."""
    return posixpath.relpath(key, start) if key in existing else None


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


def _colours(status: str) -> tuple[str, str]:
    if status == PUBLISHED:
        return "#2563eb", "#1e40af"
    if status == REJECTED:
        return "#ffffff", "#b42318"
    return "#d1d5db", "#4b5563"


def rmse_chart(
    history: Iterable[dict],
    highlight: str | None = None,
    width: int = 760,
    height: int = 340,
    highlight_label: str = "this candidate",
) -> dict | None:
    """The coordinates of the RMSE chart (``charts.svg``'s ``rmse``): versions in creation order on x, the
    validation RMSE on y (padded 10 % above and below); ``None`` when no version has an RMSE.

    ``highlight`` rings one version (``highlight_label`` names the ring in the legend). At most ~14 version
    ids are written under the axis (every ``step``-th and the last)."""
    points = [p for p in history_points(history) if p["rmse"] is not None]
    if not points:
        return None
    left, right, top, bottom = 72, 24, 16, 150
    pw, ph = width - left - right, height - top - bottom
    lo, hi = min(p["rmse"] for p in points), max(p["rmse"] for p in points)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad

    def sx(i: int) -> float:
        return left + (pw / 2 if len(points) == 1 else 14 + (pw - 28) * i / (len(points) - 1))

    def sy(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    step = max(1, math.ceil(len(points) / 14))
    plotted = []
    for i, p in enumerate(points):
        fill, stroke = _colours(p["status"])
        plotted.append(
            {
                **p,
                "x": sx(i),
                "y": sy(p["rmse"]),
                "shape": _MARKERS.get(p["kind"], "triangle"),
                "fill": fill,
                "stroke": stroke,
                "ringed": highlight is not None and p["version"] == highlight,
                "labelled": i % step == 0 or i == len(points) - 1,
            }
        )
    legend, lx = [], left
    for kind, status, label in [
        ("bootstrap", PUBLISHED, "bootstrap"),
        ("retrain", PUBLISHED, "retrain"),
        ("update", PUBLISHED, "update"),
        ("update", REJECTED, "rejected"),
        ("update", "candidate", "candidate"),
    ]:
        fill, stroke = _colours(status)
        legend.append({"x": lx, "shape": _MARKERS[kind], "fill": fill, "stroke": stroke, "label": label})
        lx += 24 + 7 * len(label)
    return {
        "frame": chart_frame(
            width, height, (left, top, pw, ph), (lo, hi), sy, "validation RMSE", "per version"
        ),
        "line": [(p["x"], p["y"]) for p in plotted],
        "points": plotted,
        "label_y": top + ph + 14,
        "legend": legend,
        "legend_y": height - 10,
        "highlight": None if highlight is None else {"x": lx, "label": highlight_label},
    }


def rmse_svg(
    history: Iterable[dict],
    highlight: str | None = None,
    width: int = 760,
    height: int = 340,
    highlight_label: str = "this candidate",
) -> str:
    """An inline SVG line chart of validation RMSE per version (see the module docstring for the markers;
    :func:`rmse_chart` for the arguments). Versions without an RMSE are left out."""
    return str(macro("charts.svg", "rmse")(rmse_chart(history, highlight, width, height, highlight_label)))


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


_DECISION_NUMBERS = ("candidate_rmse", "published_rmse", "baseline_rmse", "ceiling", "tolerance")


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

    new_rows = []
    for pid in new_parts:
        preq = cand["prequential"].get(pid)
        new_rows.append(
            {
                "id": pid,
                "prequential_rmse": preq.get("rmse") if isinstance(preq, dict) else preq,
                "report": _link(f"{PARTITION_REPORTS}/{pid}/report.json", known_reports, GATES),
            }
        )
    page = render(
        "gate.html",
        version=version,
        decision={
            "accepted": bool(decision.get("accepted")),
            "reasons": decision.get("reasons") or [],
            **{k: decision.get(k) for k in _DECISION_NUMBERS},
        },
        candidate=cand,
        published=pub,
        new_partitions=new_rows,
        chart=rmse_chart(points, highlight=version),
    )
    bucket.write_text(html_key, page)
    return html_key


# ------------------------------------------------------------------------------------------------------------
# index
# ------------------------------------------------------------------------------------------------------------
def quarantined(bucket: Bucket) -> list[dict]:
    """``quarantine/<id>/reason.txt`` entries (``id``, ``reason``, ``mtime``), newest first."""
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


def _version_row(m: dict, current: str | None, report_keys: set[str]) -> dict[str, Any]:
    v = str(m.get("version"))
    status = str(m.get("status") or "?")
    accepted, reasons = _gate_of(m)
    return {
        "version": v,
        "kind": m.get("kind"),
        "parent": m.get("parent"),
        "status": f"{status} (current)" if v == current else status,
        "n_partitions": len(m.get("partitions") or []),
        "rmse": _rmse(m),
        "accepted": accepted,
        "reasons": reasons,
        "gate_report": _link(f"{GATES}/{v}.html", report_keys, REPORTS),
    }


def write_index(bucket: Bucket, store: ModelStore) -> str:
    """Write ``reports/index.html`` (versions, quarantined partitions, the RMSE chart) and return its key.

    Versions are read from ``store`` (newest first); quarantined partitions from ``quarantine/*/reason.txt``;
    links go to the gate reports, Data Docs and partition reports that exist. ``store.clock`` stamps the page."""
    versions = store.list_versions()
    current = store.current()
    report_keys = {o.key for o in bucket.list(REPORTS)}
    refused: list[str] = []
    waiting: list[str] = []
    list_incoming(bucket, INCOMING, refused, waiting=waiting)
    page = render(
        "index.html",
        generated=_stamp(store.clock()),
        bucket=bucket.uri(),
        current=current,
        chart=rmse_chart(versions),
        versions=[_version_row(m, current, report_keys) for m in reversed(versions)],
        refused=refused,
        refused_why=REFUSED_WHY,
        waiting=waiting,
        waiting_why=WAITING_WHY,
        quarantined=[
            {
                "id": q["id"],
                "reason": q["reason"],
                "datadocs": _link(f"{DATADOCS}/{q['id']}/index.html", report_keys, REPORTS),
                "report": _link(f"{PARTITION_REPORTS}/{q['id']}/report.json", report_keys, REPORTS),
            }
            for q in quarantined(bucket)
        ],
    )
    bucket.write_text(INDEX, page)
    return INDEX


def _stamp(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")

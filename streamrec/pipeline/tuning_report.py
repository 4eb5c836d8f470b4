"""The tuning report: ``reports/tuning/<run>/index.html`` next to its ``result.json`` (``streamrec.pipeline.tuning``).

Rendered from ``templates/tuning.html`` (the chart: ``score`` in ``templates/charts.svg``), in the style of the
gate reports: self-contained, inline SVG, no script or CDN, every value escaped. The page states the rule by
which a trial is adopted (``streamrec.core.search.rule_text``: the guard). Per part: the decision (a trial
adopted, or the current parameters kept, and why), the chosen parameters against the baseline, a chart of every
trial's score in launch order (the chosen trial ringed, the baseline a square, the best-so-far as a step line),
the table of trials, and the guard's table (each trial's paired difference to the baseline, the upper bound of
its interval, pass or not). Trials that did not run (the time budget ran out, or they failed) are listed as
such.

This module takes the result document as its argument and imports nothing of ``streamrec.pipeline.tuning``
(which calls :func:`write`).
"""

from __future__ import annotations

import math
from typing import Any

from streamrec.core import layout, search
from streamrec.pipeline.templates import chart_frame, macro, render
from streamrec.storage.bucket import Bucket

__all__ = ["score_chart", "score_svg", "write"]


def score_chart(
    trials: list[dict], chosen: int | None, label: str, width: int = 760, height: int = 300
) -> dict | None:
    """The coordinates of the score chart (``charts.svg``'s ``score``): trial index on x, score (RMSE, lower
    is better) on y; ``None`` when no finished trial has a finite score."""
    pts = [(t["index"], t["rmse"]) for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    if not pts:
        return None
    left, right, top, bottom = 72, 24, 16, 48
    pw, ph = width - left - right, height - top - bottom
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.01, 0.001)
    lo, hi = lo - pad, hi + pad
    n = max(i for i, _ in pts) + 1

    def sx(i: float) -> float:
        return left + (pw / 2 if n == 1 else 14 + (pw - 28) * i / (n - 1))

    def sy(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    # best so far: a step line (horizontal to the next trial, then down to its score when it is better)
    best, steps = math.inf, []
    for i, v in sorted(pts):
        best = min(best, v)
        steps.append((i, best))
    path = []
    for j, (i, v) in enumerate(steps):
        if j:
            path.append((sx(i), sy(steps[j - 1][1])))
        path.append((sx(i), sy(v)))
    return {
        "frame": chart_frame(width, height, (left, top, pw, ph), (lo, hi), sy, label, "per trial"),
        "best": path,
        "points": [{"index": i, "score": v, "x": sx(i), "y": sy(v), "chosen": i == chosen} for i, v in pts],
        "label_y": top + ph + 14,
        "legend_y": height - 8,
    }


def score_svg(trials: list[dict], chosen: int | None, label: str, width: int = 760, height: int = 300) -> str:
    """Inline SVG: score (RMSE) per trial index; lower is better (:func:`score_chart`)."""
    return str(macro("charts.svg", "score")(score_chart(trials, chosen, label, width, height)))


def _trial(t: dict | None) -> dict[str, Any]:
    t = t or {}
    return {"index": t.get("index"), "tuned": t.get("tuned"), "rmse": t.get("rmse")}


def _guard(t: dict) -> dict[str, Any] | None:
    """One row of the guard's table, or None for the baseline (nothing to compare)."""
    g = t.get("guard")
    if t.get("index") == 0 or g is None:
        return None
    return {
        "index": t["index"],
        "mean_diff": g.get("mean_diff"),
        "upper": g.get("upper"),
        "se": g.get("se"),
        "n_users": g.get("users"),
        "n_items": g.get("items"),
        "n": g.get("n"),
        "passes": bool(g.get("better")),
        "reason": g.get("reason"),
    }


def _part(name: str, p: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one part of ``result["parts"]``."""
    chosen = p.get("chosen")
    metric = "RMSE on the tuning split" if name == "bootstrap" else "pooled prequential RMSE (replay)"
    trials = p.get("trials") or []
    guard = [g for g in (_guard(t) for t in trials) if g is not None]
    return {
        "adopted": p.get("adopted"),
        "reason": p.get("reason"),
        "compared": p.get("compared"),
        "level": p.get("level"),
        "guard": guard,
        "name": name,
        "metric": metric,
        "finished": p.get("finished"),
        "planned": p.get("planned"),
        "not_run": p.get("not_run"),
        "chosen": _trial(chosen),
        "baseline": _trial(p.get("baseline")),
        "improvement": p.get("improvement"),
        "chart": score_chart(trials, (chosen or {}).get("index"), metric),
        "trials": [
            {
                "index": t["index"],
                "chosen": bool(chosen) and t["index"] == chosen["index"],
                "tuned": t.get("tuned"),
                "rmse": t.get("rmse"),
                "mae": t.get("mae"),
                "n": t.get("n"),
                "seconds": t.get("seconds"),
            }
            for t in trials
        ],
    }


def write(bucket: Bucket, run: str, result: dict) -> str:
    """Write ``reports/tuning/<run>/index.html`` from :func:`streamrec.pipeline.tuning.finish`'s result; return its key."""
    plan = result.get("plan") or {}
    stored = result.get("param_set")
    page = render(
        "tuning.html",
        run=run,
        rule=search.rule_text(),
        finished_at=result.get("finished_at"),
        plan={
            "current": plan.get("current"),
            "budget_minutes": plan.get("budget_minutes"),
            "seed": plan.get("seed"),
            "fraction": plan.get("fraction"),
            "notes": plan.get("notes") or [],
        },
        param_set=(
            {"name": stored.get("name"), "key": result.get("param_set_key"), "digest": stored.get("digest")}
            if stored
            else None
        ),
        parts=[_part(name, p) for name, p in (result.get("parts") or {}).items()],
    )
    key = f"{layout.tuning_run(run)}/index.html"
    bucket.write_text(key, page)
    return key

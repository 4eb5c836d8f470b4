"""The tuning report: ``reports/tuning/<run>/index.html`` next to its ``result.json`` (``streamrec.pipeline.tuning``).

Same style as the gate reports (``streamrec.pipeline.reports``: its CSS, escaping and number helpers; self-contained, inline
SVG, no script or CDN). Per part: the chosen parameters against the baseline, a chart of every trial's score in
launch order (the chosen trial ringed, the baseline a square, the best-so-far as a step line), and the table of
trials. Trials that did not run (the time budget ran out, or they failed) are listed as such.
"""

from __future__ import annotations

import math
from typing import Any

from streamrec.pipeline.reports import _cell, _e, _num, _page, svg_frame
from streamrec.storage.bucket import Bucket


def score_svg(trials: list[dict], chosen: int | None, label: str, width: int = 760, height: int = 300) -> str:
    """Inline SVG: score (RMSE) per trial index; lower is better."""
    pts = [(t["index"], t["rmse"]) for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    if not pts:
        return '<p class="muted">No finished trial has a score.</p>'
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

    out = svg_frame(width, height, (left, top, pw, ph), (lo, hi), sy, label, "per trial")
    # best so far (step line)
    best, steps = math.inf, []
    for i, v in sorted(pts):
        best = min(best, v)
        steps.append((i, best))
    path = []
    for j, (i, v) in enumerate(steps):
        if j:
            path.append(f"{sx(i):.1f},{sy(steps[j - 1][1]):.1f}")
        path.append(f"{sx(i):.1f},{sy(v):.1f}")
    out.append(
        f'<polyline points="{" ".join(path)}" fill="none" stroke="#93a3b8" stroke-width="1.5" '
        'stroke-dasharray="4 3"/>'
    )
    for i, v in pts:
        x, y = sx(i), sy(v)
        if i == chosen:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="#f59e0b" stroke-width="2.5"/>'
            )
        shape = (
            f'<rect x="{x - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" fill="#6b7280" stroke="#374151"/>'
            if i == 0
            else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#2563eb" stroke="#1e40af"/>'
        )
        out.append(f"<g><title>{_e(f'trial {i}: {v:.4f}')}</title>{shape}</g>")
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 14}" font-size="10" fill="#374151" text-anchor="middle">{i}</text>'
        )
    ly = height - 8
    out.append(f'<text x="{left}" y="{ly}" font-size="11" fill="#374151">trial (launch order)</text>')
    lx = left + 140
    out.append(f'<rect x="{lx}" y="{ly - 9}" width="9" height="9" fill="#6b7280" stroke="#374151"/>')
    out.append(f'<text x="{lx + 14}" y="{ly}" font-size="11" fill="#374151">baseline (trial 0)</text>')
    lx += 130
    out.append(f'<circle cx="{lx + 5}" cy="{ly - 4}" r="7" fill="none" stroke="#f59e0b" stroke-width="2.5"/>')
    out.append(f'<text x="{lx + 16}" y="{ly}" font-size="11" fill="#374151">chosen</text>')
    lx += 70
    out.append(
        f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 20}" y2="{ly - 4}" stroke="#93a3b8" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{lx + 26}" y="{ly}" font-size="11" fill="#374151">best so far</text>')
    out.append("</svg>")
    return "\n".join(out)


def _budget(minutes: Any) -> str:
    return f"{minutes:g} min" if isinstance(minutes, int | float) and minutes > 0 else "no limit"


def _params_cell(d: dict | None) -> str:
    if not d:
        return "<td>\u2014</td>"
    return "<td><code>" + _e(", ".join(f"{k}={_num(v)}" for k, v in d.items())) + "</code></td>"


def _part_html(part: str, p: dict[str, Any]) -> list[str]:
    chosen, base = p.get("chosen"), p.get("baseline")
    metric = "RMSE on the tuning split" if part == "bootstrap" else "pooled prequential RMSE (replay)"
    body = [f"<h2>{_e(part)}: {_e(metric)}</h2>"]
    body.append(
        f"<p>{p['finished']} of {p['planned']} trials finished"
        + (f"; not run (budget or failure): {_e(p['not_run'])}" if p.get("not_run") else "")
        + ".</p>"
    )
    body.append("<table><tr><th></th><th>parameters</th><th>score</th></tr>")
    body.append(f"<tr><th>chosen (trial {_e((chosen or {}).get('index'))})</th>")
    body.append(_params_cell((chosen or {}).get("tuned")) + _cell((chosen or {}).get("rmse")) + "</tr>")
    body.append("<tr><th>baseline (trial 0: the current parameters)</th>")
    body.append(_params_cell((base or {}).get("tuned")) + _cell((base or {}).get("rmse")) + "</tr>")
    body.append(f"<tr><th>improvement</th><td></td>{_cell(p.get('improvement'))}</tr></table>")
    body.append(score_svg(p.get("trials") or [], (chosen or {}).get("index"), metric))
    body.append(
        "<table><tr><th>trial</th><th>parameters</th><th>score</th><th>MAE</th><th>rows</th><th>seconds</th></tr>"
    )
    for t in p.get("trials") or []:
        mark = " \u2190 chosen" if chosen and t["index"] == chosen["index"] else ""
        body.append(
            f"<tr><td>{t['index']}{_e(mark)}</td>{_params_cell(t.get('tuned'))}{_cell(t.get('rmse'))}"
            f'{_cell(t.get("mae"))}{_cell(t.get("n"))}<td class="num">{_num(t.get("seconds"), 1)}</td></tr>'
        )
    body.append("</table>")
    return body


def write(bucket: Bucket, run: str, result: dict) -> str:
    """Write ``reports/tuning/<run>/index.html`` from :func:`streamrec.pipeline.tuning.finish`'s result; return its key."""
    from streamrec.pipeline.tuning import run_prefix

    plan = result.get("plan") or {}
    body = [
        '<p><a href="../../index.html">\u2190 all versions</a></p>',
        f"<h1>Tuning run <code>{_e(run)}</code></h1>",
        f'<p class="muted">Finished {_e(result.get("finished_at"))}. Current model <code>{_e(plan.get("current"))}'
        f"</code>; budget {_e(_budget(plan.get('budget_minutes')))}; seed {_e(plan.get('seed'))}; "
        f"tuning split {_e(plan.get('fraction'))} of the accepted rows (the store's validation rows excluded).</p>",
    ]
    for note in plan.get("notes") or []:
        body.append(f'<p class="muted">{_e(note)}</p>')
    stored = result.get("param_set")
    if stored:
        body.append(
            f'<div class="banner ok">Stored as parameter set <code>{_e(stored.get("name"))}</code> '
            f"(<code>{_e(result.get('param_set_key'))}</code>, digest <code>{_e(stored.get('digest'))}</code>): "
            "the bootstrap and update DAGs use it for every parameter left empty in their forms.</div>"
        )
    else:
        body.append('<div class="banner bad">Nothing stored (no finished trial, or no set name given).</div>')
    for part, p in (result.get("parts") or {}).items():
        body += _part_html(part, p)
    key = f"{run_prefix(run)}/index.html"
    bucket.write_text(key, _page(f"Tuning run {run}", "\n".join(body)))
    return key

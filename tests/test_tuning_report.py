"""The tuning report page (``reports/tuning/<run>/index.html``) from a result document: the choice against
the baseline, trials that did not run, the score chart, and the page when nothing was stored."""

from __future__ import annotations

import re

import pytest

from streamrec.pipeline import tuning_report
from streamrec.storage.bucket import Bucket


def trial(index: int, rmse: float | None, **tuned) -> dict:
    return {"index": index, "rmse": rmse, "mae": 0.7, "n": 12345, "seconds": 1.25 * index, "tuned": tuned}


TRIALS = [
    trial(0, 0.91, rank=50, reg=0.1),
    trial(1, 0.88, rank=20, reg=0.3),
    trial(3, 0.95, rank=8, reg=0.01),
]
RESULT = {
    "finished_at": "2026-11-26T00:00:00+00:00",
    "plan": {"current": "v7", "budget_minutes": 30, "seed": 3, "fraction": 0.2, "notes": ["a note"]},
    "param_set": {"name": "tuned", "digest": "abc123"},
    "param_set_key": "params/tuned.json",
    "parts": {
        "bootstrap": {
            "planned": 4,
            "finished": 3,
            "not_run": [2],
            "trials": TRIALS,
            "chosen": TRIALS[1],
            "baseline": TRIALS[0],
            "improvement": 0.03,
        }
    },
}


@pytest.mark.unit
def test_the_page_shows_the_choice_the_trials_and_the_chart(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    key = tuning_report.write(bucket, "run4", RESULT)
    assert key == "reports/tuning/run4/index.html"
    page = bucket.read_text(key)
    assert "budget 30 min; seed 3; tuning split 0.2 of the accepted rows" in page
    assert '<p class="muted">a note</p>' in page
    assert (
        "Stored as parameter set <code>tuned</code> (<code>params/tuned.json</code>, digest <code>abc123</code>)"
        in page
    )
    assert "<p>3 of 4 trials finished; not run (budget or failure): [2].</p>" in page
    assert (
        '<tr><th>chosen (trial 1)</th>\n<td><code>rank=20, reg=0.3000</code></td><td class="num">0.8800</td></tr>'
        in page
    )
    assert '<tr><th>improvement</th><td></td><td class="num">0.0300</td></tr>' in page
    rows = re.findall(r"<tr><td>(\d+)( ← chosen)?</td><td><code>([^<]*)</code></td>(.*?)</tr>", page)
    assert [(i, mark, params) for i, mark, params, _ in rows] == [
        ("0", "", "rank=50, reg=0.1000"),
        ("1", " ← chosen", "rank=20, reg=0.3000"),
        ("3", "", "rank=8, reg=0.0100"),
    ]
    assert (
        rows[2][3]
        == '<td class="num">0.9500</td><td class="num">0.7000</td><td class="num">12,345</td><td class="num">3.8</td>'
    )
    # the chart: trial 0 a square, the others circles, the chosen one ringed, the best so far stepping down
    marks = re.findall(r"<g><title>trial (\d+): ([0-9.]+)</title><(\w+)", page)
    assert marks == [("0", "0.9100", "rect"), ("1", "0.8800", "circle"), ("3", "0.9500", "circle")]
    ring = re.search(r'<circle cx="([0-9.]+)" cy="[0-9.]+" r="10"', page).group(1)
    chosen_x = re.search(r'<title>trial 1: [^<]*</title><circle cx="([0-9.]+)"', page).group(1)
    assert ring == chosen_x
    steps = re.search(r'<polyline points="([^"]*)"[^>]*stroke-dasharray', page).group(1).split()
    ys = [float(p.split(",")[1]) for p in steps]
    # flat to trial 1, down to its 0.88 (lower is further down), flat to trial 3 (0.95 is no better)
    assert len(steps) == 5 and ys[0] == ys[1] < ys[2] == ys[3] == ys[4]
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


@pytest.mark.unit
def test_nothing_stored_and_no_finished_trial(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    result = {
        "finished_at": "2026-11-26T00:00:00+00:00",
        "plan": {"current": None, "budget_minutes": None, "seed": 1, "fraction": 0.2},
        "param_set": None,
        "param_set_key": None,
        "parts": {
            "update": {
                "planned": 2,
                "finished": 0,
                "not_run": [0, 1],
                "trials": [],
                "chosen": None,
                "baseline": None,
            }
        },
    }
    page = bucket.read_text(tuning_report.write(bucket, "run5", result))
    assert "Current model <code>\u2014</code>; budget no limit;" in page
    assert '<div class="banner bad">Nothing stored (no finished trial, or no set name given).</div>' in page
    assert "<h2>update: pooled prequential RMSE (replay)</h2>" in page
    assert "<tr><th>chosen (trial \u2014)</th>\n<td>\u2014</td><td>\u2014</td></tr>" in page
    assert '<p class="muted">No finished trial has a score.</p>' in page
    assert "<svg" not in page
    assert (
        tuning_report.score_svg([trial(0, None)], None, "x")
        == '<p class="muted">No finished trial has a score.</p>'
    )

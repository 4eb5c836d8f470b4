"""Gate reports, the index page and the tuning report: the expected rows, self-contained HTML, hostile names
escaped in every page, the templates strict about missing fields."""

from __future__ import annotations

import fnmatch
import html
import posixpath
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import jinja2
import numpy as np
import pytest

from streamrec.core.arrays import ModelArrays
from streamrec.core.schema import HALF_STAR
from streamrec.pipeline import templates, tuning_report
from streamrec.pipeline.contract import check_partition, quarantine
from streamrec.pipeline.reports import (
    gate_report,
    history_points,
    rmse_chart,
    rmse_svg,
    version_history,
    write_index,
)
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore

HOSTILE = "<script>alert(1)&"
NOW = 1790000000


def manifest(version: str, kind: str, rmse: float | None, status: str, created: str, **extra) -> dict:
    doc = {"version": version, "kind": kind, "status": status, "created_at": created, **extra}
    if rmse is not None:
        doc["metrics"] = {"validation": {"rmse": rmse, "mae": rmse * 0.8, "n": 500}}
    return doc


HISTORY = [
    manifest("v1", "bootstrap", 0.95, "published", "2026-11-26T10:00:00+00:00"),
    manifest("v2", "update", 0.93, "published", "2026-11-26T11:00:00+00:00"),
    manifest("v3", "update", 1.40, "rejected", "2026-11-26T12:00:00+00:00"),
    manifest("v4", "retrain", 0.91, "candidate", "2026-11-26T13:00:00+00:00"),
    manifest("v0", "bootstrap", None, "candidate", "2026-11-26T09:00:00+00:00"),  # no RMSE: not plotted
]


def markers(svg: str) -> list[tuple[str, str]]:
    """(tooltip, SVG element) of every plotted version, in plotting order."""
    return re.findall(r"<g><title>([^<]*)</title><(\w+)", svg)


@pytest.mark.unit
def test_history_points_and_chart_markers() -> None:
    points = history_points(reversed(HISTORY))
    assert [(p["version"], p["rmse"]) for p in points] == [
        ("v0", None),
        ("v1", 0.95),
        ("v2", 0.93),
        ("v3", 1.40),
        ("v4", 0.91),
    ]
    svg = rmse_svg(HISTORY, highlight="v4")
    assert markers(svg) == [
        ("v1 (bootstrap, published): RMSE 0.9500", "rect"),
        ("v2 (update, published): RMSE 0.9300", "circle"),
        ("v3 (update, rejected): RMSE 1.4000", "circle"),
        ("v4 (retrain, candidate): RMSE 0.9100", "polygon"),
    ]
    assert "this candidate" in svg
    # v3 (highest RMSE) is plotted above v1 (smaller y), v4 (lowest) at the bottom
    line = re.search(r'<polyline points="([^"]*)"', svg).group(1)
    ys = [float(xy.split(",")[1]) for xy in line.split()]
    assert ys[2] < ys[0] < ys[3]
    assert rmse_svg([]) == '<p class="muted">No version has a validation RMSE yet.</p>'


@pytest.mark.unit
def test_gate_report_has_the_expected_rows(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    bucket.write_json("reports/partitions/p-2/report.json", {"check": {}})
    cand = manifest(
        "v5",
        "update",
        0.9123,
        "candidate",
        "2026-11-26T14:00:00+00:00",
        parent="v2",
        partitions=["p-1", "p-2", HOSTILE],
        n_ratings=12345,
        metrics={
            "validation": {"rmse": 0.9123, "mae": 0.7, "n": 600},
            "prequential": {"p-2": {"rmse": 0.99}},
        },
    )
    pub = manifest("v2", "update", 0.93, "published", "2026-11-26T11:00:00+00:00", partitions=["p-1"])
    decision = {
        "accepted": False,
        "reasons": [f"RMSE 0.9123 is above the ceiling 0.9000 {HOSTILE}</script>"],
        "candidate_rmse": 0.9123,
        "published_rmse": 0.93,
        "baseline_rmse": None,
        "ceiling": 0.9,
        "tolerance": 0.01,
    }
    key = gate_report(bucket, cand, pub, decision, HISTORY)
    assert key == "reports/gates/v5.html"
    doc = bucket.read_json("reports/gates/v5.json")
    assert doc["decision"] == decision
    assert doc["new_partitions"] == ["p-2", HOSTILE]
    assert doc["candidate"]["validation_rmse"] == 0.9123
    assert doc["published"]["version"] == "v2"
    assert [p["version"] for p in doc["history"]] == ["v0", "v1", "v2", "v3", "v4", "v5"]  # candidate added

    page = bucket.read_text(key)
    assert "REJECTED: will not be published" in page
    assert '<tr><th>validation RMSE</th><td class="num">0.9123</td><td class="num">0.9300</td></tr>' in page
    assert '<tr><th>ratings absorbed</th><td class="num">12,345</td><td>\u2014</td></tr>' in page
    assert '<tr><th>partitions absorbed</th><td class="num">3</td><td class="num">1</td></tr>' in page
    assert '<td class="num">1.0%</td>' in page  # tolerance
    assert '<a href="../partitions/p-2/report.json">report.json</a>' in page
    assert '<a href="../index.html">' in page
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(1)&amp;" in page
    assert len(markers(page)) == 5  # v1..v5 (v0 has no RMSE)
    assert_self_contained(page)


@pytest.mark.unit
def test_gate_report_without_published_version(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    cand = manifest("v1", "bootstrap", 0.95, "candidate", "2026-11-26T10:00:00+00:00")
    decision = {
        "accepted": True,
        "reasons": ["passed"],
        "candidate_rmse": 0.95,
        "ceiling": 1.2,
        "tolerance": 0.01,
    }
    page = bucket.read_text(gate_report(bucket, cand, None, decision, []))
    assert "ACCEPTED: may be published" in page
    assert "No published version to compare with" in page
    with pytest.raises(ValueError, match="invalid model version id"):
        gate_report(bucket, {**cand, "version": "../evil"}, None, decision, [])


def assert_self_contained(page: str, depth: int = 1) -> None:
    """No script, no external asset; links relative, at most ``depth`` folders up (to ``reports/``)."""
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    urls = re.findall(r"https?://[^\s\"'<>]+", page)
    assert set(urls) <= {"http://www.w3.org/2000/svg"}
    for href in re.findall(r'href="([^"]*)"', page):
        assert not href.startswith(("/", "http")) and ".." not in href.replace("../", "", depth)


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def tiny_arrays() -> ModelArrays:
    return ModelArrays(
        mu=3.5,
        rank=2,
        user_ids=np.array([1, 2]),
        user_bias=np.zeros(2),
        user_factors=np.zeros((2, 2)),
        item_ids=np.array([10]),
        item_bias=np.zeros(1),
        item_factors=np.zeros((1, 2)),
    )


@pytest.mark.unit
def test_index_lists_versions_and_quarantined_partitions(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    store = ModelStore(bucket, clock=Clock())
    ok_metrics = {"validation": {"rmse": 0.95}}
    store.write_arrays(tiny_arrays(), {"kind": "bootstrap", "parent": None, "metrics": ok_metrics}, "v1")
    store.publish("v1")
    store.write_arrays(
        tiny_arrays(),
        {
            "kind": "update",
            "parent": "v1",
            "partitions": ["p-1", "p-2"],
            "metrics": {"validation": {"rmse": 1.3}},
        },
        "v2",
    )
    gate = {"accepted": False, "reasons": ["RMSE 1.3000 is above the ceiling 1.2000"]}
    store.reject("v2", "RMSE 1.3000 is above the ceiling 1.2000", gate=gate)
    gate_report(bucket, store.read_manifest("v2"), store.read_manifest("v1"), gate, version_history(store))

    name = f"{HOSTILE}.csv"
    key = f"ratings/incoming/{name}"
    bucket.write_bytes(key, b"user,item,rating\n1,2,9\n")
    check = check_partition(bucket, key, HALF_STAR, NOW, build_docs=False)
    quarantine(bucket, key, check)

    assert write_index(bucket, store) == "reports/index.html"
    page = bucket.read_text("reports/index.html")
    assert "Current version: <code>v1</code>" in page
    assert "Generated 2026-11-26T10:00:00+00:00" in page
    rows = re.findall(
        r"<tr><td><code>(v\d)</code></td><td>(\w+)</td><td><code>([^<]*)</code></td><td>([^<]*)</td>"
        r'<td class="num">(\d+)</td><td class="num">([0-9.]+)</td><td>(.*?)</td><td>(.*?)</td></tr>',
        page,
    )
    assert rows == [
        (
            "v2",
            "update",
            "v1",
            "rejected",
            "2",
            "1.3000",
            '<span class="bad">rejected</span><ul><li>RMSE 1.3000 is above the ceiling 1.2000</li></ul>',
            '<a href="gates/v2.html">gate report</a>',
        ),
        (
            "v1",
            "bootstrap",
            "\u2014",
            "published (current)",
            "0",
            "0.9500",
            '<span class="muted">no gate</span>',
            '<span class="muted">none</span>',
        ),
    ]
    pid = check.partition_id
    assert pid.startswith("script-alert-1-")
    assert (
        f"<tr><td><code>{pid}</code></td><td>rating: 1 row outside [0.5, 5] (first: &lt;script&gt;alert(1)&amp;.csv line 2: &#x27;1,2,9&#x27;); and 1 more problem</td>"
        in page
    )
    assert f'<a href="partitions/{pid}/report.json">report.json</a>' in page
    assert "Quarantined partitions (1)" in page
    assert HOSTILE not in page
    assert len(markers(page)) == 2
    assert_self_contained(page)


@pytest.mark.unit
def test_index_links_data_docs_and_escapes_odd_quarantine_ids(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    store = ModelStore(bucket, clock=Clock())
    odd = 'x"><img src=y onerror=alert(1)>'
    bucket.write_text(f"quarantine/{odd}/reason.txt", f"{HOSTILE}\n")
    bucket.write_text(f"reports/datadocs/{odd}/index.html", "<html></html>")
    page = bucket.read_text(write_index(bucket, store))
    assert "No model version yet." in page
    assert "<img" not in page and HOSTILE not in page
    assert "x&quot;&gt;&lt;img src=y onerror=alert(1)&gt;" in page
    assert (
        '<a href="datadocs/x%22%3E%3Cimg%20src%3Dy%20onerror%3Dalert%281%29%3E/index.html">Data Docs</a>'
        in page
    )
    assert_self_contained(page)


@pytest.mark.integration
def test_reports_on_s3(s3_bucket_uri) -> None:
    bucket = Bucket.from_uri(s3_bucket_uri)
    store = ModelStore(bucket, clock=Clock())
    store.write_arrays(tiny_arrays(), {"kind": "bootstrap", "metrics": {"validation": {"rmse": 0.95}}}, "v1")
    decision = {
        "accepted": True,
        "reasons": ["passed"],
        "candidate_rmse": 0.95,
        "ceiling": 1.2,
        "tolerance": 0.01,
    }
    gate_report(bucket, store.read_manifest("v1"), None, decision, version_history(store))
    store.update_manifest("v1", gate=decision)
    store.publish("v1")
    page = bucket.read_text(write_index(bucket, store))
    assert '<a href="gates/v1.html">gate report</a>' in page
    assert '<span class="ok">accepted</span><ul><li>passed</li></ul>' in page


# ------------------------------------------------------------------------------------------------------------
# the templates: escaping in every page, StrictUndefined, packaging
# ------------------------------------------------------------------------------------------------------------
NASTY = "<script>alert('1\"2')&"  # no "/": it is also a quarantined partition's folder name
NASTY_HTML = html.escape(NASTY, quote=True)  # &lt;script&gt;alert(&#x27;1&quot;2&#x27;)&amp;


def assert_escaped_once(page: str, at_least: int, depth: int = 1) -> None:
    """``NASTY`` appears only escaped (``html.escape``), never raw, never escaped twice."""
    assert NASTY not in page and "<script" not in page.lower()
    assert "&amp;lt;" not in page and "&amp;#x27;" not in page and "&amp;quot;" not in page
    assert page.count(NASTY_HTML) >= at_least, (page.count(NASTY_HTML), at_least)
    assert_self_contained(page, depth)


@pytest.mark.unit
def test_a_hostile_string_comes_out_escaped_in_every_page(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    store = ModelStore(bucket, clock=Clock())
    meta = {"kind": NASTY, "parent": NASTY, "partitions": [NASTY], "metrics": {"validation": {"rmse": 0.95}}}
    store.write_arrays(tiny_arrays(), meta, "v1")
    gate = {"accepted": False, "reasons": [NASTY], "candidate_rmse": NASTY, "tolerance": NASTY}
    store.reject("v1", NASTY, gate=gate)
    bucket.write_text(f"quarantine/{NASTY}/reason.txt", f"{NASTY}\n")
    bucket.write_json(f"reports/partitions/{NASTY}/report.json", {})

    gate_page = bucket.read_text(
        gate_report(bucket, store.read_manifest("v1"), None, gate, version_history(store))
    )
    # reason, candidate RMSE, tolerance, kind, parent, new partition, chart tooltip
    assert_escaped_once(gate_page, 7)
    link = quote(posixpath.join("..", "partitions", NASTY, "report.json"), safe="/._-~#")
    assert f'<a href="{html.escape(link, quote=True)}">report.json</a>' in gate_page

    index = bucket.read_text(write_index(bucket, store))
    # kind, parent, status reason (gate reasons), chart tooltip, quarantined id and reason
    assert_escaped_once(index, 6)
    assert f"<tr><td><code>{NASTY_HTML}</code></td><td>{NASTY_HTML}</td>" in index

    result = {
        "finished_at": NASTY,
        "plan": {
            "current": NASTY,
            "budget_minutes": None,
            "seed": NASTY,
            "fraction": NASTY,
            "notes": [NASTY],
        },
        "param_set": {"name": NASTY, "digest": NASTY},
        "param_set_key": NASTY,
        "parts": {
            NASTY: {
                "planned": 2,
                "finished": 1,
                "not_run": [NASTY],
                "trials": [{"index": 0, "rmse": 0.9, "tuned": {NASTY: NASTY}, "mae": NASTY, "n": 3}],
                "chosen": {"index": 0, "rmse": 0.9, "tuned": {NASTY: NASTY}},
                "baseline": None,
                "improvement": NASTY,
            }
        },
    }
    tuning_page = bucket.read_text(tuning_report.write(bucket, "run1", result))
    assert_escaped_once(tuning_page, 13, depth=2)  # reports/tuning/<run>/index.html
    assert f"<td><code>{NASTY_HTML}={NASTY_HTML}</code></td>" in tuning_page

    for svg in (
        rmse_svg(store.list_versions(), highlight="v1", highlight_label=NASTY),
        tuning_report.score_svg([{"index": 0, "rmse": 0.9}], 0, NASTY),
    ):
        assert_escaped_once(svg, 2)


@pytest.mark.unit
def test_strict_undefined_catches_a_missing_field() -> None:
    row = {
        "version": "v1",
        "kind": "bootstrap",
        "parent": None,
        "status": "published",
        "n_partitions": 0,
        "rmse": 0.95,
        "accepted": None,
        "reasons": [],
        "gate_report": None,
    }
    context = {
        "generated": "now",
        "bucket": "/b",
        "current": "v1",
        "chart": None,
        "versions": [row],
        "refused": [],
        "refused_why": "",
        "waiting": [],
        "waiting_why": "",
        "quarantined": [],
    }
    page = templates.render("index.html", **context)
    assert '<td><code>\u2014</code></td><td>published</td><td class="num">0</td>' in page  # None: a dash
    for missing in ("kind", "gate_report"):
        with pytest.raises(jinja2.UndefinedError, match=missing):
            templates.render(
                "index.html", **{**context, "versions": [{k: v for k, v in row.items() if k != missing}]}
            )
    with pytest.raises(jinja2.UndefinedError, match="quarantined"):
        templates.render("index.html", **{k: v for k, v in context.items() if k != "quarantined"})
    with pytest.raises(jinja2.UndefinedError, match="label_y"):
        chart = rmse_chart([{"version": "v1", "rmse": 0.9}])
        del chart["label_y"]
        templates.macro("charts.svg", "rmse")(chart)


@pytest.mark.unit
def test_the_environment_escapes_and_the_wheel_ships_every_template() -> None:
    env = templates.ENV
    assert isinstance(env.undefined, type) and issubclass(env.undefined, jinja2.StrictUndefined)
    for name in ("gate.html", "index.html", "tuning.html", "base.html", "charts.svg", "macros.html"):
        assert env.autoescape(name), name
    assert not env.autoescape("notes.txt")  # only .html, .svg, .xml (and strings) are escaped
    assert env.from_string("{{ x }}").render(x=NASTY) == NASTY_HTML
    assert env.from_string("{{ x }}").render(x=None) == "\u2014"
    with pytest.raises(jinja2.UndefinedError, match="'x' is undefined"):
        env.from_string("{{ x|num }}").render()
    # so every template is an .html or .svg file, and pyproject's package-data ships every one of them
    folder = Path(templates.__file__).parent
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".py")
    assert {Path(f).suffix for f in files} == {".html", ".svg"}, files
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["streamrec.pipeline.templates"]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), (files, globs)
    assert "jinja2" in " ".join(pyproject["project"]["dependencies"]).lower()


def test_index_shows_unfinished_uploads_as_waiting(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path)
    store = ModelStore(bucket, clock=Clock())
    bucket.write_bytes("ratings/incoming/p-7.csv.part", b"user,item,rating\n1,2,")  # an upload still running
    bucket.write_bytes("ratings/incoming/p-6.csv", b"user,item,rating\n1,2,4\n")
    write_index(bucket, store)
    page = bucket.read_text("reports/index.html")
    assert "Uploads not finished (1)" in page
    assert "<code>ratings/incoming/p-7.csv.part</code>" in page
    assert "p-6.csv</code>" not in page  # a finished file is a partition, not a waiting upload
    bucket.delete("ratings/incoming/p-7.csv.part")
    write_index(bucket, store)
    assert "Uploads not finished" not in bucket.read_text("reports/index.html")

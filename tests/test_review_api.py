"""The review plugin's API with FastAPI's TestClient, against a real bucket made by the pipeline's own calls
(``tests/reviewdata.py``), behind Airflow's real authentication.

Airflow is configured for this module only: its own ``AIRFLOW_HOME`` with a SQLite database migrated by
``airflow db migrate`` (the auth manager checks token revocation there), the simple auth manager with an admin
and a viewer, a JWT secret. Tokens are signed by that auth manager, so the plugin verifies them exactly as
the API server would; the browser test (``test_review_browser.py``) checks the same behind a real login.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the module's setup (migrate, GX) takes ~1-2 min

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "streamrec_review.py"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reviewdata import populate  # noqa: E402


# ------------------------------------------------------------------------------------------------------------
# Airflow (auth) and the bucket, once per module
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def airflow_auth(tmp_path_factory):
    """Tokens signed by a real simple auth manager: ``{"admin": jwt, "viewer": jwt}``."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "review-api-test-" + "k" * 56,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    }
    # Passwords of our own, so the auth manager does not generate and print any (tokens are signed below).
    (home / "passwords.json").write_text(json.dumps({"admin": "not-used-a", "viewer": "not-used-v"}))
    if "airflow" in sys.modules:
        from airflow import settings

        if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] != settings.SQL_ALCHEMY_CONN:
            pytest.skip("Airflow was already imported in this process with another configuration")
    mig = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert mig.returncode == 0, mig.stderr[-3000:]
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    am = init_auth_manager()
    tokens = {
        role: am.generate_jwt(SimpleAuthManagerUser(username=role, role=role)) for role in ("admin", "viewer")
    }
    yield tokens
    mp.undo()


@pytest.fixture(scope="module")
def plugin():
    spec = importlib.util.spec_from_file_location("streamrec_review_plugin_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    facts = populate(str(root / "bucket"), root / "work", docs=True)
    return root / "bucket", facts


@pytest.fixture
def bucket_dir(populated, tmp_path):
    """A private copy of the populated bucket (object times kept: the quarantine compares them)."""
    src, _ = populated
    dst = tmp_path / "bucket"
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


@pytest.fixture
def facts(populated):
    return populated[1]


@pytest.fixture
def client(airflow_auth, plugin, bucket_dir):
    from fastapi.testclient import TestClient

    from streamrec.pipeline.review import LookupCache

    app = mounted(plugin.create_app(str(bucket_dir), cache=LookupCache(pointer_ttl=0.0)))
    with TestClient(app, base_url="http://testserver/streamrec") as c:
        yield c


def mounted(app):
    """The plugin app mounted under its prefix, as the API server's ``init_plugins`` does."""
    from fastapi import FastAPI

    root = FastAPI()
    root.mount("/streamrec", app)
    return root


def as_user(client, tokens, role):
    """The UI's way: the ``_token`` cookie set by Airflow's login."""
    client.cookies.set("_token", tokens[role])
    return client


# ------------------------------------------------------------------------------------------------------------
# authentication
# ------------------------------------------------------------------------------------------------------------
def test_everything_needs_an_airflow_login(client, airflow_auth, facts):
    for path in (
        "/api/overview",
        "/api/chart.svg",
        "/api/lookup?user=2",
        "/files/reports/index.html",
        "/static/review.js",
    ):
        assert client.get(path).status_code == 401, path
    body = {"version": facts["versions"][0], "reason": "x"}
    assert client.post("/api/rollback", json=body).status_code == 401
    assert client.post("/api/requeue", json={"partition": "p-bad", "reason": "x"}).status_code == 401
    # a token not signed by this Airflow
    forged = airflow_auth["admin"][:-4] + ("AAAA" if not airflow_auth["admin"].endswith("AAAA") else "BBBB")
    assert client.get("/api/overview", headers={"Authorization": f"Bearer {forged}"}).status_code == 403
    # the page itself sends a browser to the login page, and back here afterwards
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/auth/login?next=%2Fstreamrec%2F"
    # a bearer token works as well as the cookie
    ok = client.get("/api/overview", headers={"Authorization": f"Bearer {airflow_auth['viewer']}"})
    assert ok.status_code == 200 and ok.json()["user"] == {"name": "viewer", "can_act": False}


def test_page_and_static_files_once_logged_in(client, airflow_auth):
    as_user(client, airflow_auth, "viewer")
    page = client.get("/")
    assert page.status_code == 200 and "streamrec review" in page.text
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/review.js").status_code == 200
    assert client.get("/static/index.html").status_code == 404  # only .js / .css are static files
    assert "http" not in client.get("/static/review.js").text.replace("http-equiv", "")  # no CDN


# ------------------------------------------------------------------------------------------------------------
# what the page shows
# ------------------------------------------------------------------------------------------------------------
def test_overview_versions_lineage_gates_quarantine(client, airflow_auth, facts):
    v0, v1, v2 = facts["versions"]
    d = as_user(client, airflow_auth, "admin").get("/api/overview").json()
    assert d["user"] == {"name": "admin", "can_act": True}
    assert d["current"] == v1 == facts["current"]
    by = {v["version"]: v for v in d["versions"]}
    assert [v["version"] for v in d["versions"]] == [v2, v1, v0]  # newest first
    assert [v for v in by if by[v]["current"]] == [v1]
    assert (by[v0]["status"], by[v1]["status"], by[v2]["status"]) == ("published", "published", "rejected")
    assert by[v1]["parent"] == v0 and by[v1]["partitions"] == ["p-00001"]
    assert by[v1]["new_partitions"] == ["p-00001"] and by[v2]["new_partitions"] == ["p-damage"]
    assert by[v1]["params"]["update"] == {"lr": 0.05, "passes": 3}
    assert by[v0]["params"]["bootstrap"]["rank"] == 4
    assert by[v1]["rmse"] == pytest.approx(facts["decisions"][1]["candidate_rmse"])
    assert by[v1]["gate_report"] == f"reports/gates/{v1}.html"
    assert d["applied"] == ["p-00001"]

    gates = {g["version"]: g for g in d["gates"]}
    assert gates[v0]["accepted"] and gates[v1]["accepted"] and not gates[v2]["accepted"]
    g2 = gates[v2]
    assert g2["published_version"] == v1 and g2["new_partitions"] == ["p-damage"]
    assert g2["candidate_rmse"] > g2["published_rmse"] * (1 + g2["tolerance"])  # the numbers that decided
    assert "worse than the published model" in g2["reasons"][0]
    assert g2["validation_rows"] > 0
    assert gates[v0]["baseline_rmse"] is not None and gates[v0]["candidate_rmse"] < gates[v0]["baseline_rmse"]

    (q,) = d["quarantined"]
    assert q["id"] == "p-bad" and "outside [0.5, 5]" in q["reason"] and "line 5" in q["reason"]
    assert q["datadocs"] == "reports/datadocs/p-bad/index.html"
    assert q["report"] == "reports/partitions/p-bad/report.json"
    assert q["raw_present"] and not q["requeued"]
    assert d["rejected"] == {"p-damage": v2}
    assert d["held"] == {} and d["events"] == []
    assert d["movies"] == "ratings/movies.csv"
    assert [p["version"] for p in d["chart"]] == [v0, v1, v2]


def test_chart_plots_every_version_by_kind_and_status(client, airflow_auth, facts):
    v0, v1, v2 = facts["versions"]
    svg = as_user(client, airflow_auth, "viewer").get("/api/chart.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    text = svg.text
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert f"{v0} (bootstrap, published)" in text
    assert f"{v1} (update, published)" in text
    assert f"{v2} (update, rejected)" in text
    assert text.count("<g><title>") == 3


def test_report_files_are_served_from_reports_only(client, airflow_auth, facts):
    as_user(client, airflow_auth, "viewer")
    docs = client.get("/files/reports/datadocs/p-bad/index.html")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"].startswith("sandbox")
    assert "p-bad" in docs.text or "ratings_partition" in docs.text
    gate = client.get(f"/files/reports/gates/{facts['versions'][2]}.html")
    assert gate.status_code == 200 and "REJECTED" in gate.text
    assert client.get("/files/reports/partitions/p-bad/report.json").json()["check"]["ok"] is False
    assert client.get("/files/reports/nothing-here.html").status_code == 404
    for path in (
        "/files/models/CURRENT",
        "/files/quarantine/p-bad/report.json",
        "/files/reports/%2e%2e/models/CURRENT",
        "/files/reports/..%2fmodels/CURRENT",
        "/files/reports//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
    ):
        r = client.get(path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "version" not in r.text, path


def _rated(bucket_dir: Path, version: str, user: int) -> dict[int, float]:
    """The user's row of the version's seen table, read straight from its Parquet files: item -> rating."""
    seen = pq.read_table(bucket_dir / "models" / "versions" / version / "seen").to_pydict()
    if user not in seen["user"]:
        return {}
    row = seen["user"].index(user)
    return dict(zip(seen["items"][row], seen["ratings"][row], strict=True))


def _independent_top(bucket_dir: Path, version: str, user: int, k: int = 10) -> list[int]:
    """Top-k item ids computed straight from the Parquet tables: mu + b_u + b_i + p_u.q_i, best first, among
    the items the user has not rated (the version's seen table)."""
    vdir = bucket_dir / "models" / "versions" / version
    manifest = json.loads((vdir / "manifest.json").read_text())
    users = pq.read_table(vdir / "users").to_pydict()
    items = pq.read_table(vdir / "items").to_pydict()
    rated = _rated(bucket_dir, version, user)
    row = users["id"].index(user)
    p_u = np.array(users["factors"][row])
    scores = [
        manifest["mu"] + users["bias"][row] + b + float(p_u @ np.array(q))
        for b, q in zip(items["bias"], items["factors"], strict=True)
    ]
    order = sorted(
        (j for j in range(len(scores)) if items["id"][j] not in rated),
        key=lambda j: (-scores[j], items["id"][j]),
    )
    return [items["id"][j] for j in order[:k]]


def test_lookup_top10_with_titles(client, airflow_auth, facts, bucket_dir):
    v0, v1, _ = facts["versions"]
    user = facts["users"][0]
    as_user(client, airflow_auth, "viewer")
    d = client.get(f"/api/lookup?user={user}").json()
    assert d["version"] == v1 and d["known_user"] is True and len(d["items"]) == 10
    assert [it["item"] for it in d["items"]] == _independent_top(bucket_dir, v1, user)
    first = d["items"][0]
    assert first["title"].startswith(f"Movie {first['item']}, The (")
    assert all(0.5 <= it["score"] <= 5.0 for it in d["items"])
    older = client.get(f"/api/lookup?user={user}&version={v0}").json()
    assert older["version"] == v0
    assert [it["item"] for it in older["items"]] == _independent_top(bucket_dir, v0, user)
    cold = client.get("/api/lookup?user=987654321").json()
    assert cold["known_user"] is False and len(cold["items"]) == 10
    assert client.get("/api/lookup?user=1&k=0").status_code == 422
    assert client.get("/api/lookup?user=abc").status_code == 422
    assert client.get("/api/lookup?user=1&version=v-nope").status_code == 404


def test_lookup_never_shows_a_rated_item_and_shows_the_users_own_top_rated(
    client, airflow_auth, facts, bucket_dir
):
    v0, v1, _ = facts["versions"]
    heavy = facts["heavy_user"]
    as_user(client, airflow_auth, "viewer")
    for version in (v0, v1):
        rated = _rated(bucket_dir, version, heavy)
        n_items = json.loads((bucket_dir / "models" / "versions" / version / "manifest.json").read_text())[
            "n_items"
        ]
        assert len(rated) >= 40  # a heavy user: a third or more of the catalogue rated
        d = client.get(f"/api/lookup?user={heavy}&k=100&version={version}").json()
        got = [it["item"] for it in d["items"]]
        assert not set(got) & set(rated), "a rated item was recommended"
        assert len(got) == n_items - len(
            set(rated) & set(range(1, 10**6))
        )  # every unrated item, nothing else
        assert got[:10] == _independent_top(bucket_dir, version, heavy)
        assert d["rated"]["known"] is True and d["rated"]["count"] == len(rated)
        top = d["rated"]["top"]
        assert len(top) == min(100, len(rated))
        assert [t["rating"] for t in top] == sorted(rated.values(), reverse=True)  # best first
        assert all(rated[t["item"]] == t["rating"] for t in top)
        assert top[0]["title"].startswith(f"Movie {top[0]['item']}, The (")
        assert d["rule"] == {"min_ratings": 0, "shrink": 0.0, "popularity": 0.0, "k": 10}  # no rule recorded
    cold = client.get("/api/lookup?user=987654321").json()
    assert cold["rated"] == {"known": True, "count": 0, "top": []}


# ------------------------------------------------------------------------------------------------------------
# actions
# ------------------------------------------------------------------------------------------------------------
def _pending(bucket_dir: Path) -> dict:
    from streamrec import pipeline

    bucket, store = pipeline.open_bucket(str(bucket_dir))
    return pipeline.pending(bucket, store)


def test_rollback_moves_the_pointer_holds_its_partitions_and_is_logged(
    client, airflow_auth, facts, bucket_dir
):
    v0, v1, v2 = facts["versions"]
    body = {"version": v0, "reason": "p-00001 looks off", "expected_current": v1}
    assert as_user(client, airflow_auth, "viewer").post("/api/rollback", json=body).status_code == 403
    as_user(client, airflow_auth, "admin")
    # refusals: a rejected version, the current one, a stale page, no reason, not JSON
    assert client.post("/api/rollback", json={**body, "version": v2}).status_code == 409
    assert client.post("/api/rollback", json={**body, "version": v1}).status_code == 409
    assert client.post("/api/rollback", json={**body, "expected_current": v0}).status_code == 409
    assert client.post("/api/rollback", json={**body, "reason": ""}).status_code == 422
    form = client.post("/api/rollback", content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert form.status_code in (415, 422)
    assert client.get("/api/overview").json()["current"] == v1

    r = client.post("/api/rollback", json=body)
    assert r.status_code == 200, r.text
    event = r.json()
    assert (event["action"], event["from"], event["to"], event["held"]) == ("rollback", v1, v0, ["p-00001"])
    assert event["actor"] == "admin" and event["reason"] == "p-00001 looks off"
    d = client.get("/api/overview").json()
    assert d["current"] == v0
    by = {v["version"]: v for v in d["versions"]}
    assert by[v1]["status"] == "published" and by[v1]["rolled_back"]["to"] == v0
    assert d["held"] == {"p-00001": event["id"]} and d["events"][0]["id"] == event["id"]
    assert (bucket_dir / "models" / "events" / f"{event['id']}.json").exists()
    # the lookup follows the pointer
    assert client.get(f"/api/lookup?user={facts['users'][0]}").json()["version"] == v0

    # the update DAG: its next candidate is built on v0, and p-00001 waits for a re-queue
    plan = _pending(bucket_dir)
    assert plan["base"] == v0
    assert plan["skipped"]["p-00001"] == f"held by rollback {event['id']}"
    assert plan["skipped"]["p-bad"] == "quarantined"
    assert plan["skipped"]["p-damage"].startswith("rejected by the gate")
    assert plan["pending"] == []

    rq = client.post("/api/requeue", json={"partition": "p-00001", "reason": "it was fine"})
    assert rq.status_code == 200, rq.text
    assert rq.json()["released"] == [{"by": "rollback", "event": event["id"]}]
    plan = _pending(bucket_dir)
    assert [p["id"] for p in plan["pending"]] == ["p-00001"] and plan["base"] == v0
    # and back again: rolling forward to v1 is a rollback too (v1 was published)
    fwd = client.post("/api/rollback", json={"version": v1, "reason": "undo", "expected_current": v0})
    assert fwd.status_code == 200 and fwd.json()["held"] == []
    assert _pending(bucket_dir)["skipped"]["p-00001"] == "applied"


def test_requeue_quarantined_and_gate_rejected(client, airflow_auth, facts, bucket_dir):
    from streamrec import pipeline

    v2 = facts["versions"][2]
    as_user(client, airflow_auth, "admin")
    assert client.post("/api/requeue", json={"partition": "p-00001", "reason": "x"}).status_code == 400
    assert client.post("/api/requeue", json={"partition": "p-nope", "reason": "x"}).status_code == 400
    assert client.post("/api/requeue", json={"partition": "../models", "reason": "x"}).status_code == 400

    r = client.post("/api/requeue", json={"partition": "p-bad", "reason": "contract fixed"})
    assert r.status_code == 200, r.text
    assert r.json()["released"] == [{"by": "quarantine", "record": "quarantine/p-bad/report.json"}]
    d = client.get("/api/overview").json()
    assert d["quarantined"][0]["requeued"] is True
    plan = _pending(bucket_dir)
    assert [p["id"] for p in plan["pending"]] == ["p-bad"]
    # the next update run checks the same bytes again; they fail again and are held again (not every 30 s)
    bucket, store = pipeline.open_bucket(str(bucket_dir))
    sel = pipeline.check_and_select(bucket, store, plan, 1_790_000_000.0, build_docs=False)
    assert sel["partitions"] == [] and sel["checked"][0]["ok"] is False
    assert _pending(bucket_dir)["skipped"]["p-bad"] == "quarantined"
    assert client.get("/api/overview").json()["quarantined"][0]["requeued"] is False

    r = client.post("/api/requeue", json={"partition": "p-damage", "reason": "after tuning"})
    assert r.status_code == 200 and r.json()["released"] == [{"by": "gate", "versions": [v2]}]
    plan = _pending(bucket_dir)
    assert [p["id"] for p in plan["pending"]] == ["p-damage"]
    d = client.get("/api/overview").json()
    assert d["rejected"] == {} and {v["version"]: v for v in d["versions"]}[v2]["status"] == "rejected"
    assert [e["action"] for e in d["events"]] == ["requeue", "requeue"]
    assert client.post("/api/requeue", json={"partition": "p-damage", "reason": "again"}).status_code == 400


# ------------------------------------------------------------------------------------------------------------
# the same on S3 (moto server): report files, overview and lookup through streamrec.storage.bucket
# ------------------------------------------------------------------------------------------------------------
def test_works_on_s3(airflow_auth, plugin, s3_bucket_uri, tmp_path):
    from fastapi.testclient import TestClient

    from streamrec.pipeline.review import LookupCache

    facts = populate(s3_bucket_uri, tmp_path / "work", docs=False)
    app = mounted(plugin.create_app(s3_bucket_uri, cache=LookupCache()))
    with TestClient(app, base_url="http://testserver/streamrec") as c:
        c.cookies.set("_token", airflow_auth["viewer"])
        d = c.get("/api/overview").json()
        assert d["bucket"] == s3_bucket_uri and d["current"] == facts["current"]
        assert [q["id"] for q in d["quarantined"]] == ["p-bad"] and d["quarantined"][0]["datadocs"] is None
        gate = c.get(f"/files/reports/gates/{facts['versions'][2]}.html")
        assert gate.status_code == 200 and "REJECTED" in gate.text
        assert c.get("/files/models/CURRENT").status_code == 403
        look = c.get(f"/api/lookup?user={facts['users'][0]}").json()
        assert look["version"] == facts["current"] and len(look["items"]) == 10
        assert look["items"][0]["title"]
        # actions on S3: the review log and the re-queue marker are objects like any other
        c.cookies.set("_token", airflow_auth["admin"])
        assert c.post("/api/requeue", json={"partition": "p-bad", "reason": "on s3"}).status_code == 200
        v0 = facts["versions"][0]
        rb = c.post(
            "/api/rollback", json={"version": v0, "reason": "on s3", "expected_current": facts["current"]}
        )
        assert rb.status_code == 200 and rb.json()["held"] == ["p-00001"]
    from streamrec import pipeline

    bucket, store = pipeline.open_bucket(s3_bucket_uri)
    plan = pipeline.pending(bucket, store)
    assert plan["base"] == v0 and [p["id"] for p in plan["pending"]] == ["p-bad"]
    assert plan["skipped"]["p-00001"].startswith("held by rollback")

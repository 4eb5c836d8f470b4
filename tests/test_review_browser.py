"""The review page in a real browser, behind a real Airflow login.

A real ``airflow api-server`` (its own ``AIRFLOW_HOME``, SQLite migrated by ``airflow db migrate``, the repo's
``plugins/``, a free port) serves a bucket that the pipeline's own calls filled (``tests/reviewdata.py``:
two published versions, a candidate the gate rejected, a quarantined partition with its Data Docs). Headless
Chromium (the system's ``chromium``: Debian's package, installed by ``scripts/install-chromium`` when root; the
test is skipped with the reason when it is missing) is driven over the DevTools protocol (``tests/cdp.py``):

1. without a login, the plugin's API answers 401 and the page redirects to Airflow's login page;
2. the browser opens ``/streamrec/``, lands on Airflow's login page, signs in there as a person would, and
   is sent back to the page;
3. it asserts what a person sees: the versions table (current version marked), the rejected candidate and
   its gate numbers, the quarantined partition with its Data Docs link, the RMSE chart drawn (an SVG with one
   marker per version and a real size on screen), a top-10 lookup answered with titles, and a rollback
   done with the page's button (the reason typed into its prompt) showing up in the review log;
4. the page inside Airflow's own UI: the nav entry's route ``/plugin/streamrec`` embeds it (same origin).

Screenshots: ``var/artifacts/review.png`` (the page) and ``var/artifacts/review-in-airflow.png`` (inside the
Airflow UI), paths printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "var" / "artifacts"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdp import Browser, chromium_binary  # noqa: E402
from s3server import free_port  # noqa: E402

PASSWORD = "review-browser-test-pw"


def _get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, headers=headers or {}, data=data)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def api_server(tmp_path):
    """A populated bucket and a real Airflow API server with the repo's plugins; yields (url, facts)."""
    if chromium_binary() is None:
        pytest.skip(
            "chromium is not installed (Debian: apt-get install chromium, or scripts/install-chromium)"
        )
    from reviewdata import populate

    facts = populate(str(tmp_path / "bucket"), tmp_path / "work", docs=True)
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),  # parsed once below: registers the model Asset
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API_AUTH__JWT_SECRET": "review-browser-" + "s" * 56,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "STREAMREC_BUCKET": str(tmp_path / "bucket"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", None)
    mig = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=900
    )
    assert mig.returncode == 0, mig.stderr[-3000:]
    ser = subprocess.run(
        [str(VENV_BIN / "airflow"), "dags", "reserialize"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ser.returncode == 0, ser.stderr[-3000:]
    log = open(tmp_path / "api-server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(VENV_BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: ended below by that group's id, nothing else
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "api-server.log").read_text()[-4000:])
            try:
                if _get(f"{url}/api/v2/monitor/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "api-server not up after 300 s"
            time.sleep(1)
        yield url, facts
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_review_page_in_a_real_browser(api_server, tmp_path):
    url, facts = api_server
    v0, v1, v2 = facts["versions"]

    # 1. no login: the API refuses, the page sends the browser to Airflow's login
    assert _get(f"{url}/streamrec/api/overview")[0] == 401
    assert _get(f"{url}/streamrec/files/reports/index.html")[0] == 401
    status, headers, _ = _get(f"{url}/streamrec/")
    assert status == 303 and headers["location"].startswith("/auth/login?next=")
    # the plugin is registered with its nav entry (Airflow's own plugins API, with a token)
    code, _, body = _get(
        f"{url}/auth/token",
        {"Content-Type": "application/json"},
        json.dumps({"username": "admin", "password": PASSWORD}).encode(),
    )
    assert code == 201, body
    token = json.loads(body)["access_token"]
    code, _, body = _get(f"{url}/api/v2/plugins", {"Authorization": f"Bearer {token}"})
    plugins = {p["name"]: p for p in json.loads(body)["plugins"]}
    assert plugins["streamrec_review"]["fastapi_apps"][0]["url_prefix"] == "/streamrec"
    view = plugins["streamrec_review"]["external_views"][0]
    assert (view["href"], view["url_route"], view["destination"]) == ("/streamrec/", "streamrec", "nav")

    with Browser(tmp_path / "chromium-profile") as b:
        # 2. log in through Airflow's login page
        b.navigate(f"{url}/streamrec/")
        b.wait_for(
            "location.pathname.startsWith('/auth/login') && !!document.querySelector('input[name=password]')",
            what="Airflow's login form",
        )
        b.type_into("input[name=username]", "admin")
        b.type_into("input[name=password]", PASSWORD)
        b.eval("document.querySelector('button[type=submit]').click()")
        b.wait_for(
            "location.pathname === '/streamrec/' && document.body.dataset.loaded", what="the review page"
        )
        assert b.eval("document.body.dataset.loaded") == "yes", b.eval(
            "document.getElementById('error').textContent"
        )

        # 3. what a person sees
        seen = b.eval(
            """(() => {
            const rows = [...document.querySelectorAll('#versions tbody tr[data-version]')];
            const svg = document.querySelector('#chart svg');
            const box = svg ? svg.getBoundingClientRect() : null;
            const q = document.querySelector('#quarantine tr[data-partition="p-bad"]');
            const g = document.querySelector('#gates tr[data-version="__V2__"]');
            return {
              versions: rows.map(r => r.dataset.version),
              current: rows.filter(r => r.classList.contains('current')).map(r => r.dataset.version),
              banner: document.getElementById('current').textContent,
              quarantine: q ? q.textContent : null,
              docs: q ? [...q.querySelectorAll('a')].map(a => a.getAttribute('href')) : [],
              gate: g ? g.textContent : null,
              markers: svg ? svg.querySelectorAll('g > title').length : 0,
              chart: box ? [box.width, box.height] : null,
              rollback: [...document.querySelectorAll('#versions button')].map(x => x.textContent),
              held: document.getElementById('held').textContent,
            };
            })()""".replace("__V2__", v2)
        )
        assert seen["versions"] == [v1, v0, v2], seen  # published first (newest first), then the rejected one
        assert seen["current"] == [v1] and v1 in seen["banner"], seen
        assert "p-bad" in seen["quarantine"] and "outside [0.5, 5]" in seen["quarantine"], seen
        assert "files/reports/datadocs/p-bad/index.html" in seen["docs"], seen
        assert "rejected" in seen["gate"] and "worse than the published model" in seen["gate"], seen
        assert seen["markers"] == 3 and seen["chart"][0] > 300 and seen["chart"][1] > 100, seen
        assert seen["rollback"] == ["Roll back to this"], seen  # only v0: published and not current
        assert "p-damage" in seen["held"], seen

        # the Data Docs link opens the report file (through the plugin, logged in by the cookie)
        docs = b.eval(
            "fetch('files/reports/datadocs/p-bad/index.html').then(r => [r.status, r.headers.get('content-type')])"
        )
        assert docs[0] == 200 and docs[1].startswith("text/html"), docs

        # a lookup, typed and submitted
        b.type_into("#lookup-user", str(facts["users"][0]))
        b.eval("document.querySelector('#lookup-form button[type=submit]').click()")
        b.wait_for("document.getElementById('lookup-result').dataset.answered", what="the lookup answer")
        answer = b.eval(
            """[...document.querySelectorAll('#lookup-table tbody tr')].map(
                 tr => [...tr.children].map(td => td.textContent))"""
        )
        assert len(answer) == 10, answer
        assert all(row[2].startswith(f"Movie {row[1]}, The (") for row in answer), answer
        scores = [float(row[3]) for row in answer]
        assert all(0.5 <= s <= 5.0 for s in scores), answer
        shot = b.screenshot(ARTIFACTS / "review.png")
        print(f"screenshot: {shot}")

        # an action: roll back to v0 with the button, the reason typed into the prompt
        b.dialog_answer = "rolled back from the browser test"
        b.eval(f"document.querySelector('#versions tr[data-version=\"{v0}\"] button').click()")
        b.wait_for(
            "document.querySelectorAll('#events tbody tr').length === 1 && "
            "!document.querySelector('#events tbody td[colspan]')",
            what="the rollback in the review log",
        )
        assert b.dialogs and "Reason for rollback" in b.dialogs[0], b.dialogs
        after = b.eval(
            """({banner: document.getElementById('current').textContent,
                 log: document.querySelector('#events tbody tr').textContent,
                 held: document.getElementById('held').textContent,
                 error: document.getElementById('error').textContent})"""
        )
        assert v0 in after["banner"] and not after["error"], after
        assert "rollback" in after["log"] and "admin" in after["log"] and "p-00001" in after["log"], after
        assert "rolled back from the browser test" in after["log"], after
        assert "p-00001" in after["held"], after
        # ... and the model Asset got the event a publish emits, through Airflow's REST API (the cookie's user)
        got = b.eval(
            """fetch('/api/v2/assets?name_pattern=streamrec_model').then(r => r.json()).then(a =>
                 fetch('/api/v2/assets/events?asset_id=' + a.assets[0].id).then(r => r.json()))"""
        )
        extras = [e["extra"] for e in got["asset_events"]]
        assert any(x.get("version") == v0 and x.get("rollback_of") == v1 for x in extras), got

        # 4. inside Airflow's UI: the nav entry's route embeds the page
        b.navigate(f"{url}/plugin/streamrec")
        b.wait_for(
            "(() => { const f = document.querySelector('iframe');"
            " return f && f.contentDocument && f.contentDocument.body && f.contentDocument.body.dataset.loaded; })()",
            timeout=90,
            what="the review page inside the Airflow UI",
        )
        src = b.eval("document.querySelector('iframe').getAttribute('src')")
        assert src.rstrip("/").endswith("/streamrec"), src
        # the nav entry: under the "Browse" menu of the UI's side bar
        clicked = b.eval(
            """(() => {
              const els = [...document.querySelectorAll('button, a, [role=button]')];
              const browse = els.find(x => (x.innerText || '').trim() === 'Browse');
              if (!browse) return els.map(x => (x.innerText || '').trim()).filter(Boolean).join('|');
              browse.click();
              return 'clicked';
            })()"""
        )
        assert clicked == "clicked", clicked
        entry = b.wait_for(
            "[...document.querySelectorAll('a, [role=menuitem]')].map(x => x.innerText.trim())"
            ".find(t => t === 'streamrec review')",
            timeout=30,
            what="the 'streamrec review' entry of the Browse menu",
        )
        assert entry == "streamrec review"
        time.sleep(1)
        shot2 = b.screenshot(ARTIFACTS / "review-in-airflow.png", full_page=False)
        print(f"screenshot: {shot2}")

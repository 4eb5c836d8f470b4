"""Latency of a top-10 lookup for random users: the library call and the review page's API.

    python bench/lookup.py [--items 60000] [--users 20000] [--rank 20] [--calls 2000] [--http-calls 1000]

A seeded random model (``--users`` x ``--rank`` and ``--items`` x ``--rank`` factors, biases) is written to a
temporary local bucket with ``ModelStore.write_arrays`` and published. Then, for ``--calls`` random known users:

* ``library``: ``streamrec.pipeline.lookup.Recommender.recommend(user, 10)`` on the loaded version (the serving call);
* ``review_lookup``: ``streamrec.pipeline.review.lookup`` (what the API handler calls: cached pointer and model, titles);
* ``http_without_token_check``: the same requests with the auth dependency overridden (FastAPI's
  ``dependency_overrides``), to show what Airflow's token check (JWT + revocation lookup in its database) costs;
* ``http``: ``GET /streamrec/api/lookup?user=..`` on the review plugin's FastAPI app served by a real uvicorn
  (in a thread of this process, loopback, one keep-alive connection), behind Airflow's real authentication: a
  JWT from a simple auth manager configured in a throw-away ``AIRFLOW_HOME`` (``airflow db migrate`` first:
  the token check reads the revocation table). Client and server share this process's GIL, so this is an
  upper bound of the server's own time.

Warm-up calls (model load, first JIT of numpy paths) are excluded. Prints p50/p90/p99/mean in milliseconds
and, on its last line, one JSON object. Goal: p50 <= 5 ms for the library call. The temporary bucket and
``AIRFLOW_HOME`` (under ``var/`` when it exists) are removed at the end.

Last line: one JSON object with the top-level keys ``bench`` (``"lookup"``), ``items``, ``users``, ``rank``,
``k``, ``version_write_s``, ``version_load_s``, ``library``, ``review_lookup``, ``http``,
``http_without_token_check`` (each ``n``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``mean_ms``),
``http_unauthenticated_status``, ``goal_library_p50_ms``, ``goal_met``, ``loadavg``, ``note``.

Smoke run (``tests/test_bench.py``): ``--items 300 --users 100 --rank 4 --calls 30 --http-calls 10`` (most of
its time is ``airflow db migrate``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamrec.core.arrays import ModelArrays  # noqa: E402
from streamrec.pipeline.lookup import Recommender  # noqa: E402
from streamrec.storage.store import ModelStore  # noqa: E402


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def model(n_users: int, n_items: int, rank: int, seed: int) -> ModelArrays:
    rng = np.random.default_rng(seed)
    return ModelArrays(
        mu=3.5,
        rank=rank,
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        user_bias=rng.normal(0, 0.3, n_users),
        user_factors=rng.normal(0, 0.2, (n_users, rank)),
        item_ids=np.arange(1, n_items + 1, dtype=np.int64) * 3,
        item_bias=rng.normal(0, 0.4, n_items),
        item_factors=rng.normal(0, 0.2, (n_items, rank)),
        n=n_users * 20,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_token(home: Path) -> str:
    """Configure Airflow auth in ``home`` (this process) and return an admin JWT."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "bench-lookup-" + "b" * 56,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    os.environ.update(env)
    home.mkdir(parents=True, exist_ok=True)
    # A password of our own, so the auth manager does not generate one and print it.
    (home / "passwords.json").write_text(json.dumps({"admin": secrets.token_urlsafe(16)}))
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return init_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--rank", type=int, default=20)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--http-calls", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    work = Path(
        tempfile.mkdtemp(prefix="bench-lookup-", dir=REPO / "var" if (REPO / "var").is_dir() else None)
    )
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    bucket = work / "bucket"
    store = ModelStore(str(bucket))
    t0 = time.perf_counter()
    version = store.write_arrays(model(args.users, args.items, args.rank, args.seed), {"kind": "bootstrap"})
    store.publish(version)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = Recommender.from_store(store)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed + 1)
    users = rng.integers(1, args.users + 1, args.calls + 50)

    def timed(fn, xs) -> list[float]:
        out = []
        for u in xs:
            t = time.perf_counter()
            fn(int(u))
            out.append((time.perf_counter() - t) * 1000)
        return out

    timed(lambda u: rec.recommend(u, 10), users[:50])
    library = stats(timed(lambda u: rec.recommend(u, 10), users[50:]))
    print(f"library (Recommender.recommend, k=10): {library}", flush=True)

    from streamrec.pipeline import review

    cache = review.LookupCache()
    timed(lambda u: review.lookup(store, u, 10, cache=cache), users[:50])
    core = stats(timed(lambda u: review.lookup(store, u, 10, cache=cache), users[50:]))
    print(f"review.lookup: {core}", flush=True)

    # the page's API over real HTTP, behind Airflow's authentication
    import httpx
    import uvicorn
    from fastapi import FastAPI

    token = airflow_token(work / "airflow")
    spec = importlib.util.spec_from_file_location(
        "streamrec_review_bench", REPO / "plugins" / "streamrec_review.py"
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    root = FastAPI()
    app = plugin.create_app(str(bucket), cache=review.LookupCache())
    root.mount("/streamrec", app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", cookies={"_token": token}, timeout=30
        ) as client:

            def get(u: int) -> None:
                r = client.get("/streamrec/api/lookup", params={"user": u, "k": 10})
                if r.status_code != 200 or len(r.json()["items"]) != 10:
                    raise RuntimeError(f"lookup of user {u}: {r.status_code} {r.text[:200]}")

            hu = users[: args.http_calls + 50]
            timed(get, hu[:50])
            http = stats(timed(get, hu[50:]))
            unauth = httpx.get(f"http://127.0.0.1:{port}/streamrec/api/lookup?user=1").status_code
            # the same without Airflow's token check (FastAPI's dependency override): what the check costs
            from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

            app.dependency_overrides[plugin._reader] = lambda: SimpleAuthManagerUser(
                username="admin", role="admin"
            )
            timed(get, hu[:50])
            http_no_auth = stats(timed(get, hu[50:]))
            app.dependency_overrides.clear()
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"http GET /streamrec/api/lookup: {http} (unauthenticated: {unauth})", flush=True)
    print(f"http, token check overridden: {http_no_auth}", flush=True)

    result = {
        "bench": "lookup",
        "items": args.items,
        "users": args.users,
        "rank": args.rank,
        "k": 10,
        "version_write_s": round(write_s, 3),
        "version_load_s": round(load_s, 3),
        "library": library,
        "review_lookup": core,
        "http": http,
        "http_without_token_check": http_no_auth,
        "http_unauthenticated_status": unauth,
        "goal_library_p50_ms": 5.0,
        "goal_met": library["p50_ms"] <= 5.0,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "note": "wall clock on a shared 2-core machine; http: uvicorn and client in one process (shared GIL)",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

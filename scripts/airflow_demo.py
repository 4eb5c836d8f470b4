"""The embedded demo, driven through Airflow's REST API (run by ``scripts/airflow-demo`` after ``airflow-up``).

1. generate a history and partitions (``streamrec.core.synth``; or split a MovieLens ``ratings.csv`` by time with
   ``--ratings``) and one partition that is bad on purpose (a rating of 7.0, a user id 0);
2. put the history in ``ratings/history/`` of the bucket and trigger ``streamrec_bootstrap`` (REST API, token from
   ``/auth/token`` with the generated admin password); wait for it;
3. drop the partitions into ``ratings/incoming/`` one by one (the bad one second) and wait until the update DAG
   has absorbed every one (applied, quarantined or rejected) with no update run active;
4. print a summary: versions, RMSE per version, partitions applied / quarantined / rejected, reports, UI, login.

Configuration comes from ``scripts/airflow-env`` (``AIRFLOW_URL``, ``STREAMREC_BUCKET``, the password file).
Prints one JSON object on its last line (timings included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class _DatabaseBusy(RuntimeError):
    """HTTP 5xx "Database error" from the API server (SQLite busy under Airflow standalone)."""


class Api:
    """A minimal Airflow 3 REST client (``/auth/token`` bearer token, JSON in and out)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base, self.user, self.password = base.rstrip("/"), user, password
        self.token: str | None = None

    # Airflow standalone keeps its metadata in SQLite: while the scheduler holds the write lock (seen right after
    # start-up, when it catches up a scheduled run), a request can fail with HTTP 500 "Database error" (the busy
    # timeout). The transaction was rolled back, so the call is retried; a POST only where it is idempotent
    # (``trigger`` names its run id).
    RETRIES, RETRY_WAIT = 4, 3.0

    def _call(
        self, method: str, path: str, body: dict | None = None, auth: bool = True, retry: bool | None = None
    ) -> dict:
        retry = method != "POST" if retry is None else retry
        for attempt in range(self.RETRIES + 1):
            try:
                return self._call_once(method, path, body, auth)
            except _DatabaseBusy as exc:
                if not retry or attempt == self.RETRIES:
                    raise RuntimeError(str(exc)) from None
                print(
                    f"{method} {path}: Airflow's database was busy; retrying in {self.RETRY_WAIT:.0f}s",
                    file=sys.stderr,
                )
                time.sleep(self.RETRY_WAIT)
        raise AssertionError("unreachable")

    def _call_once(self, method: str, path: str, body: dict | None, auth: bool) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            if self.token is None:
                self.login()
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and auth:  # token expired: log in again once
                self.token = None
                return self._call_once(method, path, body, auth)
            text = exc.read()[:500]
            if exc.code >= 500 and b"Database error" in text:
                raise _DatabaseBusy(f"{method} {path}: HTTP {exc.code}: {text!r}") from None
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {text!r}") from None
        return json.loads(raw) if raw else {}

    def login(self) -> None:
        out = self._call(
            "POST", "/auth/token", {"username": self.user, "password": self.password}, auth=False
        )
        self.token = out["access_token"]

    def get(self, path: str) -> dict:
        return self._call("GET", path)

    def patch(self, path: str, body: dict) -> dict:
        return self._call("PATCH", path, body)

    def post(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body)

    def wait_for_dag(self, dag_id: str, timeout: float) -> None:
        t0 = time.time()
        while True:
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except RuntimeError:
                if time.time() - t0 > timeout:
                    raise
                time.sleep(3)

    def trigger(self, dag_id: str, conf: dict) -> str:
        """Unpause ``dag_id`` and start a run of it with ``conf``; returns the run id. The run id is chosen here
        (Airflow's own ``manual__<time>`` form), so a retried POST cannot start the run twice: HTTP 409 on a
        retry means the first try did create it."""
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        from datetime import UTC, datetime

        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            return self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, retry=True)["dag_run_id"]
        except RuntimeError as exc:  # 409 after a retry: the first try did create it
            if "HTTP 409" in str(exc) and self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"):
                return run_id
            raise

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        t0 = time.time()
        while time.time() - t0 < timeout:
            state = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(5)
        raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")

    def active_runs(self, dag_id: str, states: tuple[str, ...] = ("running", "queued")) -> int:
        query = "&".join(f"state={st}" for st in states)
        out = self.get(f"/api/v2/dags/{dag_id}/dagRuns?{query}&limit=10")
        return int(out.get("total_entries", 0))


def password(user: str) -> str:
    path = Path(os.environ["AIRFLOW_PASSWORD_FILE"])
    for _ in range(60):
        if path.exists():
            return json.loads(path.read_text())[user]
        time.sleep(1)
    raise FileNotFoundError(f"{path} (is Airflow up? scripts/airflow-up)")


def make_data(out: Path, ratings: str | None, n_partitions: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(history files, partition files) written under ``out``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if ratings:
        import pandas as pd

        df = pd.read_csv(ratings).sort_values(["timestamp", "userId", "movieId"], kind="stable")
        cut = int(len(df) * 0.6)
        (out / "history").mkdir()
        (out / "partitions").mkdir()
        df.iloc[:cut].to_csv(out / "history" / "ratings.csv", index=False)
        rest = df.iloc[cut:]
        step = -(-len(rest) // n_partitions)
        for k in range(n_partitions):
            rest.iloc[k * step : (k + 1) * step].to_csv(
                out / "partitions" / f"p-{k + 1:05d}.csv", index=False
            )
    else:
        from streamrec.core.synth import SynthConfig
        from streamrec.core.synth_files import write_dataset

        cfg = SynthConfig(n_users=600, n_items=800, n_ratings=40_000, seed=seed)
        write_dataset(cfg, str(out), n_partitions=n_partitions, history_fraction=0.5)
    history = sorted((out / "history").iterdir())
    parts = sorted((out / "partitions").glob("p-*"))
    bad = out / "partitions" / "p-bad.csv"
    lines = parts[0].read_text().splitlines()
    fields = lines[5].split(",")
    fields[2] = "7.0"  # off the scale
    lines[5] = ",".join(fields)
    fields = lines[9].split(",")
    fields[0] = "0"  # ids are positive
    lines[9] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")
    return history, [parts[0], bad, *parts[1:]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", help="a MovieLens ratings.csv to use instead of generated data")
    ap.add_argument("--partitions", type=int, default=3, help="good partitions to drop (plus one bad)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for everything")
    ap.add_argument("--keep-bucket", action="store_true", help="do not clear a local bucket first")
    args = ap.parse_args(argv)
    if args.ratings is None:
        default = REPO.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"
        print(f"(generated data; `--ratings {default}` runs on MovieLens)" if default.exists() else "")
    from streamrec import pipeline
    from streamrec.storage.bucket import LocalBucket

    t_start = time.time()
    timings: dict[str, float] = {}
    bucket, store = pipeline.open_bucket()
    if isinstance(bucket, LocalBucket) and not args.keep_bucket:
        root = Path(bucket.spark_uri(""))
        for sub in pipeline.LAYOUT:
            shutil.rmtree(root / sub, ignore_errors=True)
        print(f"cleared the local bucket {root}")
    history, parts = make_data(REPO / "var" / "demo-data", args.ratings, args.partitions, args.seed)
    for f in history:
        bucket.write_bytes(f"{pipeline.HISTORY}/{f.name}", f.read_bytes())
    timings["data"] = round(time.time() - t_start, 1)

    user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
    api = Api(os.environ["AIRFLOW_URL"], user, password(user))
    for dag_id in ("streamrec_bootstrap", "streamrec_update", "streamrec_retrain"):
        api.wait_for_dag(dag_id, timeout=300)
    t0 = time.time()
    run = api.trigger(
        "streamrec_bootstrap", {"rank": args.rank, "iterations": args.iterations, "seed": args.seed}
    )
    print(f"triggered streamrec_bootstrap: {run}")
    state = api.wait_run("streamrec_bootstrap", run, args.timeout)
    timings["bootstrap"] = round(time.time() - t0, 1)
    print(f"streamrec_bootstrap {state} in {timings['bootstrap']}s; current version {store.current()}")
    if state != "success":
        print("bootstrap failed: see the run's logs in the UI", file=sys.stderr)
        return 1

    t0 = time.time()
    api.patch("/api/v2/dags/streamrec_update", {"is_paused": False})
    ids = []
    for f in parts:
        bucket.write_bytes(f"{pipeline.INCOMING}/{f.name}", f.read_bytes())
        ids.append(f.stem)
        print(f"dropped {pipeline.INCOMING}/{f.name}")
        time.sleep(1)
    while True:
        s = pipeline.summary(bucket, store)
        done = set(s["applied"]) | set(s["quarantined"]) | set(s["rejected"])
        if set(ids) <= done and api.active_runs("streamrec_update") == 0:
            break
        if time.time() - t0 > args.timeout:
            print(f"timeout: absorbed {sorted(done & set(ids))} of {ids}", file=sys.stderr)
            return 1
        time.sleep(5)
    timings["updates"] = round(time.time() - t0, 1)
    timings["total"] = round(time.time() - t_start, 1)

    print("\n=== streamrec on Airflow: summary ===")
    print(f"{'version':44s} {'kind':9s} {'status':9s} {'RMSE':>7s}  partitions")
    for v in s["versions"]:
        rmse = f"{v['rmse']:.4f}" if v["rmse"] is not None else "-"
        mark = " (current)" if v["version"] == s["current"] else ""
        print(
            f"{v['version']:44s} {v['kind'] or '?':9s} {v['status'] or '?':9s} {rmse:>7s}  {v['partitions']}{mark}"
        )
    print(f"applied:      {s['applied']}")
    print(f"quarantined:  {s['quarantined']}")
    print(f"rejected:     {s['rejected']}")
    print(f"reports:      {s['index']} (gate reports in reports/gates/, Data Docs in reports/datadocs/)")
    print(
        f"UI:           {os.environ['AIRFLOW_URL']}  login {user} / password in {os.environ['AIRFLOW_PASSWORD_FILE']}"
    )
    print(f"timings (s):  {timings}")
    on_cluster = "STREAMREC_CLUSTER_HOME" in os.environ  # set in the cluster's client environment only
    print(f"stop:         {'make cluster-down' if on_cluster else 'scripts/airflow-down'}")
    print(json.dumps({"summary": s, "timings": timings}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

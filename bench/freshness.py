"""Freshness on the embedded stack: from a 10,000-rating partition landing in ``ratings/incoming/`` to its version
being published, broken down by step.

Needs the stack up with a published model (``scripts/airflow-demo`` leaves it so; or ``scripts/airflow-up`` and a
bootstrap). The environment comes from ``scripts/airflow-env``::

    source scripts/airflow-env && .venv/bin/python bench/freshness.py [--rows 10000] [--repeat 1]

Per partition: drop it (one PUT / one atomic write), poll the bucket until a published version holds it, then read
the update run's task instances from the REST API. Steps (seconds, from the drop):

* ``detection``  drop -> end of ``find_new`` (the ``incoming/`` watcher's event, the run's start, the listing)
* ``validation`` ``validate``: the data contract (GX) and Data Docs
* ``spark``      ``update``: the update, the hold-out, seen items and recommendations, the version's writes, over the
                 warm Spark Connect server when ``$STREAMREC_SPARK_REMOTE`` is set (the stacks set it), else one
                 spark-submit (JVM start-up is then most of it)
* ``gate``       ``gate`` (numpy, the three RMSEs on the validation set)
* ``publish``    ``publish`` (pointer + Asset event)
* ``overhead``   the rest (scheduling gaps between tasks)

The update run that applied a partition is found the way the DAG records it: the published version whose
manifest's ``new_partitions`` names the partition, then the run whose ``validate`` task returned that ``version``
(its ``return_value`` XCom: ``{"version", "partitions", ...}``; one run may apply a batch of partitions).

Prints one JSON line per partition, then, on its last line, one JSON object with the top-level keys ``bench``
(``"freshness"``), ``rows``, ``runs`` (per partition: ``partition``, ``rows``, ``run_id``, ``version``,
``total``, ``detection``, ``validation``, ``spark``, ``gate``, ``publish``, ``overhead``; or ``partition`` and
``rejected``), ``published`` (how many were published), ``summary`` (per step and ``total``: ``n``, ``median``
= p50, ``p90``, ``max``, ``mean``, ``total``), ``best_total``, ``goal_p50_s`` (15 on the embedded stack, 30 on
the cluster topology: ``$STREAMREC_CLUSTER_HOME`` set), ``topology``, ``spark_path`` (``connect`` or
``spark-submit``), ``loadavg``. Exit code 0 when every partition was published, 1 otherwise (rejected by the gate or quarantined
by the contract, or no published model to start from; a time-out raises).

Goal (issue 17): p50 of ``total`` <= 15 s embedded, <= 30 s on the cluster, over at least 5 partitions
(``--repeat 5``). ``--rows 1000 --repeat 1`` is the smoke run of the test suite
(``tests/test_scheduler_restart.py``, on the Airflow that test starts anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from airflow_demo import Api, password  # noqa: E402  (scripts/airflow_demo.py: the REST client)

DAG = "streamrec_update"
STEPS = {
    "validation": ["validate"],
    "spark": ["update"],
    "gate": ["gate"],
    "publish": ["publish"],
}
KEYS = ("total", "detection", *STEPS, "overhead")


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def partition_csv(rows: int, seed: int, k: int = 0, users: int = 600, items: int = 800) -> bytes:
    """The last ``rows`` ratings of a stream from the demo's generator config (``scripts/airflow_demo.py``: 600
    users, 800 items, the same seed, so the same planted model: the same kind of users and items), as CSV."""
    import tempfile

    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset

    cfg = SynthConfig(n_users=users, n_items=items, n_ratings=40_000 + rows + k, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(
            cfg, tmp, n_partitions=1, partition_size=rows, history_fraction=1 - rows / cfg.n_ratings
        )
        parts = sorted((Path(tmp) / "partitions").glob("p-*"))
        return parts[-1].read_bytes()


def applied_by(store, pid: str) -> str:
    """The version that added ``pid`` to the lineage: a published update version whose ``new_partitions``
    (written by the gate) names it."""
    from streamrec import pipeline

    for m in sorted(store.list_versions(), key=lambda m: m["version"], reverse=True):
        if m.get("kind") == "update" and pid in pipeline.new_partitions(store, m):
            return m["version"]
    raise LookupError(f"no version holds {pid}")


def _xcom(api: Api, run_id: str, task_id: str, key: str = "return_value"):
    x = api.get(
        f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}"
    )
    value = x.get("value")
    if isinstance(value, str):  # stringified by some API versions
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    return value


def find_run(api: Api, version: str, since: float) -> dict:
    """The update run (started after ``since`` - 60 s) whose ``validate`` returned ``version`` as its plan."""
    runs = api.get(
        f"/api/v2/dags/{DAG}/dagRuns?order_by=-start_date&limit=100&start_date_gte={quote(_iso(since - 60))}"
    )["dag_runs"]
    for run in runs:
        try:
            plan = _xcom(api, run["dag_run_id"], "validate")
        except RuntimeError:  # short-circuited before validate, or no XCom
            continue
        if isinstance(plan, dict) and plan.get("version") == version:
            return run
    raise LookupError(f"no {DAG} run planned version {version} (looked at {len(runs)} runs)")


def breakdown(tis: list[dict], t_drop: float, t_pub: float) -> dict:
    """Seconds per step from the run's task instances (``start_date``/``end_date``); ``overhead`` = the rest.
    A step whose task has not finished yet is None (and so is ``overhead``)."""
    by = {t["task_id"]: t for t in tis}

    def dur(task_ids: list[str]) -> float | None:
        spans = [(_ts(by[t].get("start_date")), _ts(by[t].get("end_date"))) for t in task_ids if t in by]
        if any(a is None or b is None for a, b in spans):
            return None
        return round(sum(b - a for a, b in spans), 2)

    find_end = _ts((by.get("find_new") or {}).get("end_date"))
    out = {
        "total": round(t_pub - t_drop, 2),
        "detection": round(find_end - t_drop, 2) if find_end is not None else None,
    }
    out.update({k: dur(v) for k, v in STEPS.items()})
    parts = [out[k] for k in ("detection", *STEPS)]
    out["overhead"] = None if None in parts else round(out["total"] - sum(parts), 2)
    return out


def finished_tis(api: Api, run_id: str, timeout: float = 120) -> list[dict]:
    """The run's task instances once every step's task has an ``end_date`` (the bucket shows the new pointer
    while ``publish`` is still recording its Asset event and its own end), or what there is after ``timeout``."""
    needed = {"find_new", *(t for ts in STEPS.values() for t in ts)}
    t0 = time.time()
    while True:
        tis = api.get(f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances")["task_instances"]
        if all(t.get("end_date") for t in tis if t["task_id"] in needed) or time.time() - t0 > timeout:
            return tis
        time.sleep(1)


def measure(api: Api, bucket, store, rows: int, seed: int, k: int, timeout: float, **gen) -> dict:
    from streamrec import pipeline

    pid = f"bench-{int(time.time())}-{k}"
    data = partition_csv(rows, seed, k, **gen)
    t_drop = time.time()
    bucket.write_bytes(f"{pipeline.INCOMING}/{pid}.csv", data)
    while True:
        cur = store.current()
        if cur and pid in store.read_manifest(cur).get("partitions", []):
            t_pub = time.time()
            break
        rej = pipeline.rejected_partitions(store)
        if pid in rej:
            return {"partition": pid, "rejected": rej[pid]}
        if pid in pipeline.quarantined(bucket):
            return {"partition": pid, "rejected": "quarantined by the data contract"}
        if time.time() - t_drop > timeout:
            raise TimeoutError(f"{pid} not published after {timeout}s")
        time.sleep(0.5)
    version = applied_by(store, pid)
    run = find_run(api, version, t_drop)
    rid = run["dag_run_id"]
    tis = finished_tis(api, rid)
    return {
        "partition": pid,
        "rows": rows,
        "run_id": rid,
        "version": version,
        **breakdown(tis, t_drop, t_pub),
    }


def summarise(results: list[dict]) -> dict:
    """Per step over the published partitions: n, median (p50), p90, max, mean, total (seconds)."""
    done = [r for r in results if "total" in r]
    out = {}
    for key in KEYS:
        a = np.asarray([r[key] for r in done if r.get(key) is not None], dtype=float)
        out[key] = (
            {
                "n": int(a.size),
                "median": round(float(np.median(a)), 2),
                "p90": round(float(np.percentile(a, 90)), 2),
                "max": round(float(a.max()), 2),
                "mean": round(float(a.mean()), 2),
                "total": round(float(a.sum()), 2),
            }
            if a.size
            else {"n": 0, "median": None, "p90": None, "max": None, "mean": None, "total": 0.0}
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1, help="partitions, measured one after the other")
    ap.add_argument("--seed", type=int, default=42, help="the demo's generator seed")
    ap.add_argument("--users", type=int, default=600, help="the generator's users (the demo's: 600)")
    ap.add_argument("--items", type=int, default=800, help="the generator's items (the demo's: 800)")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args(argv)
    from streamrec import pipeline

    bucket, store = pipeline.open_bucket()
    if store.current() is None:
        print("no published model: run scripts/airflow-demo (or bootstrap) first", file=sys.stderr)
        return 1
    user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
    api = Api(os.environ["AIRFLOW_URL"], user, password(user))
    results = []
    for k in range(args.repeat):
        r = measure(
            api, bucket, store, args.rows, args.seed, k, args.timeout, users=args.users, items=args.items
        )
        print(json.dumps(r), flush=True)
        results.append(r)
    totals = [r["total"] for r in results if "total" in r]
    print(
        json.dumps(
            {
                "bench": "freshness",
                "rows": args.rows,
                "runs": results,
                "published": len(totals),
                "summary": summarise(results),
                "best_total": min(totals) if totals else None,
                "goal_p50_s": 30 if os.environ.get("STREAMREC_CLUSTER_HOME") else 15,
                "topology": "cluster" if os.environ.get("STREAMREC_CLUSTER_HOME") else "embedded",
                "spark_path": "connect" if os.environ.get("STREAMREC_SPARK_REMOTE") else "spark-submit",
                "loadavg": list(os.getloadavg()),
            }
        ),
        flush=True,
    )
    return 0 if len(totals) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Freshness on the embedded stack: from a 10,000-rating partition landing in ``ratings/incoming/`` to its version
being published, broken down by step.

Needs the stack up with a published model (``scripts/airflow-demo`` leaves it so; or ``scripts/airflow-up`` and a
bootstrap). The environment comes from ``scripts/airflow-env``::

    source scripts/airflow-env && .venv/bin/python bench/freshness.py [--rows 10000] [--repeat 1]

Per partition: drop it (one PUT / one atomic write), poll the bucket until a published version holds it, then read
the update run's task instances from the REST API. Steps (seconds, from the drop):

* ``detection``  drop -> end of ``find_new`` (waiting for the 30 s schedule + listing)
* ``validation`` ``validate``: the data contract (GX) and Data Docs
* ``spark``      ``update`` (one spark-submit: update + evaluation on the validation set; JVM start-up is most of it)
* ``gate``       ``gate`` (numpy, the three RMSEs on the validation set)
* ``publish``    ``publish`` (pointer + Asset event)
* ``overhead``   the rest (scheduling gaps between tasks)

Prints one JSON object on its last line. Goal: total <= 60 s; beyond: <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from airflow_demo import Api, password  # noqa: E402  (scripts/airflow_demo.py: the REST client)

STEPS = {
    "validation": ["validate"],
    "spark": ["update"],
    "gate": ["gate"],
    "publish": ["publish"],
}


def _ts(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def partition_csv(rows: int, seed: int, k: int = 0) -> bytes:
    """The last ``rows`` ratings of a stream from the demo's generator config (``scripts/airflow_demo.py``: 600
    users, 800 items, the same seed, so the same kind of users and items), as CSV."""
    import tempfile

    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset

    cfg = SynthConfig(n_users=600, n_items=800, n_ratings=40_000 + rows + k, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(
            cfg, tmp, n_partitions=1, partition_size=rows, history_fraction=1 - rows / cfg.n_ratings
        )
        parts = sorted((Path(tmp) / "partitions").glob("p-*"))
        return parts[-1].read_bytes()


def find_run(api: Api, pid: str, since: float) -> dict:
    runs = api.get("/api/v2/dags/streamrec_update/dagRuns?order_by=-start_date&limit=20")["dag_runs"]
    for run in runs:
        if (_ts(run.get("start_date")) or 0) < since - 60:
            continue
        rid = run["dag_run_id"]
        try:
            x = api.get(
                f"/api/v2/dags/streamrec_update/dagRuns/{rid}/taskInstances/validate/xcomEntries/partition"
            )
        except RuntimeError:
            continue
        if json.loads(json.dumps(x.get("value"))) in (pid, f'"{pid}"'):
            return run
    raise LookupError(f"no update run found for {pid}")


def measure(api: Api, bucket, store, rows: int, seed: int, k: int, timeout: float) -> dict:
    from streamrec import pipeline

    pid = f"bench-{int(time.time())}"
    data = partition_csv(rows, seed, k)
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
        if time.time() - t_drop > timeout:
            raise TimeoutError(f"{pid} not published after {timeout}s")
        time.sleep(1)
    run = find_run(api, pid, t_drop)
    tis = api.get(f"/api/v2/dags/streamrec_update/dagRuns/{run['dag_run_id']}/taskInstances")[
        "task_instances"
    ]
    by = {t["task_id"]: t for t in tis}

    def dur(task_ids: list[str]) -> float:
        return round(
            sum((_ts(by[t]["end_date"]) or 0) - (_ts(by[t]["start_date"]) or 0) for t in task_ids if t in by),
            2,
        )

    out = {
        "partition": pid,
        "rows": rows,
        "run_id": run["dag_run_id"],
        "total": round(t_pub - t_drop, 2),
        "detection": round((_ts(by["find_new"]["end_date"]) or t_drop) - t_drop, 2),
    }
    out.update({k: dur(v) for k, v in STEPS.items()})
    out["overhead"] = round(out["total"] - sum(out[k] for k in ("detection", *STEPS)), 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42, help="the demo's generator seed")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    from streamrec import pipeline

    bucket, store = pipeline.open_bucket()
    if store.current() is None:
        print("no published model: run scripts/airflow-demo (or bootstrap) first", file=sys.stderr)
        return 1
    user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
    api = Api(os.environ["AIRFLOW_URL"], user, password(user))
    results = []
    for k in range(args.repeat):
        r = measure(api, bucket, store, args.rows, args.seed, k, args.timeout)
        print(json.dumps(r))
        results.append(r)
    totals = [r["total"] for r in results if "total" in r]
    print(
        json.dumps(
            {
                "bench": "freshness",
                "rows": args.rows,
                "runs": results,
                "best_total": min(totals) if totals else None,
                "goal_s": 60,
                "stretch_s": 30,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

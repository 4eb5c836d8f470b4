"""Warm a freshly started Spark Connect server for the update path: one throwaway update in the lane's session.

    STREAMREC_SPARK_REMOTE=sc://127.0.0.1:15002 python -m streamrec.spark.warmup [--lane L] [--workdir var/connect]

A cold server's first update of a 10,000-rating partition took 12-16 s against ~8 s warm (``docs/STREAMING.md``
§4): the JIT has compiled none of Spark's query paths yet, and the lane's Python daemon and UDF workers (one
daemon per Connect session, SPARK-54055) start with its first grouped-map task, importing pandas, numpy and
streamrec there. This runs the same code once on tiny generated data, before any partition waits for it:
``runs.bootstrap_version`` (rank 2, one iteration, the default time terms, a 10 % hold-out, seen items and
recommendations) and ``runs.update_version`` of one partition, in a throwaway store under ``--workdir`` (a local
folder the server can read: the embedded stack's; it is deleted afterwards). With ``--lane`` the jobs run in
that lane's session (``streamrec.spark.session``; default ``launch.connect.UPDATE_LANE``, the update task's), so
the update task's first job finds its daemon started.

Run it only while nothing else uses the lane: a lane's job interrupts what the lane still runs
(``scripts/connect-server start`` calls it before Airflow starts). A failure is reported, never raised: a cold
server is slower, not wrong. Prints one JSON line: ``seconds`` per step, or ``error``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from streamrec.core.params import BootstrapParams
from streamrec.core.synth import SynthConfig
from streamrec.core.synth_files import write_dataset
from streamrec.launch import connect
from streamrec.storage.store import ModelStore

WARMUP_DATA = SynthConfig(n_users=150, n_items=200, n_ratings=4_000, seed=7)
"""The generated data: 4,000 ratings, of which the last 1,000 are the update's partition."""


def warm(workdir: Path) -> dict[str, float]:
    """Bootstrap and update a throwaway model under ``workdir`` with the session ``get_session`` gives (the
    server of ``$STREAMREC_SPARK_REMOTE``, the lane of ``$STREAMREC_CONNECT_SESSION``); seconds per step."""
    from streamrec.spark import runs
    from streamrec.spark.session import get_session

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="warmup-", dir=workdir))
    try:
        write_dataset(
            WARMUP_DATA, str(tmp / "data"), n_partitions=1, partition_size=1_000, history_fraction=0.75
        )
        spark = get_session("streamrec-warmup")
        seconds["session"] = round(time.perf_counter() - t0, 3)
        store = ModelStore(str(tmp / "bucket"))
        t = time.perf_counter()
        base = runs.bootstrap_version(
            spark,
            store,
            [str(tmp / "data" / "history")],
            BootstrapParams(rank=2, iterations=1),
            holdout=runs.Holdout(str(tmp / "bucket" / "validation")),
        )["version"]
        store.publish(base)
        seconds["bootstrap"] = round(time.perf_counter() - t, 3)
        (part,) = sorted((tmp / "data" / "partitions").glob("p-*"))
        t = time.perf_counter()
        runs.update_version(spark, store, [("warmup", str(part))], base=base)
        seconds["update"] = round(time.perf_counter() - t, 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds["total"] = round(time.perf_counter() - t0, 3)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--lane",
        default=connect.UPDATE_LANE,
        help=f"the lane whose session to warm (default {connect.UPDATE_LANE})",
    )
    ap.add_argument("--workdir", default=os.environ.get("STREAMREC_CONNECT_DIR", "var/connect"))
    args = ap.parse_args(argv)
    if not os.environ.get("STREAMREC_SPARK_REMOTE"):
        print(json.dumps({"warmup": "skipped", "why": "STREAMREC_SPARK_REMOTE is not set"}))
        return 0
    os.environ[connect.SESSION_TAG_ENV] = args.lane
    try:
        out = {"warmup": "done", "lane": args.lane, "seconds": warm(Path(args.workdir).resolve() / "warmup")}
    except Exception as exc:  # noqa: BLE001 - a cold server is slower, not wrong
        out = {"warmup": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The cluster topology under load: drop-to-publish, a 2M-rating bootstrap on 1 and on 2 workers, a 100k update.

    .venv/bin/python bench/cluster.py [--history 2000000] [--update-rows 100000] [--fresh-rows 10000]
                                      [--fresh-repeat 1] [--rank 10] [--iterations 5] [--skip-2m]
                                      [--home var/bench-cluster] [--keep]

Starts a cluster of its own (``scripts/cluster_launcher.py``: PostgreSQL, moto, a Spark master and two workers of
one core and 2 GB each, Airflow's four services; fresh secrets, free ports, ``--home``), then:

1. ``make demo``'s bootstrap through Airflow (the demo's 40k generated ratings, ``scripts/airflow_demo.py``'s data),
   timed;
2. **drop-to-publish** of a ``--fresh-rows`` partition and of a ``--update-rows`` partition through the update
   DAG, broken down like ``bench/freshness.py`` (detection, validation, spark, gate, publish, overhead), whose
   ``measure`` it calls; the update task is a client of the ``spark-connect`` service (``update_path``: its
   application and the workers its executors ran on; no ``streamrec-update`` application of its own).
   ``--fresh-repeat N``: N ``--fresh-rows`` partitions one after another, with ``freshness``'s p50 / p90 per
   step (``freshness_summary``; issue 17's cluster goal: p50 <= 30 s over at least 5); ``--update-rows 0``
   leaves the big partition out;
3. **a ``--history``-rating bootstrap** (generated: 20,000 users, 5,000 items), ``jobs/bootstrap.py`` submitted to
   the master as the DAG's task does, once with worker 2 stopped (one executor, one core) and once with both:
   wall time, ALS fit time, the executors' memory (the master's ``memoryperexecutor``) and the peak RSS per process
   kind (driver JVM, driver Python, each executor JVM, the executors' Python workers; sampled every second from
   ``/proc``).

On a 2-core machine two workers of one core cannot beat one: the driver, both executors, their Python workers,
Airflow and PostgreSQL share the same two cores, so expect no speed-up (reported as measured). Prints one JSON
object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))

import cluster_data as cl  # noqa: E402

ROLES = (
    ("executor JVM", "CoarseGrainedExecutorBackend"),
    ("worker JVM", "deploy.worker.Worker"),
    ("driver JVM", "deploy.SparkSubmit"),
    ("executor Python", "pyspark.daemon"),
    ("driver Python", "jobs/bootstrap.py"),
)


class RssSampler:
    """Peak resident memory per process kind of the processes whose command line matches :data:`ROLES`
    (every ``interval`` s, in a thread, while the ``with`` block runs): the largest process of each kind and the
    largest sum over a kind at one instant."""

    def __init__(self, root_pids: list[int], interval: float = 1.0) -> None:
        self.roots, self.interval = root_pids, interval
        self.peak: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        info: dict[int, tuple[str, int]] = {}
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                stat = p.joinpath("stat").read_text().rsplit(")", 1)[1].split()
                cmd = p.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                rss = int(p.joinpath("statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(int(stat[1]), []).append(int(p.name))
            info[int(p.name)] = (cmd, rss)
        todo, seen = list(self.roots), set()
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo += children.get(pid, [])
        sums: dict[str, float] = {}
        for pid in seen:
            cmd, rss = info.get(pid, ("", 0))
            role = next((r for r, pat in ROLES if pat in cmd), None)
            if role is None:
                continue
            mb = rss / 2**20
            peak = self.peak.setdefault(role, {"max_process_mb": 0.0, "max_sum_mb": 0.0})
            peak["max_process_mb"] = round(max(peak["max_process_mb"], mb), 1)
            sums[role] = sums.get(role, 0.0) + mb
        for role, total in sums.items():
            self.peak[role]["max_sum_mb"] = round(max(self.peak[role]["max_sum_mb"], total), 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def worker_roots(c: cl.Private) -> list[int]:
    out = []
    for p in (c.home / "run").glob("spark-worker-*.child"):
        out.append(json.loads(p.read_text())["pid"])
    return out


def history_2m(c: cl.Private, n: int, work: Path) -> str:
    """A generated history of ``n`` ratings uploaded (boto3) to ``bench/history-<n>/``; returns its s3a URI."""
    from streamrec import pipeline
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset

    bucket, _ = pipeline.open_bucket()
    prefix = f"bench/history-{n}"
    if not bucket.exists(f"{prefix}/_DONE"):
        cfg = SynthConfig(n_users=20_000, n_items=5_000, n_ratings=n, seed=11)
        write_dataset(cfg, str(work / "h2m"), n_partitions=1, history_fraction=1.0)
        for f in sorted((work / "h2m" / "history").iterdir()):
            bucket.write_bytes(f"{prefix}/{f.name}", f.read_bytes())
        bucket.write_bytes(f"{prefix}/_DONE", b"")
    return bucket.spark_uri(prefix)


def bootstrap_job(c: cl.Private, ratings: str, workers: int, rank: int, iterations: int) -> dict:
    """``jobs/bootstrap.py`` on the cluster as the DAG's task submits it (client mode, the entrypoint's private
    Spark conf with the secret), into its own prefix of the bucket; ``workers`` of the two running."""
    from streamrec import pipeline
    from streamrec.launch import jvm, s3a

    if workers == 1:
        c.launcher("stop", "spark-worker-2")
    env = c.client_env()
    master = env["SPARK_MASTER_URL"]
    py = env["STREAMREC_PYTHON"]
    target = f"{env['STREAMREC_BUCKET'].rstrip('/')}/bench-2m-{workers}w"
    cmd = [
        str(cl.cs.ENTRYPOINT), "spark-submit", "--master", master, "--deploy-mode", "client",
        "--driver-memory", env.get("STREAMREC_DRIVER_MEMORY", "2g"),
        "--conf", f"spark.pyspark.python={py}", "--conf", f"spark.pyspark.driver.python={py}",
        "--conf", "spark.ui.enabled=false", "--conf", f"spark.driver.extraJavaOptions={jvm.driver_java_options()}",
        *s3a.submit_args(env),
        str(REPO / "jobs" / "bootstrap.py"), "--bucket", target, "--ratings", ratings,
        "--rank", str(rank), "--iterations", str(iterations),
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    with RssSampler([proc.pid, *worker_roots(c)]) as rss:
        out, _ = proc.communicate()
    wall = round(time.time() - t0, 1)
    log = REPO / "var" / "bench-cluster-logs" / f"bootstrap-{workers}w.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    if workers == 1:
        c.launcher("start", "spark-worker-2")
    if proc.returncode != 0:
        return {"workers": workers, "error": out[-3000:]}
    # the job names its own application (``streamrec.spark.session``: its appName wins over --name): ours is the
    # one application that started after the submission
    state = cl.spark_state(c.topology())
    started = [a for a in state["completedapps"] if a["starttime"] >= t0 * 1000 - 1000]
    if len(started) != 1:
        return {"workers": workers, "error": f"expected one application, found {started}", "log": str(log)}
    app = started[0]
    _, store = pipeline.open_bucket(target)
    manifest = store.list_versions()[-1]
    return {
        "workers": workers,
        "executors_on": len(app["workers"]),
        "cores": app["cores"],
        "executor_memory_mb": app.get("memoryperexecutor"),
        "wall_s": wall,
        "app_duration_s": round(app["duration"] / 1000, 1),
        "fit_s": (manifest.get("metrics") or {}).get("fit_seconds"),
        "n_ratings": manifest.get("n_ratings"),
        "peak_rss": rss.peak,
    }


def update_path(c: cl.Private) -> dict:
    """How the updates ran: over the ``spark-connect`` service (its one application, ``streamrec-connect``, and
    the workers its executors ran on) or as applications of their own (``streamrec-update``, spark-submit)."""
    state = cl.spark_state(c.topology())
    apps = state["activeapps"] + state["completedapps"]
    served = [a for a in apps if a["name"] == "streamrec-connect"]
    return {
        "remote": c.client_env().get("STREAMREC_SPARK_REMOTE"),
        "update_applications": sum(a["name"] == "streamrec-update" for a in apps),
        "connect_applications": [
            {"id": a["id"], "state": a["state"], "executors_on": len(a["workers"])} for a in served
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, default=2_000_000)
    ap.add_argument("--update-rows", type=int, default=100_000)
    ap.add_argument("--fresh-rows", type=int, default=10_000)
    ap.add_argument("--fresh-repeat", type=int, default=1, help="--fresh-rows partitions, one after another")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--skip-2m", action="store_true", help="leave out the big bootstrap")
    ap.add_argument("--home", default=str(REPO / "var" / "bench-cluster"))
    ap.add_argument("--keep", action="store_true", help="leave the cluster running (cluster_launcher down)")
    args = ap.parse_args(argv)

    out: dict = {"bench": "cluster", "cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    c = cl.Private(Path(args.home))
    t0 = time.time()
    c.launcher("up")
    out["up_s"] = round(time.time() - t0, 1)
    try:
        os.environ.update(c.client_env())
        from airflow_demo import Api, make_data, password
        from freshness import measure, summarise

        from streamrec import pipeline

        bucket, store = pipeline.open_bucket()
        history, _ = make_data(Path(args.home) / "demo-data", None, 1, 42)
        for f in history:
            bucket.write_bytes(f"{pipeline.HISTORY}/{f.name}", f.read_bytes())
        user = os.environ["AIRFLOW_ADMIN_USER"]
        api = Api(os.environ["AIRFLOW_URL"], user, password(user))
        for dag_id in ("streamrec_bootstrap", "streamrec_update"):
            api.wait_for_dag(dag_id, timeout=600)
        t1 = time.time()
        run = api.trigger("streamrec_bootstrap", {"rank": 8, "iterations": 8, "seed": 42})
        state = api.wait_run("streamrec_bootstrap", run, 3600)
        out["demo_bootstrap"] = {"state": state, "s": round(time.time() - t1, 1), "version": store.current()}
        print(json.dumps(out["demo_bootstrap"]), file=sys.stderr)
        api.patch("/api/v2/dags/streamrec_update", {"is_paused": False})
        fresh = []
        for k in range(args.fresh_repeat):  # k: the partition's offset in the generated stream
            fresh.append(measure(api, bucket, store, args.fresh_rows, 42, 2 * k, 3600))
            print(json.dumps(fresh[-1]), file=sys.stderr)
        out["freshness"] = fresh[0]
        if args.fresh_repeat > 1:
            out["freshness_runs"] = fresh
            out["freshness_summary"] = summarise(fresh)
            print(json.dumps(out["freshness_summary"]), file=sys.stderr)
        if args.update_rows > 0:
            out["update_100k"] = measure(api, bucket, store, args.update_rows, 42, 1, 3600)
            print(json.dumps(out["update_100k"]), file=sys.stderr)
        out["update_path"] = update_path(c)
        print(json.dumps(out["update_path"]), file=sys.stderr)
        if not args.skip_2m:
            api.patch(
                "/api/v2/dags/streamrec_update", {"is_paused": True}
            )  # the cluster to the big jobs alone
            ratings = history_2m(c, args.history, Path(args.home))
            runs = {}
            for workers in (1, 2):
                runs[f"{workers}_worker"] = bootstrap_job(c, ratings, workers, args.rank, args.iterations)
                print(json.dumps(runs[f"{workers}_worker"]), file=sys.stderr)
            one, two = runs["1_worker"].get("wall_s"), runs["2_worker"].get("wall_s")
            runs["speedup_2_over_1"] = round(one / two, 2) if one and two else None
            out[f"bootstrap_{args.history}"] = runs
    finally:
        out["loadavg_end"] = os.getloadavg()
        if not args.keep:
            c.launcher("down", "--purge", timeout=900, check=False)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reliability under load and under a scheduler crash, on a real Airflow with real Spark jobs.

    python bench/reliability_load.py [--partitions 200] [--partition-size 500] [--per-run 25] [--workdir DIR]
    python bench/reliability_load.py --scheduler-restart [--freshness-rows 1000] [--workdir DIR]

Both start their own Airflow (``AIRFLOW_HOME`` and a bucket under a temporary folder, SQLite, the
LocalExecutor, a free port, DAGs and plugins from this repository: the environment ``scripts/airflow-env``
builds) and stop exactly the processes they started (each component is started in its own session; every
process of those sessions is signalled, orphans included). Each prints one JSON object on its last line.

:func:`run_load` (issue 5, load): ``airflow standalone``; a small generated model bootstrapped through the
``streamrec_bootstrap`` DAG (REST API); then ``n_partitions`` generated partitions dropped *at once* into
``ratings/incoming/`` in a shuffled name order (the arrival order is the drop order, by mtime, not the names),
``streamrec_update`` unpaused with ``STREAMREC_MAX_PARTITIONS_PER_RUN`` set, and nothing else done until every
partition is in the published lineage. Reports:

* ``partitions_per_min``, ``ratings_per_s``, ``wall_s`` (first drop -> last partition published);
* ``arrival_order_respected``: the published lineage equals the drop order; ``exactly_once``: every id once,
  none missing, nothing quarantined or rejected;
* ``rss_mb``: peak resident memory (``/proc``, sampled every second) of the task processes (LocalExecutor
  workers, task runners) plus the Spark processes they start (the ``spark-submit`` JVM, its Python driver and
  workers), and of each Airflow component; ``bounded_memory``: the worker+Spark peak while the last quarter of
  the backlog was applied is not above the peak of the first quarter (+15 %, plus 200 MB of noise for
  a JVM's heap that is only collected when needed): memory follows the batch, not the backlog;
* ``update_runs`` (runs that built a candidate), ``dag_runs`` (including the ones that found nothing new).

:func:`run_scheduler_restart` (the "scheduler restart" fault; ``tests/test_scheduler_restart.py``): the
Airflow components as separate processes (``api-server``, ``dag-processor``, ``scheduler``: what the
docker-compose deployment runs), a small model bootstrapped with ``jobs/bootstrap.py``, four partitions dropped,
two per run. While the first run's ``update`` task is running its Spark job, the scheduler's whole process tree
is killed with SIGKILL, then the scheduler is started again. SIGKILL of the tree, not SIGTERM of one process,
because that is what a scheduler crash is with the LocalExecutor: the task processes and the Spark driver are the
scheduler's children, in its container or pod, so an OOM kill, a node loss or ``docker kill`` takes them all at
once, mid-write, without any clean-up (a SIGTERM is a graceful shutdown: the scheduler drains its executor and
nothing interesting happens). The task instance is left ``running`` with nobody heartbeating; the new scheduler
finds it (task heartbeat timeout or orphan reset, set low here) and retries it; the retry rewrites the same
candidate id. ``checks``: every partition exactly once in the lineage, in arrival order; the published model
equals a clean run of the same partitions (``jobs/update.py`` with all four, in one application, into a copy of
the bootstrapped bucket: arrays compared bit for bit); the pointer names a complete version (manifest, every
listed file present with its size, readable); the Spark job was in fact killed mid-run; every update run ended
``success`` and no task instance is left failed (a killed try is followed by one that succeeded). With
``--freshness-rows N``, ``bench/freshness.py`` then measures one more partition of N ratings on the same Airflow
(``freshness``: its exit code and JSON line); ``tests/test_scheduler_restart.py`` runs it so.

Not in ``tests/test_bench.py``: both modes start their own Airflow; the scheduler-restart mode is
``tests/test_scheduler_restart.py``, the load mode takes minutes even for two partitions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from airflow_demo import Api  # noqa: E402  (scripts/airflow_demo.py: the REST client)

VENV_BIN = Path(sys.executable).parent
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
SCALE = "0.5:5:0.5"


# ------------------------------------------------------------------------------------------------------------
# processes: everything a component started shares its session id (task runners change their process group,
# not their session), so a session is what we signal and measure
# ------------------------------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, session id) of ``pid``, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[3])


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid`` (zombies excluded: they only wait to be reaped)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st and st[1] == sid and st[0] not in ("Z", "X"):
                out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def category(cmd: str) -> str:
    """What a process of the stack is, from its command line (Airflow sets process titles)."""
    if "org.apache.spark" in cmd or "pyspark.daemon" in cmd or "/jobs/" in cmd:
        return "spark"
    if "airflow worker --" in cmd or "LocalExecutor" in cmd or "airflow supervisor" in cmd:
        return "task"
    for name, keys in (
        ("scheduler", ("scheduler",)),
        ("api_server", ("api_server", "api-server", "uvicorn", "gunicorn")),
        ("dag_processor", ("dag-processor", "dag_processor", "DagFileProcessor")),
        ("triggerer", ("triggerer",)),
        ("standalone", ("standalone",)),
    ):
        if any(k in cmd for k in keys):
            return name
    return "other"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, bucket: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment ``scripts/airflow-env`` builds, for a home, bucket and port of our own."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "STREAMREC_HOME": str(REPO),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # we unpause the update DAG when the data is in
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
        "STREAMREC_BUCKET": str(bucket),
        "STREAMREC_PYTHON": sys.executable,
        "STREAMREC_DRIVER_MEMORY": "1g",
        "SPARK_LOCAL_IP": "127.0.0.1",
        **extra,
    }


class Stack:
    """Airflow processes we started (one session each), their logs under ``home``, a REST client."""

    def __init__(self, home: Path, bucket: Path, port: int | None = None, **extra: str) -> None:
        self.home, self.bucket = home, bucket
        self.port = port or free_port()
        self.env = airflow_env(home, bucket, self.port, **extra)
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{self.port}"
        home.mkdir(parents=True, exist_ok=True)

    def migrate(self) -> subprocess.Popen:
        """``airflow db migrate`` in the background (wait on the returned process)."""
        log = open(self.home / "migrate.log", "ab")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [str(VENV_BIN / "airflow"), "db", "migrate"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start(self, name: str, *command: str) -> int:
        """Start ``airflow <command>`` as ``name`` in a new session; returns its session id."""
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [str(VENV_BIN / "airflow"), *command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc.pid

    def pids(self, name: str | None = None) -> list[int]:
        names = [name] if name else list(self.procs)
        return [pid for n in names if n in self.procs for pid in session_pids(self.procs[n].pid)]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> list[dict]:
        """Signal every process of ``name``'s session (with SIGKILL: again until none is left, so a child
        forked meanwhile is caught too); returns what was signalled."""
        hit: dict[int, dict] = {}
        for _ in range(20 if sig == signal.SIGKILL else 1):
            pids = [p for p in self.pids(name) if p not in hit or sig == signal.SIGKILL]
            if not pids:
                break
            for pid in pids:
                cmd = _cmdline(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    hit.setdefault(pid, {"pid": pid, "category": category(cmd), "cmd": cmd[:160]})
            time.sleep(0.1)
        proc = self.procs.get(name)
        if proc is not None and sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return list(hit.values())

    def stop(self) -> None:
        """SIGTERM every process of our sessions, then SIGKILL what is left after 20 s."""
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        t0 = time.time()
        while self.pids() and time.time() - t0 < 20:
            time.sleep(0.5)
        for name in list(self.procs):
            self.kill(name, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def health(self) -> dict:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    def wait_healthy(self, timeout: float = 300, need: tuple[str, ...] = ("scheduler",)) -> float:
        t0 = time.time()
        while True:
            h = self.health()
            if h and all((h.get(k) or {}).get("status") == "healthy" for k in need):
                return time.time() - t0
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"airflow {dead} exited; see {self.home}/{dead[0]}.log")
            if time.time() - t0 > timeout:
                raise TimeoutError(f"airflow not healthy after {timeout:.0f}s: {h}")
            time.sleep(1)

    def api(self, timeout: float = 120) -> Api:
        path = self.home / PASSWORD_FILE
        t0 = time.time()
        while not path.exists():
            if time.time() - t0 > timeout:
                raise FileNotFoundError(path)
            time.sleep(1)
        return Api(self.url, "admin", json.loads(path.read_text())["admin"])


class Sampler(threading.Thread):
    """Every ``every`` s: resident memory per category of the stack's processes, and the lineage length."""

    def __init__(self, stack: Stack, store, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.stack, self.store, self.every = stack, store, every
        self.samples: list[dict] = []
        self.halt = threading.Event()

    def applied(self) -> int:
        try:
            cur = self.store.current()
            return len(self.store.read_manifest(cur).get("partitions", [])) if cur else 0
        except (OSError, LookupError, ValueError):
            return -1

    def run(self) -> None:
        while not self.halt.is_set():
            by: dict[str, float] = {}
            for pid in self.stack.pids():
                c = category(_cmdline(pid))
                by[c] = by.get(c, 0.0) + _rss_mb(pid)
            self.samples.append({"t": time.time(), "applied": self.applied(), "rss": by})
            self.halt.wait(self.every)


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------
def make_data(
    out: Path, n_partitions: int, partition_size: int, history: int, users: int, items: int, seed: int
):
    """(history files, partition files in name order, ratings per partition) from ``streamrec.core.synth``."""
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset

    total = history + n_partitions * partition_size
    cfg = SynthConfig(n_users=users, n_items=items, n_ratings=total, seed=seed)
    write_dataset(cfg, str(out), partition_size=partition_size, history_fraction=history / total)
    parts = sorted((out / "partitions").glob("p-*"))
    assert len(parts) == n_partitions, (len(parts), n_partitions)
    rows = {p.stem: sum(1 for _ in p.open()) - 1 for p in parts}
    return sorted((out / "history").iterdir()), parts, rows


def drop_all(bucket: Path, parts: list[Path], order: list[int]) -> list[str]:
    """Copy ``parts`` into ``ratings/incoming/`` in ``order``, at once; the arrival time (mtime) of the k-th
    drop is ``now - 5 s + k ms`` (one burst, explicit because file timestamps have a coarse clock). Returns
    the partition ids in drop order."""
    incoming = bucket / "ratings" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - 5
    ids = []
    for k, j in enumerate(order):
        dst = incoming / parts[j].name
        shutil.copyfile(parts[j], dst)
        os.utime(dst, (t0 + k / 1000, t0 + k / 1000))
        ids.append(parts[j].stem)
    return ids


def wait_lineage(
    store, ids: list[str], api: Api, timeout: float, dag_id: str = "streamrec_update", progress: float = 0
) -> float:
    """Seconds until the published lineage holds every id of ``ids`` and no update run is active
    (``TimeoutError`` after ``timeout``). With ``progress``, prints a line every ``progress`` seconds."""
    from streamrec import pipeline

    t0 = last = time.time()
    want = set(ids)
    while True:
        cur = store.current()
        lineage = set(store.read_manifest(cur).get("partitions", [])) if cur else set()
        s = pipeline.summary(store.bucket, store)
        done = lineage | set(s["quarantined"]) | set(s["rejected"])
        if want <= done and api.active_runs(dag_id) == 0:
            return time.time() - t0
        if time.time() - t0 > timeout:
            raise TimeoutError(f"after {timeout:.0f}s: {len(want & lineage)} of {len(want)} applied")
        if progress and time.time() - last >= progress:
            last = time.time()
            print(f"  {last - t0:7.0f} s: {len(want & lineage)} of {len(want)} applied", flush=True)
        time.sleep(2)


def _runs(api: Api, dag_id: str, after: str | None = None) -> list[dict]:
    out, offset = [], 0
    while True:
        page = api.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&offset={offset}&order_by=start_date")
        out += page.get("dag_runs", [])
        offset += 100
        if offset >= int(page.get("total_entries", 0)):
            break
    return [r for r in out if not after or (r.get("start_date") or "") >= after]


def _iso_utc(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def _peaks(samples: list[dict], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in samples:
        for k, v in s["rss"].items():
            out[k] = max(out.get(k, 0.0), v)
        if keys:
            out["worker_spark"] = max(out.get("worker_spark", 0.0), sum(s["rss"].get(k, 0.0) for k in keys))
    return {k: round(v, 1) for k, v in sorted(out.items())}


# ------------------------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------------------------
def run_load(
    n_partitions: int = 200,
    partition_size: int = 500,
    max_partitions_per_run: int = 25,
    history: int = 20_000,
    seed: int = 42,
    workdir: str | Path | None = None,
    timeout: float = 3 * 3600,
    keep: bool = False,
) -> dict:
    """The backlog benchmark (module docstring). Returns the JSON-able result."""
    from streamrec import pipeline

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamrec-load-"))
    work.mkdir(parents=True, exist_ok=True)
    bucket_dir = work / "bucket"
    stack = Stack(work / "airflow", bucket_dir, STREAMREC_MAX_PARTITIONS_PER_RUN=str(max_partitions_per_run))
    t_all = time.time()
    res: dict = {
        "n_partitions": n_partitions,
        "partition_size": partition_size,
        "max_partitions_per_run": max_partitions_per_run,
        "workdir": str(work),
    }
    try:
        mig = stack.migrate()
        history_files, parts, rows = make_data(
            work / "data", n_partitions, partition_size, history, 600, 800, seed
        )
        bucket, store = pipeline.open_bucket(str(bucket_dir))
        for f in history_files:
            bucket.write_bytes(f"{pipeline.HISTORY}/{f.name}", f.read_bytes())
        assert mig.wait() == 0, (work / "airflow" / "migrate.log").read_text()[-3000:]
        stack.start("standalone", "standalone")
        res["airflow_up_s"] = round(stack.wait_healthy(), 1)
        api = stack.api()
        for dag_id in ("streamrec_bootstrap", "streamrec_update"):
            api.wait_for_dag(dag_id, timeout=300)
        t0 = time.time()
        run = api.trigger("streamrec_bootstrap", {"rank": 8, "iterations": 5, "seed": seed})
        state = api.wait_run("streamrec_bootstrap", run, 1200)
        res["bootstrap_s"] = round(time.time() - t0, 1)
        if state != "success":
            raise RuntimeError(f"bootstrap run {run}: {state}; logs under {stack.home}")
        boot = store.current()

        order = list(range(n_partitions))
        random.Random(seed).shuffle(order)
        sampler = Sampler(stack, store)
        sampler.start()
        t_drop = time.time()
        dropped = drop_all(bucket_dir, parts, order)
        api.patch("/api/v2/dags/streamrec_update", {"is_paused": False})
        try:
            wait_lineage(store, dropped, api, timeout, progress=60)
        except TimeoutError as exc:  # report what was done (exactly_once is then false: ids are missing)
            res["timed_out"] = str(exc)
        sampler.halt.set()
        sampler.join()
        cur = store.current()
        lineage = store.read_manifest(cur).get("partitions", [])
        applied = [p for p in lineage if p in set(dropped)]
        # wall time: first drop -> the first sample that saw the last applied partition published (the whole
        # backlog, unless timed out: then the rates are over what was applied)
        t_done = next((x["t"] for x in sampler.samples if x["applied"] >= len(lineage)), time.time())
        wall = t_done - t_drop
        s = pipeline.summary(bucket, store)
        updates = [m for m in store.list_versions() if m.get("kind") == "update"]
        runs = _runs(api, "streamrec_update", after=_iso_utc(t_drop - 1))
        n_ratings = sum(rows[p] for p in set(applied))
        # memory: worker + Spark per sample; first quarter of the backlog vs the last (of what was applied)
        keys = ("task", "spark")
        q = len(applied) / 4
        first = [x for x in sampler.samples if 0 <= x["applied"] < q]
        last = [x for x in sampler.samples if 3 * q <= x["applied"] < len(applied)]
        p_first = _peaks(first, keys).get("worker_spark", 0.0)
        p_last = _peaks(last, keys).get("worker_spark", 0.0)
        res.update(
            {
                "applied": len(applied),
                "wall_s": round(wall, 1),
                "partitions_per_min": round(len(applied) / wall * 60, 2),
                "ratings": n_ratings,
                "ratings_per_s": round(n_ratings / wall, 1),
                "arrival_order_respected": lineage == dropped[: len(lineage)],
                "drop_order_differs_from_name_order": dropped != sorted(dropped),
                "exactly_once": len(lineage) == len(set(lineage)) and set(lineage) == set(dropped),
                "missing": sorted(set(dropped) - set(lineage)),
                "duplicates": sorted({p for p in lineage if lineage.count(p) > 1}),
                "quarantined": sorted(s["quarantined"]),
                "rejected": s["rejected"],
                "update_runs": len(updates),
                "published_updates": sum(1 for m in updates if m.get("status") == "published"),
                "dag_runs": len(runs),
                "dag_runs_failed": sum(1 for r in runs if r.get("state") == "failed"),
                "batch_sizes": [
                    len(m.get("new_partitions") or []) for m in sorted(updates, key=lambda m: m["version"])
                ],
                "rss_mb": {
                    "peak": _peaks(sampler.samples, keys),
                    "worker_spark_first_quarter": p_first,
                    "worker_spark_last_quarter": p_last,
                    "samples": len(sampler.samples),
                },
                "bounded_memory": bool(first and last and p_last <= p_first * 1.15 + 200),
                "base": boot,
                "final": cur,
                "final_rmse": pipeline.rmse_of(store.read_manifest(cur)),
                "total_s": round(time.time() - t_all, 1),
                "loadavg": os.getloadavg(),
            }
        )
        return res
    finally:
        stack.stop()
        if not keep and not workdir:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------
# the scheduler-restart fault
# ------------------------------------------------------------------------------------------------------------
FAULT_ENV = {
    # a task instance nobody heartbeats for 30 s (default 300) is failed, and retried; checked every 5 s
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # a scheduler job silent for 30 s (the default) is dead and its queued/running task instances are reset,
    # checked every 20 s (default 300). Not lower: on a busy 2-core machine a live scheduler's own heartbeat
    # lags by more than 10 s, and it then declares itself dead and resets its own running tasks (seen here).
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "3",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
}


def _job(script: str, args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """``python jobs/<script> ARGS`` (a local Spark session, as spark-submit would give it) in the background."""
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / script), *args],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_job(proc: subprocess.Popen, log: Path, timeout: float = 600) -> dict:
    rc = proc.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    if rc != 0:
        raise RuntimeError(f"{proc.args[1]} exited {rc}:\n{text[-3000:]}")
    return json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])


def complete_version(store, version: str) -> tuple[bool, str]:
    """Whether ``version`` is complete: a manifest, every file it lists present with its size, readable."""
    try:
        m = store.read_manifest(version)
        found = {o.key: o.size for o in store.bucket.list(store.version_key(version))}
        for side in ("users", "items"):
            for f in m["tables"][side]["files"]:
                key = store.version_key(version, f["key"])
                if found.get(key) != f["size"]:
                    return False, f"{key}: listed size {f['size']}, found {found.get(key)}"
        a = store.load_arrays(version)
        if (a.n_users, a.n_items) != (m["n_users"], m["n_items"]):
            return False, "row counts differ from the manifest"
    except Exception as exc:  # noqa: BLE001 - the answer is the point
        return False, f"{type(exc).__name__}: {exc}"
    return True, "complete"


def _task_tries(api: Api, dag_id: str, run_id: str) -> dict[str, list[str]]:
    """Task id -> the states of its tries, in order (history + the current try)."""
    from urllib.parse import quote

    rid = quote(run_id, safe="")
    tis = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances?limit=100")["task_instances"]
    out = {}
    for ti in tis:
        tid = ti["task_id"]
        try:
            tries = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{tid}/tries")
            states = [t.get("state") for t in sorted(tries["task_instances"], key=lambda t: t["try_number"])]
        except RuntimeError:
            states = []
        if not states or states[-1] != ti.get("state"):
            states.append(ti.get("state"))
        out[tid] = states
    return out


def run_freshness(stack: Stack, rows: int, seed: int, users: int, items: int, timeout: float = 600) -> dict:
    """``bench/freshness.py --rows ROWS --repeat 1`` against ``stack`` (running, with a published model and the
    update DAG unpaused), as a script: ``{"rc", "seconds", "result"}`` (its last line parsed, None if not JSON),
    plus ``"tail"`` of its output when it failed. Partitions from the planted model the stack's data came from
    (``seed``, ``users``, ``items``), so the gate judges more of the same stream."""
    env = {
        **stack.env,
        "AIRFLOW_URL": stack.url,
        "AIRFLOW_ADMIN_USER": "admin",
        "AIRFLOW_PASSWORD_FILE": str(stack.home / PASSWORD_FILE),
    }
    argv = ["--rows", str(rows), "--repeat", "1", "--seed", str(seed), "--users", str(users)]
    argv += ["--items", str(items), "--timeout", str(timeout)]
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "freshness.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout + 120,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    out = {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "argv": argv, "result": result}
    if proc.returncode != 0:
        out["tail"] = (proc.stdout + proc.stderr)[-4000:]
    return out


def run_scheduler_restart(
    n_partitions: int = 4,
    per_run: int = 2,
    workdir: str | Path | None = None,
    kill_after_s: float = 30.0,
    timeout: float = 420,
    keep: bool = False,
    freshness_rows: int = 0,
    connect_url: str | None = None,
) -> dict:
    """Kill the scheduler's process tree (SIGKILL) while an update run's Spark job is running, start the
    scheduler again, wait until every partition is applied; compare with a clean run (module docstring).

    With ``connect_url`` (``sc://host:port``, as the stacks run it) the jobs attach to that Spark Connect server:
    the update task's job is then a Connect client, killed with the scheduler's tree while its query goes on in
    the server, and the retry must interrupt it (``streamrec.spark.session``: a lane's next job) before writing.

    With ``freshness_rows`` > 0, afterwards (the checks already taken), ``bench/freshness.py`` measures one more
    partition of that many ratings on the same running Airflow (:func:`run_freshness`; ``out["freshness"]``):
    the benchmark's smoke run in ``tests/test_scheduler_restart.py``, at the cost of one update run."""
    from streamrec import pipeline

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamrec-restart-"))
    work.mkdir(parents=True, exist_ok=True)
    bucket_dir, ref_dir = work / "bucket", work / "reference"
    connect_env = {"STREAMREC_SPARK_REMOTE": connect_url} if connect_url else {}
    stack = Stack(
        work / "airflow",
        bucket_dir,
        STREAMREC_MAX_PARTITIONS_PER_RUN=str(per_run),
        **FAULT_ENV,
        **connect_env,
    )
    timings: dict[str, float] = {}
    out: dict = {
        "fault": "scheduler restart",
        "survived": False,
        "checks": {},
        "workdir": str(work),
        "spark_path": "connect" if connect_url else "spark-submit",
    }
    t_all = time.time()
    try:
        mig = stack.migrate()
        history_files, parts, _ = make_data(work / "data", n_partitions, 1000, 12_000, 300, 400, 7)
        bucket, store = pipeline.open_bucket(str(bucket_dir))
        for f in history_files:
            bucket.write_bytes(f"{pipeline.HISTORY}/{f.name}", f.read_bytes())
        # bootstrap with the job itself (the bootstrap DAG is not what is under test), while Airflow migrates
        boot_v = "v20260101T000000-boot-restart"
        log = work / "bootstrap.log"
        job = _job(
            "bootstrap.py",
            [
                "--bucket",
                str(bucket_dir),
                "--ratings",
                bucket.spark_uri(pipeline.HISTORY),
                "--version",
                boot_v,
                "--holdout-fraction",
                "0.1",
                "--rank",
                "8",
                "--iterations",
                "5",
            ],
            log,
            stack.env,
        )
        # Airflow starts while the bootstrap job runs (the update DAG stays paused until the data is in)
        assert mig.wait() == 0, (work / "airflow" / "migrate.log").read_text()[-3000:]
        stack.start("api-server", "api-server")
        stack.start("dag-processor", "dag-processor")
        stack.start("scheduler", "scheduler")
        # the incoming/ watcher runs in the triggerer: without it every run (the second half of the backlog, the
        # freshness drop) waited for the 300 s fallback schedule, most of this scenario's time
        stack.start("triggerer", "triggerer")
        _wait_job(job, log)
        pipeline.publish(store, boot_v, None)
        timings["bootstrap"] = round(time.time() - t_all, 1)

        # the clean run: the same partitions, in order, in one application, on a copy of the bootstrapped bucket
        for sub in ("models", "validation"):
            shutil.copytree(bucket_dir / sub, ref_dir / sub)
        ref_v = "v20260101T000001-upd-reference"
        ref_log = work / "reference.log"
        ref_job = _job(
            "update.py",
            ["--bucket", str(ref_dir), "--base", boot_v, "--version", ref_v, "--scale", SCALE]
            + [a for p in parts for a in ("--partition", f"{p.stem}={p}")],
            ref_log,
            stack.env,
        )

        stack.wait_healthy(need=("scheduler", "dag_processor", "triggerer"))
        api = stack.api()
        api.wait_for_dag("streamrec_update", timeout=180)
        timings["airflow_up"] = round(time.time() - t_all, 1)

        dropped = drop_all(bucket_dir, parts, list(range(n_partitions)))
        t_drop = time.time()
        api.patch("/api/v2/dags/streamrec_update", {"is_paused": False})

        # Wait for the first run's Spark job (its Python driver), then crash the scheduler with everything it
        # started: as soon as the candidate's folder appears (the job is writing the version), else after
        # ``kill_after_s`` of the driver running.
        versions_dir = bucket_dir / "models" / "versions"
        before = set(os.listdir(versions_dir))
        t0, t_driver = time.time(), None
        while True:
            if t_driver is None:
                for pid in stack.pids("scheduler"):
                    cmd = _cmdline(pid)
                    if "jobs/update.py" in cmd and "python" in cmd.split(" ", 1)[0]:
                        t_driver = time.time()
            new_dirs = set(os.listdir(versions_dir)) - before
            if t_driver is not None and (new_dirs or time.time() - t_driver > kill_after_s):
                break
            if time.time() - t0 > 240:
                raise TimeoutError("no update job started within 240 s")
            time.sleep(0.1)
        writing = sorted(new_dirs)
        running = api.get("/api/v2/dags/streamrec_update/dagRuns?state=running&limit=5")["dag_runs"]
        killed_run = running[0]["dag_run_id"] if running else None
        update_state = None
        if killed_run:
            from urllib.parse import quote

            ti = api.get(
                f"/api/v2/dags/streamrec_update/dagRuns/{quote(killed_run, safe='')}/taskInstances/update"
            )
            update_state = ti.get("state")
        killed = stack.kill("scheduler", signal.SIGKILL)
        t_kill = time.time()
        timings["kill_after_drop"] = round(t_kill - t_drop, 1)
        survivors = stack.pids("scheduler")
        half = [v for v in writing if not (versions_dir / v / "manifest.json").exists()]
        out["fault_detail"] = {
            "moment": "while writing candidate " + ", ".join(writing)
            if writing
            else f"{kill_after_s:.0f} s into the Spark job (before its write)",
            "left_half_written": half,
            "signal": "SIGKILL",
            "target": "the scheduler's process tree (scheduler, LocalExecutor workers, task runner, Spark job)",
            "run": killed_run,
            "update_task_state_at_kill": update_state,
            "killed": sorted({k["category"] for k in killed}),
            "n_killed": len(killed),
            "survivors": survivors,
        }
        time.sleep(2)
        stack.start("scheduler", "scheduler")  # the restart (a new session)
        wait_lineage(store, dropped, api, timeout)
        timings["recovery_after_kill"] = round(time.time() - t_kill, 1)
        timings["drop_to_done"] = round(time.time() - t_drop, 1)

        # --- checks ---
        cur = store.current()
        manifest = store.read_manifest(cur)
        lineage = manifest.get("partitions", [])
        ok_complete, why = complete_version(store, cur)
        _wait_job(ref_job, ref_log)
        from reliability_faults import compare  # the same bit-for-bit comparison as the injected faults

        from streamrec.storage.store import ModelStore

        cmp = compare(store.load_arrays(cur), ModelStore(str(ref_dir)).load_arrays(ref_v))
        runs = _runs(api, "streamrec_update", after=_iso_utc(t_drop - 1))
        tries = {r["dag_run_id"]: _task_tries(api, "streamrec_update", r["dag_run_id"]) for r in runs}
        left_failed = {
            (rid, t): states
            for rid, per in tries.items()
            for t, states in per.items()
            if states and states[-1] not in ("success", "skipped")
        }
        retried = {f"{rid}/{t}": st for rid, per in tries.items() for t, st in per.items() if len(st) > 1}
        updates = [m for m in store.list_versions() if m.get("kind") == "update"]
        version_dirs = sorted(p.name for p in (bucket_dir / "models" / "versions").iterdir())
        incomplete = [
            v for v in version_dirs if not (bucket_dir / "models" / "versions" / v / "manifest.json").exists()
        ]
        checks = {
            "fault_hit_a_running_spark_job": update_state == "running"
            and "spark" in out["fault_detail"]["killed"],
            "nothing_survived_the_kill": not survivors,
            "every_partition_applied": set(lineage) >= set(dropped),
            "exactly_once": len(lineage) == len(set(lineage)),
            "arrival_order": lineage == dropped,
            "model_equals_clean_run": cmp["exact"],
            "pointer_names_complete_version": ok_complete and manifest.get("status") == "published",
            "no_incomplete_version_visible": all(
                v not in {m["version"] for m in store.list_versions()} for v in incomplete
            ),
            "every_update_run_succeeded": bool(runs) and all(r.get("state") == "success" for r in runs),
            "no_task_left_failed": not left_failed,
            "a_killed_try_was_retried": any(len(st) > 1 and st[-1] == "success" for st in retried.values()),
        }
        out.update(
            {
                "survived": all(checks.values()),
                "checks": checks,
                "lineage": lineage,
                "dropped": dropped,
                "current": cur,
                "complete": why,
                "compare": cmp,
                "update_versions": {m["version"]: m.get("status") for m in updates},
                "incomplete_version_dirs": incomplete,
                "dag_runs": {r["dag_run_id"]: r.get("state") for r in runs},
                "retried_tasks": retried,
                "left_failed": {f"{k[0]}/{k[1]}": v for k, v in left_failed.items()},
                "timings_s": {**timings, "total": round(time.time() - t_all, 1)},
            }
        )
        if freshness_rows > 0:
            out["freshness"] = run_freshness(stack, freshness_rows, seed=7, users=300, items=400)
            out["timings_s"]["freshness"] = out["freshness"]["seconds"]
            out["timings_s"]["total"] = round(time.time() - t_all, 1)
        return out
    except Exception as exc:  # a broken scenario is reported, not raised: the benchmark records it
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["timings_s"] = {**timings, "total": round(time.time() - t_all, 1)}
        return out
    finally:
        stack.stop()
        if not keep and not workdir:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--partitions", type=int, default=200, help="partitions dropped at once (quick check: 20)"
    )
    ap.add_argument("--partition-size", type=int, default=500, help="ratings per partition")
    ap.add_argument("--per-run", type=int, default=25, help="STREAMREC_MAX_PARTITIONS_PER_RUN")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder, removed)")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds to wait for the backlog")
    ap.add_argument(
        "--scheduler-restart", action="store_true", help="run the scheduler-restart fault instead"
    )
    ap.add_argument(
        "--freshness-rows",
        type=int,
        default=0,
        help="with --scheduler-restart: then bench/freshness.py on one partition of N ratings (0: no)",
    )
    ap.add_argument(
        "--connect",
        metavar="sc://HOST:PORT",
        help="with --scheduler-restart: the jobs attach to this Spark Connect server (scripts/connect-server)",
    )
    args = ap.parse_args(argv)
    if args.scheduler_restart:
        res = run_scheduler_restart(
            workdir=args.workdir, freshness_rows=args.freshness_rows, connect_url=args.connect
        )
    else:
        res = run_load(
            args.partitions, args.partition_size, args.per_run, workdir=args.workdir, timeout=args.timeout
        )
    print(json.dumps(res, default=str))
    return 0 if res.get("survived", True) and not {"error", "timed_out"} & set(res) else 1


if __name__ == "__main__":
    sys.exit(main())

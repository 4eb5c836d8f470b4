"""Injected faults: does the update pipeline survive a crash, an S3 outage, a lost success and a concurrent run?

    python bench/reliability_faults.py [--workdir DIR]

Each fault is injected into real parts (real Spark and ``spark-submit``, a real moto S3 server, a real
``SIGKILL``) on a small generated data set, then checked against the three promises of the store:

``model_equal``        the published model equals (bit for bit: the update is deterministic for the same inputs,
                       version id and seed) the one a clean run without the fault produces from the same inputs;
``lineage_once``       every partition applied exactly once: the published manifest's ``partitions`` holds each
                       id once, in the order it was applied;
``never_incomplete``   no half-written version is ever visible: a reader polling the pointer during the whole
                       scenario never finds it naming a version without manifest or with missing/short files.

The faults (``tests/test_faults.py`` runs the same functions, with pytest fixtures):

1. ``kill_update``      ``jobs/update.py`` run by ``spark-submit`` exactly as the update DAG builds the
                        command (its argv, conf and name read from the parsed DAG), killed with ``SIGKILL`` (the
                        whole process group: launcher, JVM, Python driver and workers) while it writes the new
                        version, then the same command again (an Airflow retry reuses the run's version id);
2. ``s3_outage``        the S3 server unreachable (a TCP proxy in front of moto stops: ``tests/s3server.py``
                        ``TcpProxy``) from the moment the publish sends a given request, then reachable again,
                        and the publish task retried;
3. ``after_pointer``    the publish task dies right after the pointer was written, before it records success
                        (failpoint ``STREAMREC_FAULT=after_pointer``, ``streamrec/faults.py``), then is retried;
4. ``concurrent``       two candidates built from the same base with different partitions, published at the same
                        time by two processes (failpoint ``before_pointer=sleep(1)`` makes them overlap): exactly
                        one wins, the other is refused, its partition stays pending and the next run applies it.
                        The update DAG's ``max_active_runs=1`` (checked on the parsed DAG) is the first line of
                        defence; the store's compare-and-swap is the second.

``run_faults()`` returns ``{"faults_injected", "faults_survived", "details": [{"fault", "survived", "checks"}]}``
and the script prints it as JSON on its last line: the top-level keys ``faults_injected``, ``faults_survived``,
``details``. About 3-4 minutes on 2 cores. ``--only NAME`` (repeatable) injects only those faults (``FAULTS``);
the update DAG is parsed only when a selected fault needs it (``kill_update``, ``concurrent_publish*``). The
smoke run of the test suite (``tests/test_bench.py``) is ``--only after_pointer``: the world (a bootstrap, two
clean updates) and the cheapest fault; ``tests/test_faults.py`` runs every fault's function.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

VENV_BIN = Path(sys.executable).parent

# the scenario's data and versions
V0, VA, VB, VN = "v0-boot", "vA-upd-p1", "vB-upd-p2", "vN-upd-next"
P1, P2 = "p-00001", "p-00002"
CANDIDATE_OF = {VA: P1, VB: P2}
# The gate is run as the DAG runs it, but these faults are about publishing, not accuracy: a lenient gate.
GATE = {"ceiling": 10.0, "tolerance": 1.0, "baseline": False}


# ----------------------------------------------------------------------------------------------------------------
# the world: a bootstrapped bucket and the candidates of clean runs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class World:
    """A local bucket ``base`` (history, ``incoming/`` with p-00001 then p-00002, ``V0`` bootstrapped and
    published) and its clone ``cand`` where clean runs of the update job built ``VA`` (p-00001) and ``VB``
    (p-00002) from ``V0`` and gated them. ``ref`` holds their arrays, as the clean runs wrote them."""

    work: Path
    base: Path
    cand: Path
    scale: str
    ref: dict[str, Any] = field(default_factory=dict)


def make_world(work: Path, spark: Any) -> World:
    from streamrec import pipeline
    from streamrec.core.params import BootstrapParams
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.spark import runs
    from streamrec.storage.bucket import Bucket
    from streamrec.storage.store import ModelStore

    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    cfg = SynthConfig(n_users=200, n_items=250, n_ratings=5_000, seed=7)
    write_dataset(cfg, str(data), n_partitions=3, history_fraction=0.6)
    base = work / "base"
    b = Bucket.from_uri(base)
    for f in sorted((data / "history").iterdir()):
        b.write_bytes(f"ratings/history/{f.name}", f.read_bytes())
    now = time.time()
    for k, pid in enumerate((P1, P2)):
        key = f"{pipeline.INCOMING}/{pid}.csv"
        b.write_bytes(key, (data / "partitions" / f"{pid}.csv").read_bytes())
        os.utime(base / key, (now + k, now + k))  # arrival order: p-00001 then p-00002
    store = ModelStore(b)
    runs.bootstrap_version(
        spark,
        store,
        [b.spark_uri("ratings/history")],
        BootstrapParams(rank=4, iterations=2),
        version=V0,
        holdout=runs.Holdout(b.spark_uri("validation")),
    )
    store.publish(V0)
    scale = str(pipeline.scale_of(store, V0))
    cand = work / "cand"
    clone_bucket(b, Bucket.from_uri(cand))
    world = World(work=work, base=base, cand=cand, scale=scale)
    cstore = ModelStore(str(cand))
    for version, pid in CANDIDATE_OF.items():
        run_update_in_process(world, cstore.bucket, V0, version, pid)
        pipeline.decide(cstore, version, V0, **GATE)
        world.ref[version] = cstore.load_arrays(version)
    return world


def update_argv(world: World, bucket: Any, base: str, version: str, pid: str) -> list[str]:
    """The update job's argv exactly as ``dags/streamrec_update.py``'s ``validate`` task builds it (no tuned
    parameter set: the built-in defaults, as ``paramsets.resolve_in_bucket`` gives them)."""
    from streamrec import pipeline
    from streamrec.storage import paramsets

    hp, lineage, _ = paramsets.resolve_in_bucket(bucket, None, "update", {})
    return [
        *("--bucket", bucket.uri(""), "--base", base, "--version", version),
        *("--partition", f"{pid}={bucket.spark_uri(f'{pipeline.INCOMING}/{pid}.csv')}"),
        *("--scale", world.scale),
        *hp.to_argv(),
        *paramsets.lineage_argv(lineage),
    ]


def _update_job():
    spec = importlib.util.spec_from_file_location("streamrec_job_update", REPO / "jobs" / "update.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_update_in_process(world: World, bucket: Any, base: str, version: str, pid: str) -> None:
    """A clean run: ``jobs/update.py``'s ``main`` with the DAG's argv, in this process's Spark session."""
    job = _update_job()
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - the manifest JSON line
        rc = job.main(update_argv(world, bucket, base, version, pid))
    if rc != 0:
        raise RuntimeError(f"update job for {version} exited {rc}")


# ----------------------------------------------------------------------------------------------------------------
# helpers: copying a bucket, comparing models, watching the pointer
# ----------------------------------------------------------------------------------------------------------------
def clone_bucket(src: Any, dst: Any) -> None:
    """Copy every object of ``src`` into ``dst`` and relocate the manifests.

    Manifests hold absolute Spark URIs (``inputs``, ``validation``, ``holdout.uri``): a copied bucket whose
    manifests still named the source would make its jobs read and write the source's validation area. So every
    string in a ``manifest.json`` that starts with ``src``'s root is rewritten to ``dst``'s root. Local
    modification times are kept (the arrival order of ``incoming/``); on S3 the incoming files are uploaded in
    arrival order, 1.1 s apart (``LastModified`` has a 1 s resolution).
    """
    from streamrec.storage.bucket import LocalBucket

    s_root, d_root = src.spark_uri("").rstrip("/"), dst.spark_uri("").rstrip("/")

    def relocate(v: Any) -> Any:
        if isinstance(v, str) and (v == s_root or v.startswith(s_root + "/")):
            return d_root + v[len(s_root) :]
        if isinstance(v, list):
            return [relocate(x) for x in v]
        if isinstance(v, dict):
            return {k: relocate(x) for k, x in v.items()}
        return v

    objs = src.list("")
    incoming = sorted(
        (o for o in objs if o.key.startswith("ratings/incoming/")), key=lambda o: (o.mtime, o.key)
    )
    for o in [o for o in objs if not o.key.startswith("ratings/incoming/")] + incoming:
        parts = o.key.split("/")
        if parts[:2] == ["models", "versions"] and parts[-1] == "manifest.json":
            dst.write_json(o.key, relocate(src.read_json(o.key)))
        else:
            dst.write_bytes(o.key, src.read_bytes(o.key))
        if isinstance(dst, LocalBucket) and o.mtime is not None:
            os.utime(dst.root / o.key, (o.mtime, o.mtime))
        elif o in incoming[:-1]:
            time.sleep(1.1)


def compare(a: Any, b: Any) -> dict:
    """Two ``ModelArrays``: ``exact`` (every id, count, bias and factor equal bit for bit, and mu, n),
    ``same_ids`` (the same users and items), ``max_abs_diff`` of the floats."""
    same_ids = bool(np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.item_ids, b.item_ids))
    exact = a.mu == b.mu and a.n == b.n and a.rank == b.rank
    diff = abs(a.mu - b.mu)
    for f in (
        "user_ids",
        "item_ids",
        "user_n",
        "item_n",
        "user_bias",
        "item_bias",
        "user_factors",
        "item_factors",
    ):
        x, y = getattr(a, f), getattr(b, f)
        if x.shape != y.shape:
            return {"exact": False, "same_ids": same_ids, "max_abs_diff": float("inf"), "field": f}
        exact = exact and bool(np.array_equal(x, y))
        if x.size and x.dtype.kind == "f":
            diff = max(diff, float(np.max(np.abs(x - y))))
    return {"exact": bool(exact), "same_ids": same_ids, "max_abs_diff": diff}


def lineage_once(manifest: dict, expected: list[str]) -> bool:
    parts = manifest.get("partitions", [])
    return parts == expected and len(set(parts)) == len(parts)


class PointerWatcher:
    """A reader polling the pointer (every ``interval`` s, in a thread) for the whole ``with`` block: each time
    it names a version, that version must have its manifest and every table file at its recorded size
    (``ModelStore._check_files``). ``violations`` lists what was wrong; ``unreachable`` counts polls that could
    not reach the store (an outage), ``seen`` the versions it saw current."""

    def __init__(self, store: Any, interval: float = 0.05) -> None:
        self.store, self.interval = store, interval
        self.violations: list[str] = []
        self.seen: list[str] = []
        self.polls = self.unreachable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pointer-watcher")

    def __enter__(self) -> PointerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.check_once()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(self.interval)

    def check_once(self) -> None:
        from streamrec.storage.store import StoreError

        self.polls += 1
        try:
            cur = self.store.current()
            if cur is None:
                return
            if not self.seen or self.seen[-1] != cur:
                self.seen.append(cur)
            doc = self.store.read_manifest(cur)
            self.store._check_files(cur, doc)
        except StoreError as exc:  # VersionNotFoundError (no manifest) or damaged files
            self.violations.append(f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the store unreachable (an injected outage): not a violation
            self.unreachable += 1

    @property
    def ok(self) -> bool:
        return not self.violations and self.polls > 1


def s3_client(endpoint: str) -> Any:
    """A boto3 client with the production configuration (``streamrec.storage.s3client.make_s3_client``) for ``endpoint``."""
    from streamrec.storage.s3client import make_s3_client

    old = os.environ.get("AWS_ENDPOINT_URL_S3")
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        return make_s3_client()
    finally:
        if old is None:
            os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        else:
            os.environ["AWS_ENDPOINT_URL_S3"] = old


@contextlib.contextmanager
def fault_env(value: str | None) -> Iterator[None]:
    """``STREAMREC_FAULT=value`` for the block (unset with None)."""
    from streamrec.core import faults

    old = os.environ.get(faults.ENV)
    if value is None:
        os.environ.pop(faults.ENV, None)
    else:
        os.environ[faults.ENV] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(faults.ENV, None)
        else:
            os.environ[faults.ENV] = old


# ----------------------------------------------------------------------------------------------------------------
# the update DAG as Airflow parses it
# ----------------------------------------------------------------------------------------------------------------
_PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1], bundle_name="dags-folder")
d = bag.dags["streamrec_update"]
t = d.get_task("update")
print("@@" + json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "max_active_runs": d.max_active_runs,
    "application": t.application, "name": t.name, "conf": t.conf, "env_vars": t.env_vars,
    "driver_memory": t._driver_memory, "conn_master": "local[2]",
}, default=str))
"""


def start_dag_parse(work: Path) -> subprocess.Popen:
    """Start parsing ``dags/`` with Airflow's ``BundleDagBag`` (a throw-away ``AIRFLOW_HOME``, in a subprocess,
    so it overlaps with the Spark work of the set-up); :func:`dag_facts` collects the answer."""
    home = work / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),  # the update DAG's asset watcher trigger
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "STREAMREC_HOME": str(REPO),
        "STREAMREC_PYTHON": sys.executable,
        "STREAMREC_DRIVER_MEMORY": "1g",
    }
    return subprocess.Popen(
        [sys.executable, "-c", _PARSE, str(REPO / "dags")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dag_facts(work: Path, proc: subprocess.Popen | None = None) -> dict:
    """The update DAG as Airflow parses it: its ``max_active_runs`` and its ``update`` task's spark-submit
    settings (``application``, ``name``, ``conf``, ``env_vars``, ``driver_memory``)."""
    proc = proc or start_dag_parse(work)
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"parsing the DAGs failed:\n{stderr[-3000:]}")
    out = json.loads([ln for ln in stdout.splitlines() if ln.startswith("@@")][-1][2:])
    if out["import_errors"]:
        raise RuntimeError(f"DAG import errors: {out['import_errors']}")
    return out


def spark_submit_command(dag: dict, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment ``SparkSubmitOperator`` runs for the update task (``local[2]``, the
    ``spark_default`` connection of the tests): ``--master``, ``--conf`` pairs (with the driver JVM options), ``--name``, ``--driver-memory``,
    the application and its argv."""
    from streamrec.launch import jvm

    cmd = [str(VENV_BIN / "spark-submit"), "--master", dag["conn_master"]]
    # the driver JVM options the DAGs' pre_execute (prepare_task) adds when the task runs
    conf = {"spark.driver.extraJavaOptions": jvm.driver_java_options(), **(dag["conf"] or {})}
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd += ["--name", dag["name"], "--driver-memory", dag["driver_memory"], dag["application"], *argv]
    env = {**os.environ, **(dag["env_vars"] or {})}
    return cmd, env


# ----------------------------------------------------------------------------------------------------------------
# fault 1: SIGKILL of the update job mid-run, then the same command again
# ----------------------------------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += kids.get(p, [])
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def fault_kill_update(world: World, work: Path, dag: dict) -> dict:
    """Fault 1. The kill lands while the job writes the candidate version (its ``users/`` table folder exists,
    its manifest does not): the moment a half-written version could become visible."""
    from streamrec import pipeline
    from streamrec.storage.bucket import Bucket
    from streamrec.storage.store import ModelStore, VersionNotFoundError

    bucket = Bucket.from_uri(work / "bucket")
    clone_bucket(Bucket.from_uri(world.base), bucket)
    store = ModelStore(bucket)
    cmd, env = spark_submit_command(dag, update_argv(world, bucket, V0, VA, P1))
    version_dir = bucket.root / "models" / "versions" / VA
    details: dict[str, Any] = {"command": " ".join(cmd[:3]) + " ... " + " ".join(cmd[-14:])}
    with PointerWatcher(store) as watch:
        t0 = time.monotonic()
        with open(work / "killed-run.log", "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        while proc.poll() is None and not (version_dir / "users").exists() and time.monotonic() - t0 < 600:
            time.sleep(0.02)
        manifest_before_kill = (version_dir / "manifest.json").exists()
        tree = _tree(proc.pid)
        details["killed_after_s"] = round(time.monotonic() - t0, 1)
        details["processes_killed"] = len(tree)
        if proc.poll() is None:
            os.killpg(
                proc.pid, signal.SIGKILL
            )  # the whole process group: launcher, JVM, Python driver, workers
        rc = proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = sorted(p for p in tree if _alive(p))
        details["left_behind"] = sorted(str(p.relative_to(version_dir)) for p in version_dir.rglob("*"))[:20]
        try:
            store.read_manifest(VA)
            invisible = False
        except VersionNotFoundError:
            invisible = VA not in [m["version"] for m in store.list_versions()]
        pending_after_kill = [p["id"] for p in pipeline.pending(bucket, store)["pending"]]
        current_after_kill = store.current()
        # the retry: the same command (same version id), to the end
        t1 = time.monotonic()
        retry = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=900, start_new_session=True
        )
        details["retry_s"] = round(time.monotonic() - t1, 1)
        retried_ok = retry.returncode == 0
        if not retried_ok:
            details["retry_output"] = (retry.stdout + retry.stderr)[-3000:]
            published = None
        else:
            pipeline.decide(store, VA, V0, **GATE)
            published = pipeline.publish(store, VA, V0)
    cmp = compare(store.load_arrays(VA), world.ref[VA]) if retried_ok else {"exact": False}
    details.update(
        model=cmp, watcher={"polls": watch.polls, "seen": watch.seen, "violations": watch.violations}
    )
    checks = {
        "killed_mid_write": rc == -signal.SIGKILL and not manifest_before_kill,
        "process_group_gone": not survivors,
        "half_written_version_invisible": invisible and current_after_kill == V0,
        "partition_still_pending": pending_after_kill == [P1, P2],
        "retry_succeeded": retried_ok and published is not None and store.current() == VA,
        "model_equal": bool(cmp["exact"]),
        "lineage_once": retried_ok and lineage_once(store.read_manifest(VA), [P1]),
        "never_incomplete": watch.ok,
    }
    details["survivors"] = survivors
    return {"fault": "kill_update", "checks": checks, "details": details}


# ----------------------------------------------------------------------------------------------------------------
# fault 2: the S3 server unreachable during publish, then back, publish retried
# ----------------------------------------------------------------------------------------------------------------
def fault_s3_outage(world: World, moto_endpoint: str, cut: str = "pointer") -> dict:
    """Fault 2. The outage begins when the publish sends ``cut``: ``"manifest"`` (the PUT marking the candidate
    published) or ``"pointer"`` (the PUT of ``models/CURRENT``: the manifest already says published). The
    publish raises once the client's own retries (5 attempts, botocore standard mode) are spent; the server
    comes back; the publish task is retried."""
    import uuid

    from s3server import TcpProxy

    from streamrec import pipeline
    from streamrec.storage.bucket import Bucket, S3Bucket
    from streamrec.storage.store import ModelStore

    direct = s3_client(moto_endpoint)
    name = f"faults-{uuid.uuid4().hex[:10]}"
    direct.create_bucket(Bucket=name)
    clone_bucket(Bucket.from_uri(world.cand), S3Bucket(name, client=direct))
    proxy = TcpProxy(moto_endpoint).start()
    store = ModelStore(
        S3Bucket(name, client=s3_client(proxy.endpoint))
    )  # the publish task's view: via the proxy
    reader = ModelStore(S3Bucket(name, client=direct))  # the watcher and the checks: straight to moto
    marker = {
        "manifest": f"PUT /{name}/models/versions/{VA}/manifest.json ",
        "pointer": f"PUT /{name}/models/CURRENT ",
    }[cut]
    details: dict[str, Any] = {"cut_on": marker.strip()}
    try:
        with PointerWatcher(reader) as watch:
            proxy.cut_on(marker.encode())
            t0 = time.monotonic()
            try:
                pipeline.publish(store, VA, V0)
                failed = False
            except Exception as exc:  # noqa: BLE001 - whatever the client raises when the server is gone
                failed = True
                details["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            details["failed_after_s"] = round(time.monotonic() - t0, 1)
            outage_began = proxy.stopped.is_set()
            current_during = reader.current()
            status_during = reader.read_manifest(VA).get("status")
            proxy.start()  # the server is back
            published = pipeline.publish(store, VA, V0)  # the publish task's retry
            again = pipeline.publish(store, VA, V0)  # and once more: idempotent
    finally:
        proxy.stop()
    cmp = compare(reader.load_arrays(VA), world.ref[VA])
    pending = [p["id"] for p in pipeline.pending(reader.bucket, reader)["pending"]]
    details.update(
        status_during_outage=status_during,
        model=cmp,
        watcher={"polls": watch.polls, "seen": watch.seen, "violations": watch.violations},
        pending_after=pending,
    )
    checks = {
        "publish_failed_during_outage": failed and outage_began,
        "pointer_unchanged_during_outage": current_during == V0,
        "retry_published": reader.current() == VA and published["version"] == VA == again["version"],
        "model_equal": bool(cmp["exact"]),
        "lineage_once": lineage_once(reader.read_manifest(VA), [P1]) and pending == [P2],
        "never_incomplete": watch.ok,
    }
    return {"fault": f"s3_outage_at_{cut}", "checks": checks, "details": details}


# ----------------------------------------------------------------------------------------------------------------
# fault 3: failure after the pointer, before the run records success; the publish task retried
# ----------------------------------------------------------------------------------------------------------------
def fault_after_pointer(world: World, bucket: Any) -> dict:
    """Fault 3, on ``bucket`` (empty; the candidates are cloned into it)."""
    from streamrec import pipeline
    from streamrec.core import faults
    from streamrec.spark import runs
    from streamrec.storage.bucket import Bucket
    from streamrec.storage.store import POINTER, ModelStore

    clone_bucket(Bucket.from_uri(world.cand), bucket)
    store = ModelStore(bucket)
    details: dict[str, Any] = {}
    with PointerWatcher(store) as watch:
        with fault_env("after_pointer"):
            try:
                pipeline.publish(store, VA, V0)
                died = False
            except faults.InjectedFault as exc:
                died, details["error"] = True, str(exc)
        pointer_after_fault = bucket.read_bytes(POINTER)
        current_after_fault = store.current()
        first = pipeline.publish(store, VA, V0)  # the publish task's retry
        second = pipeline.publish(store, VA, V0)  # a second retry
        pointer_after_retries = bucket.read_bytes(POINTER)
        report = pipeline.write_reports(bucket, store, VA, V0)  # the report task
    try:
        runs.update_version(None, store, [(P1, bucket.spark_uri(f"{pipeline.INCOMING}/{P1}.csv"))])
        refused_again = False
    except runs.AlreadyApplied:
        refused_again = True
    pending = [p["id"] for p in pipeline.pending(bucket, store)["pending"]]
    cmp = compare(store.load_arrays(), world.ref[VA])
    expected_extra = {
        "version": VA,
        "rmse": world.ref[VA].manifest["metrics"]["validation"]["rmse"],
        "partitions": 1,
    }
    details.update(
        asset_extra=pipeline.model_event_extra(first),
        report=report,
        pending_after=pending,
        model=cmp,
        watcher={"polls": watch.polls, "seen": watch.seen, "violations": watch.violations},
    )
    checks = {
        "died_after_pointer": died and current_after_fault == VA,
        "retry_idempotent": pointer_after_retries == pointer_after_fault and first == second,
        "asset_event_right": pipeline.model_event_extra(first)
        == pipeline.model_event_extra(second)
        == expected_extra,
        "report_right": report["status"] == "published" and bucket.exists(f"reports/gates/{VA}.html"),
        "not_applied_twice": refused_again and pending == [P2],
        "model_equal": bool(cmp["exact"]),
        "lineage_once": lineage_once(store.read_manifest(VA), [P1]),
        "never_incomplete": watch.ok,
    }
    return {"fault": "after_pointer", "checks": checks, "details": details}


# ----------------------------------------------------------------------------------------------------------------
# fault 4: two runs publishing at once
# ----------------------------------------------------------------------------------------------------------------
_PUBLISH = r"""
import json, os, sys, time
from pathlib import Path
from streamrec import pipeline
from streamrec.storage.store import ModelStore, StoreError
uri, version, expected, barrier, n = sys.argv[1:6]
store = ModelStore(uri)
Path(barrier, version).touch()  # start together: wait until every publisher is ready
deadline = time.monotonic() + 300
while len(os.listdir(barrier)) < int(n) and time.monotonic() < deadline:
    time.sleep(0.005)
try:
    pipeline.publish(store, version, expected)
    print("@@" + json.dumps({"version": version, "published": True}))
except StoreError as exc:
    print("@@" + json.dumps({"version": version, "published": False, "error": str(exc)}))
"""


def _publish_concurrently(uri: str, versions: list[str], expected: str, overlap: float) -> list[dict]:
    """Each version published by its own ``python`` process; they start publishing together (a file barrier,
    after their imports) and the failpoint ``before_pointer=sleep(overlap)`` holds each between reading the
    pointer and writing it, so the two compare-and-swaps overlap."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["STREAMREC_FAULT"] = f"before_pointer=sleep({overlap})"
    with tempfile.TemporaryDirectory(prefix="streamrec-barrier-") as barrier:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _PUBLISH, uri, v, expected, barrier, str(len(versions))],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in versions
        ]
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("@@")]
            out.append(json.loads(lines[-1][2:]) if lines else {"published": None, "error": stderr[-2000:]})
    return out


def fault_concurrent_publish(
    world: World, bucket: Any, dag: dict | None, spark: Any = None, work: Path | None = None
) -> dict:
    """Fault 4, on ``bucket`` (empty; the candidates are cloned into it). With ``spark`` (local buckets), the
    next run applies the refused partition and the result is compared with a clean sequential run."""
    from streamrec import pipeline
    from streamrec.storage.bucket import Bucket
    from streamrec.storage.store import PUBLISHED, ModelStore

    clone_bucket(Bucket.from_uri(world.cand), bucket)
    store = ModelStore(bucket)
    details: dict[str, Any] = {}
    with PointerWatcher(store) as watch:
        results = _publish_concurrently(bucket.uri(""), [VA, VB], V0, overlap=1.0)
        winners = [r["version"] for r in results if r["published"] is True]
        losers = [r for r in results if r["published"] is False]
        details["results"] = results
        one_winner = len(winners) == 1 and len(losers) == 1
        winner = winners[0] if one_winner else None
        loser = losers[0]["version"] if one_winner else None
        pending = [p["id"] for p in pipeline.pending(bucket, store)["pending"]]
        checks = {
            "exactly_one_winner": one_winner and store.current() == winner,
            # refused by the store's compare-and-swap (not by pipeline.publish's early check: the race was real)
            "loser_refused_not_published": one_winner
            and "a concurrent publish won" in losers[0].get("error", "")
            and store.read_manifest(loser).get("status") != PUBLISHED,
            "loser_partition_pending": one_winner and pending == [CANDIDATE_OF[loser]],
            "winner_lineage_once": one_winner
            and lineage_once(store.read_manifest(winner), [CANDIDATE_OF[winner]]),
        }
        if dag is not None:
            checks["dag_max_active_runs_1"] = dag.get("max_active_runs") == 1
        if spark is not None and one_winner:
            # the next run: the first pending partition onto the winner, gated and published
            lpid = CANDIDATE_OF[loser]
            run_update_in_process(world, bucket, winner, VN, lpid)
            pipeline.decide(store, VN, winner, **GATE)
            pipeline.publish(store, VN, winner)
            # the clean reference: no race (the winner published alone), the same next run, in its own bucket
            clean = Bucket.from_uri((work or world.work) / f"clean-{winner}")
            if not clean.exists(f"models/versions/{VN}/manifest.json"):
                clone_bucket(Bucket.from_uri(world.cand), clean)
                cstore = ModelStore(clean)
                pipeline.publish(cstore, winner, V0)
                run_update_in_process(world, clean, winner, VN, lpid)
            cmp = compare(store.load_arrays(VN), ModelStore(clean).load_arrays(VN))
            details["model"] = cmp
            checks["loser_applied_next_run"] = (
                store.current() == VN and not pipeline.pending(bucket, store)["pending"]
            )
            checks["model_equal"] = bool(cmp["exact"])
            checks["lineage_once"] = lineage_once(store.read_manifest(VN), [CANDIDATE_OF[winner], lpid])
    checks["never_incomplete"] = watch.ok
    details["watcher"] = {"polls": watch.polls, "seen": watch.seen, "violations": watch.violations}
    return {"fault": "concurrent_publish", "checks": checks, "details": details}


# ----------------------------------------------------------------------------------------------------------------
# all of them
# ----------------------------------------------------------------------------------------------------------------
def report_entry(result: dict) -> dict:
    return {
        "fault": result["fault"],
        "survived": all(result["checks"].values()),
        "checks": result["checks"],
        "details": result.get("details", {}),
    }


FAULTS = (
    "kill_update",
    "s3_outage_at_manifest",
    "s3_outage_at_pointer",
    "after_pointer",
    "concurrent_publish",
    "concurrent_publish_s3",
)
NEEDS_DAG = {"kill_update", "concurrent_publish", "concurrent_publish_s3"}


def run_faults(workdir: str | Path | None = None, only: list[str] | None = None) -> dict:
    """Inject every fault once (or those named in ``only``; S3 ones against a moto server started here) and
    report what survived."""
    unknown = sorted(set(only or ()) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {list(FAULTS)}")
    wanted = list(only or FAULTS)
    from s3server import DUMMY_ENV, MotoServer

    from streamrec.spark.session import get_session
    from streamrec.storage.bucket import Bucket

    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="streamrec-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    saved_env = dict(os.environ)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        os.environ.pop(var, None)
    os.environ.update(DUMMY_ENV)
    os.environ.update(
        AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true"
    )
    moto = MotoServer(log_path=work / "moto.log").start()
    os.environ["AWS_ENDPOINT_URL_S3"] = moto.endpoint
    spark = get_session(
        "streamrec-faults", master="local[2]", checkpoint_dir=str(work / "ckpt"), shuffle_partitions=2
    )
    details = []
    try:
        t0 = time.monotonic()
        parse = start_dag_parse(work) if NEEDS_DAG & set(wanted) else None
        world = make_world(work / "world", spark)
        dag = dag_facts(work, parse) if parse is not None else None
        print(f"world ready in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        steps = [
            ("kill_update", lambda: fault_kill_update(world, work / "kill", dag)),
            ("s3_outage_at_manifest", lambda: fault_s3_outage(world, moto.endpoint, "manifest")),
            ("s3_outage_at_pointer", lambda: fault_s3_outage(world, moto.endpoint, "pointer")),
            ("after_pointer", lambda: fault_after_pointer(world, Bucket.from_uri(work / "after-pointer"))),
            (
                "concurrent_publish",
                lambda: fault_concurrent_publish(
                    world, Bucket.from_uri(work / "concurrent"), dag, spark, work
                ),
            ),
            (
                "concurrent_publish_s3",
                lambda: fault_concurrent_publish(world, _new_s3_bucket(moto.endpoint), dag),
            ),
        ]
        assert [name for name, _ in steps] == list(FAULTS)
        for name, step in steps:
            if name not in wanted:
                continue
            t1 = time.monotonic()
            try:
                res = step()
            except Exception as exc:  # noqa: BLE001 - a crashed scenario is a fault not survived
                res = {"fault": name, "checks": {"ran": False}, "details": {"error": repr(exc)}}
            res["fault"] = name
            res.setdefault("details", {})["seconds"] = round(time.monotonic() - t1, 1)
            print(f"{res['fault']}: {res['checks']}", file=sys.stderr)
            details.append(report_entry(res))
    finally:
        spark.stop()
        moto.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "faults_injected": len(details),
        "faults_survived": sum(d["survived"] for d in details),
        "details": details,
    }


def run_cluster_faults(home: str | Path | None = None) -> dict:
    """The cluster topology's faults (``bench/cluster_faults.py``, a private ``scripts/cluster-up`` cluster): a
    Spark worker killed mid-update, the Spark master down when an update is due, PostgreSQL restarted mid-run;
    each must end in the model of a clean run with every partition once in the lineage. Same report format."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cluster_faults import run_cluster_faults as run

    return run(home)


def _new_s3_bucket(endpoint: str) -> Any:
    import uuid

    from streamrec.storage.bucket import S3Bucket

    name = f"faults-{uuid.uuid4().hex[:10]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    return S3Bucket(name, client=client)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="keep the buckets and logs here (default: a temporary folder, removed)")
    ap.add_argument(
        "--only", action="append", choices=FAULTS, help="inject only this fault (repeatable; default: all)"
    )
    ap.add_argument(
        "--cluster", action="store_true", help="the cluster topology's faults instead (cluster_faults)"
    )
    args = ap.parse_args(argv)
    out = run_cluster_faults(args.workdir) if args.cluster else run_faults(args.workdir, args.only)
    print(json.dumps(out, sort_keys=True, default=str))
    return 0 if out["faults_survived"] == out["faults_injected"] else 1


if __name__ == "__main__":
    sys.exit(main())

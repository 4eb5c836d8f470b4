"""Start, watch and stop the native cluster (``make cluster-up`` / ``cluster-down`` / ``cluster-demo``).

The services are those of ``docker-compose.yaml``, translated by ``scripts/cluster_services.py``: PostgreSQL,
the moto server (for MinIO), ``airflow-init`` and ``minio-init`` (one-shots), the Spark master, N Spark workers,
the Spark Connect server (the update's warm Spark), the Airflow API server, scheduler, DAG processor and
triggerer. Each runs as its own process group on
127.0.0.1 under a small supervisor (this file, ``_supervise``) that restarts it when it dies, as compose's
``restart: always`` does; its log is ``$HOME/logs/<service>.log`` and its pids ``$HOME/run/<service>.pid``
(``$HOME`` = ``$STREAMREC_CLUSTER_HOME``, default ``var/cluster``). Services start when what they depend on
(compose's ``depends_on``) is healthy or done, and ``up`` returns once every health check (compose's, run here)
passes.

    python scripts/cluster_launcher.py up | down [--purge] | status | env-file
    python scripts/cluster_launcher.py start|stop|kill|restart SERVICE     (faults, maintenance)
    python scripts/cluster_launcher.py run -- CMD ...    (CMD in a client environment: URLs, bucket, keys)

Secrets come from ``$HOME/cluster.env`` (generated once, mode 600, like ``make compose-env``'s ``.env``) and the
S3 keys moto made for the application user (``$HOME/state/s3.json``, mode 600); they reach processes only
through their environment (and the Spark secret through the entrypoint's private ``spark-defaults.conf``).
``down`` stops exactly the processes ``up`` recorded; the data (PostgreSQL, logs, a snapshot of the bucket,
since moto keeps it in memory) stays unless ``--purge``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

import cluster_data as cd  # noqa: E402
import cluster_services as cs  # noqa: E402

HEALTH_TIMEOUT = float(os.environ.get("CLUSTER_HEALTH_TIMEOUT", "900"))


def cluster_home() -> Path:
    return cs.checked_home(Path(os.environ.get("STREAMREC_CLUSTER_HOME") or cs.REPO / "var" / "cluster"))


def say(*a: object) -> None:
    print("cluster:", *a, flush=True)


# ----------------------------------------------------------------------------------------------- settings
def load_env(home: Path, create: bool = False) -> dict[str, str]:
    """The cluster's env file (generated on first use) with the caller's environment over it (compose's rule:
    the shell wins over .env), and the application user's S3 keys once moto has made them."""
    path = cs.checked_home(home) / "cluster.env"
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{path} (start the cluster first: make cluster-up)")
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cs.render_env_file())
        say(f"wrote {path} (generated secrets, mode 600)")
    env = {**cs.NATIVE_DEFAULTS, **cs.parse_env_file(path.read_text())}
    for key in list(env):
        if key in os.environ and not key.startswith("AWS_"):
            env[key] = os.environ[key]
    keys = home / "state" / "s3.json"
    if keys.exists():
        app = json.loads(keys.read_text())["app"]
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = app["id"], app["secret"]
    return env


def topology(home: Path | None = None, create: bool = False) -> cs.Topology:
    home = home or cluster_home()
    return cs.Topology(home, load_env(home, create))


# ------------------------------------------------------------------------------------------------ processes
def starttime(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(rec: dict | None) -> bool:
    return bool(rec) and starttime(rec["pid"]) == rec["start"]


def group_members(pgid: int, not_before: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = p.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and int(fields[19]) >= not_before:
                out.append(int(p.name))
    return out


def record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def signal_group(rec: dict, sig: int) -> int:
    """Send ``sig`` to the members of the recorded process group started no earlier than it; returns how many.
    Nothing when the recorded leader's pid now belongs to another process (recycled)."""
    now = starttime(rec["pid"])
    if now is not None and now != rec["start"]:
        return 0
    members = group_members(rec["pgid"], rec["start"])
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return len(members)


def supervise(name: str) -> int:
    """Run one service and restart it when it exits (compose's ``restart: always``); stop it on SIGTERM.

    Runs in its own session (started by :func:`start`); the service in another, recorded in
    ``run/<name>.child``, so a stop reaches its whole tree (task processes, Spark drivers, executors)."""
    home = cluster_home()
    svc = next(s for s in topology(home).services() if s.name == name)
    run = home / "run"
    stopping = threading.Event()
    child: list[subprocess.Popen] = []

    def on_term(signum, frame):  # noqa: ARG001
        stopping.set()
        if child and child[0].poll() is None:
            rec = record(run / f"{name}.child")
            if rec:
                signal_group(rec, getattr(signal, svc.stop_signal))

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    delay = 1.0
    with open(home / "logs" / f"{name}.log", "ab", buffering=0) as log:
        while not stopping.is_set():
            kwargs = {}
            if svc.user and os.geteuid() == 0:
                kwargs = {"user": svc.user, "group": "nogroup", "extra_groups": []}
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: starting {name}\n".encode())
            proc = subprocess.Popen(
                svc.argv,
                env=svc.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(home),
                start_new_session=True,
                **kwargs,
            )
            child[:] = [proc]
            rec = {"pid": proc.pid, "pgid": proc.pid, "start": starttime(proc.pid), "argv0": svc.argv[0]}
            (run / f"{name}.child").write_text(json.dumps(rec))
            t0 = time.time()
            rc = proc.wait()
            # what the service left behind in its group (e.g. a worker's executors) goes with it
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if not signal_group(rec, sig):
                    break
                deadline = time.time() + wait
                while group_members(rec["pgid"], rec["start"] or 0) and time.time() < deadline:
                    time.sleep(0.3)
            log.write(
                f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {name} exited with {rc}\n".encode()
            )
            if stopping.is_set() or not svc.restart:
                break
            delay = 1.0 if time.time() - t0 > 60 else min(delay * 2, 16.0)
            log.write(f"=== supervisor: restarting {name} in {delay:.0f}s (restart: always)\n".encode())
            stopping.wait(delay)
    (run / f"{name}.child").unlink(missing_ok=True)
    return 0


def start(home: Path, name: str) -> None:
    """Start ``name``'s supervisor (detached, own session), unless it is running."""
    run = home / "run"
    if alive(record(run / f"{name}.pid")):
        return
    log = open(home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, __file__, "_supervise", name],
        env={**os.environ, "STREAMREC_CLUSTER_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    (run / f"{name}.pid").write_text(
        json.dumps({"pid": proc.pid, "pgid": proc.pid, "start": starttime(proc.pid), "service": name})
    )


def stop(home: Path, name: str, grace: float = 40.0) -> bool:
    """Stop what ``start`` started for ``name`` (its supervisor and the service's process group)."""
    run = home / "run"
    sup, child = record(run / f"{name}.pid"), record(run / f"{name}.child")
    stopped = False
    if alive(sup):
        os.kill(sup["pid"], signal.SIGTERM)
        deadline = time.time() + grace
        while alive(sup) and time.time() < deadline:
            time.sleep(0.3)
        stopped = True
    for rec in (child, sup):
        if rec and group_members(rec["pgid"], rec["start"] or 0):
            signal_group(rec, signal.SIGKILL)
            stopped = True
    (run / f"{name}.pid").unlink(missing_ok=True)
    (run / f"{name}.child").unlink(missing_ok=True)
    return stopped


def kill(home: Path, name: str) -> int:
    """SIGKILL the service's process group (a crash); its supervisor restarts it. Returns the processes hit."""
    rec = record(home / "run" / f"{name}.child")
    if not alive(rec):
        raise RuntimeError(f"{name} is not running")
    return signal_group(rec, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- health
def healthy(svc: cs.Service) -> bool:
    if not svc.health:
        return True
    try:
        r = subprocess.run(svc.health, env=svc.env, capture_output=True, timeout=60, cwd="/")
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def wait_healthy(home: Path, svc: cs.Service, timeout: float = HEALTH_TIMEOUT) -> float:
    t0 = time.time()
    poll = max(2.0, min(svc.interval, 15.0 if "airflow" in " ".join(svc.health or []) else 5.0))
    while not healthy(svc):
        rec = record(home / "run" / f"{svc.name}.pid")
        if not alive(rec):
            raise RuntimeError(f"{svc.name}: its supervisor is gone; see {home}/logs/{svc.name}.log")
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{svc.name} not healthy after {timeout:.0f}s; see {home}/logs/{svc.name}.log")
        time.sleep(poll)
    return time.time() - t0


# ------------------------------------------------------------------------------------------------- up, down
def up(home: Path) -> dict:
    """Start every service whose dependencies are ready, wait for every health check; returns timings (s)."""
    for d in ("logs", "run", "volumes/spark-checkpoints", "airflow/logs"):
        (home / d).mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)  # the postgres server (user nobody) must reach its folder
    (home / "airflow" / "auth").mkdir(mode=0o700, exist_ok=True)
    topo = topology(home, create=True)
    cd.init_postgres(home, topo)
    done: dict[str, float] = {}
    errors: list[str] = []
    t0 = time.time()
    lock = threading.Lock()

    def bring_up(svc: cs.Service) -> None:
        try:
            t = time.time()
            fresh = topology(home)  # the S3 keys exist only after minio-init
            svc = next(s for s in fresh.services() if s.name == svc.name)
            if svc.name == "minio-init":
                cd.init_s3(home, fresh, record(home / "run" / "minio.child"))
            elif svc.one_shot:
                with open(home / "logs" / f"{svc.name}.log", "ab") as log:
                    r = subprocess.run(
                        svc.argv, env=svc.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(home)
                    )
                if r.returncode != 0:
                    raise RuntimeError(f"{svc.name} failed ({r.returncode}); see {home}/logs/{svc.name}.log")
            else:
                start(home, svc.name)
                wait_healthy(home, svc)
                if svc.name == "postgres":
                    cd.create_database(fresh)
            with lock:
                done[svc.name] = round(time.time() - t, 1)
            say(f"{svc.name}: {'done' if svc.one_shot else 'healthy'} after {time.time() - t:.0f}s")
        except Exception as exc:  # noqa: BLE001 - reported below, the others are stopped by the caller
            with lock:
                errors.append(f"{svc.name}: {exc}")

    pending = {s.name: s for s in topo.services()}
    threads: dict[str, threading.Thread] = {}
    while (pending or any(t.is_alive() for t in threads.values())) and not errors:
        ready = [n for n, svc in pending.items() if all(d in done for d in svc.depends)]
        for name in ready:
            threads[name] = threading.Thread(target=bring_up, args=(pending.pop(name),), daemon=True)
            threads[name].start()
        if not ready and pending and not any(t.is_alive() for t in threads.values()):
            stuck = {n: [d for d in s.depends if d not in done] for n, s in pending.items()}
            errors.append(f"unsatisfiable dependencies: {stuck}")
        time.sleep(0.5)
    for t in threads.values():
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    done["total"] = round(time.time() - t0, 1)
    return done


def down(home: Path, purge: bool = False) -> list[str]:
    """Stop every service ``up`` started (in the reverse order of the dependencies). Keeps the data unless
    ``purge``; moto's bucket is copied to ``s3-snapshot/`` first (restored by the next ``up``)."""
    topo = topology(home)
    stopped = []
    if not purge and alive(record(home / "run" / "minio.pid")) and (home / "state" / "s3.json").exists():
        try:
            say(f"bucket snapshot: {cd.snapshot_bucket(home, topo)} objects into {home / 's3-snapshot'}")
        except Exception as exc:  # noqa: BLE001 - stopping matters more than the snapshot
            say(f"bucket snapshot failed: {exc}")
    order = [s.name for s in topo.services() if not s.one_shot]
    layers = [
        list(cs.AIRFLOW),
        ["spark-connect"],  # a driver of the master's: gone before the workers and the master
        [n for n in order if n.startswith("spark-worker")],
        ["spark-master"],
        ["minio", "postgres"],
    ]
    extra = [p.stem for p in (home / "run").glob("*.pid") if not any(p.stem in layer for layer in layers)]
    for layer in [extra, *layers]:
        threads = [threading.Thread(target=lambda n=n: stop(home, n) and stopped.append(n)) for n in layer]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    (home / "state" / "s3.json").unlink(missing_ok=True)  # moto's keys die with it
    if purge:
        shutil.rmtree(home, ignore_errors=True)
    return stopped


def status(home: Path) -> dict[str, str]:
    topo = topology(home)
    out = {}
    for svc in topo.services():
        if svc.one_shot:
            continue
        if not alive(record(home / "run" / f"{svc.name}.pid")):
            out[svc.name] = "stopped"
        elif not alive(record(home / "run" / f"{svc.name}.child")):
            out[svc.name] = "restarting"
        else:
            out[svc.name] = "healthy" if healthy(svc) else "unhealthy"
    return out


def preflight(topo: cs.Topology) -> None:
    """Clear messages for what is missing, and ports taken by someone else."""
    import socket

    cs.pg_bin("postgres")
    try:
        import psycopg  # noqa: F401  (the launcher's own checks)
        import psycopg2  # noqa: F401  (Airflow's metadata connection, postgresql+psycopg2://)
    except ImportError as exc:
        raise SystemExit(
            f"cluster: {exc.name} is missing from .venv: run `make setup` (requirements.lock)"
        ) from None
    if not topo.s3a_jars:
        raise SystemExit(
            "cluster: no s3a jars in .venv/s3a-jars: run `make setup` (scripts/fetch-s3a-jars.sh)"
        )
    taken = []
    for svc, port in [("postgres", 5432), ("minio", 9000), ("spark-master", 7077), ("spark-master", 8080),
                      ("airflow-apiserver", 8080), ("airflow-scheduler", 8974), ("spark-connect", 15002)]:  # fmt: skip
        p = topo.port(svc, port)
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", p)) == 0:
                taken.append(f"{p} ({svc})")
    if taken:
        raise SystemExit(
            f"cluster: ports in use by another process: {', '.join(taken)}; set them in the env file"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "cmd",
        choices=[
            "up",
            "down",
            "status",
            "start",
            "stop",
            "kill",
            "restart",
            "run",
            "spark-apps",
            "env-file",
            "_supervise",
        ],
    )
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    home = cluster_home()
    if a.cmd == "_supervise":
        return supervise(a.args[0])
    if a.cmd == "env-file":
        load_env(home, create=True)
        print(home / "cluster.env")
        return 0
    if a.cmd == "up":
        running = (
            [p.stem for p in (home / "run").glob("*.pid") if alive(record(p))]
            if (home / "run").exists()
            else []
        )
        if not running:
            preflight(topology(home, create=True))
        t = up(home)
        topo = topology(home)
        ce = topo.client_env()
        say(f"up in {t['total']}s: {json.dumps(t)}")
        say(
            f"Airflow UI:       {ce['AIRFLOW_URL']}  (login {ce['AIRFLOW_ADMIN_USER']}, password in {ce['AIRFLOW_PASSWORD_FILE']})"
        )
        say(
            f"Spark master UI:  {ce['SPARK_MASTER_UI']}  (master {ce['SPARK_MASTER_URL']}, {topo.workers} workers)"
        )
        say(
            f"bucket:           {ce['STREAMREC_BUCKET']} at {ce['AWS_ENDPOINT_URL']} (moto; keys in {home}/state/s3.json)"
        )
        say(f"logs:             {home}/logs/   stop: make cluster-down")
        return 0
    if a.cmd == "down":
        if not (home / "cluster.env").exists():
            say("not set up (nothing to stop)")
            return 0
        stopped = down(home, purge="--purge" in a.args)
        say(
            f"stopped {len(stopped)} services: {', '.join(sorted(stopped)) or '-'}"
            + (" (purged)" if "--purge" in a.args else f"; data kept in {home}")
        )
        return 0
    if a.cmd == "status":
        st = status(home)
        for k, v in st.items():
            print(f"{k:24s} {v}")
        return 0 if all(v == "healthy" for v in st.values()) else 1
    if a.cmd in ("start", "stop", "kill", "restart"):
        for name in a.args:
            if a.cmd in ("stop", "restart"):
                stop(home, name)
            if a.cmd in ("start", "restart"):
                start(home, name)
                wait_healthy(home, next(s for s in topology(home).services() if s.name == name))
            if a.cmd == "kill":
                say(f"killed {name}: {kill(home, name)} processes")
        return 0
    if a.cmd == "spark-apps":
        topo = topology(home)
        st = cd.spark_state(topo)
        print(f"Spark master {st['url']} ({st['status']}), UI {topo.client_env()['SPARK_MASTER_UI']}: "
              f"{st['aliveworkers']} workers, {st['cores']} cores")  # fmt: skip
        for app in sorted(st["completedapps"] + st["activeapps"], key=lambda x: x["starttime"]):
            print(f"  {app['id']:28s} {app['name']:22s} {app['state']:9s} cores {app['cores']}  "
                  f"{app['duration'] / 1000:6.1f}s  executors on {len(app['workers'])} workers")  # fmt: skip
        return 0
    if a.cmd == "run":
        cmd = a.args[1:] if a.args[:1] == ["--"] else a.args
        env = topology(home).client_env()
        return subprocess.call([str(cs.ENTRYPOINT), *cmd], env=env)
    return 2


if __name__ == "__main__":
    sys.exit(main())

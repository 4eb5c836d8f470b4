"""Start, watch and stop the native cluster (``make cluster-up`` / ``cluster-down`` / ``cluster-demo``).

The services are those of ``docker-compose.yaml``, translated by ``scripts/cluster_services.py``: PostgreSQL,
the moto server (for MinIO), ``airflow-init`` and ``minio-init`` (one-shots), the Spark master, N Spark workers,
the Airflow API server, scheduler, DAG processor and triggerer. Each runs as its own process group on
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

import cluster_services as cs  # noqa: E402

HEALTH_TIMEOUT = float(os.environ.get("CLUSTER_HEALTH_TIMEOUT", "900"))


def cluster_home() -> Path:
    return Path(os.environ.get("STREAMREC_CLUSTER_HOME") or cs.REPO / "var" / "cluster").resolve()


def say(*a: object) -> None:
    print("cluster:", *a, flush=True)


# ----------------------------------------------------------------------------------------------- settings
def load_env(home: Path, create: bool = True) -> dict[str, str]:
    """The cluster's env file (generated on first use) with the caller's environment over it (compose's rule:
    the shell wins over .env), and the application user's S3 keys once moto has made them."""
    path = home / "cluster.env"
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


def topology(home: Path | None = None) -> cs.Topology:
    home = home or cluster_home()
    return cs.Topology(home, load_env(home))


# ------------------------------------------------------------------------------------------------ processes
def _starttime(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(rec: dict | None) -> bool:
    return bool(rec) and _starttime(rec["pid"]) == rec["start"]


def _group_members(pgid: int, not_before: int) -> list[int]:
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


def _record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _signal_group(rec: dict, sig: int) -> int:
    """Send ``sig`` to the members of the recorded process group started no earlier than it; returns how many.
    Nothing when the recorded leader's pid now belongs to another process (recycled)."""
    now = _starttime(rec["pid"])
    if now is not None and now != rec["start"]:
        return 0
    members = _group_members(rec["pgid"], rec["start"])
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
            rec = _record(run / f"{name}.child")
            if rec:
                _signal_group(rec, getattr(signal, svc.stop_signal))

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
            rec = {"pid": proc.pid, "pgid": proc.pid, "start": _starttime(proc.pid), "argv0": svc.argv[0]}
            (run / f"{name}.child").write_text(json.dumps(rec))
            t0 = time.time()
            rc = proc.wait()
            # what the service left behind in its group (e.g. a worker's executors) goes with it
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if not _signal_group(rec, sig):
                    break
                deadline = time.time() + wait
                while _group_members(rec["pgid"], rec["start"] or 0) and time.time() < deadline:
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
    if _alive(_record(run / f"{name}.pid")):
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
        json.dumps({"pid": proc.pid, "pgid": proc.pid, "start": _starttime(proc.pid), "service": name})
    )


def stop(home: Path, name: str, grace: float = 40.0) -> bool:
    """Stop what ``start`` started for ``name`` (its supervisor and the service's process group)."""
    run = home / "run"
    sup, child = _record(run / f"{name}.pid"), _record(run / f"{name}.child")
    stopped = False
    if _alive(sup):
        os.kill(sup["pid"], signal.SIGTERM)
        deadline = time.time() + grace
        while _alive(sup) and time.time() < deadline:
            time.sleep(0.3)
        stopped = True
    for rec in (child, sup):
        if rec and _group_members(rec["pgid"], rec["start"] or 0):
            _signal_group(rec, signal.SIGKILL)
            stopped = True
    (run / f"{name}.pid").unlink(missing_ok=True)
    (run / f"{name}.child").unlink(missing_ok=True)
    return stopped


def kill(home: Path, name: str) -> int:
    """SIGKILL the service's process group (a crash); its supervisor restarts it. Returns the processes hit."""
    rec = _record(home / "run" / f"{name}.child")
    if not _alive(rec):
        raise RuntimeError(f"{name} is not running")
    return _signal_group(rec, signal.SIGKILL)


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
        rec = _record(home / "run" / f"{svc.name}.pid")
        if not _alive(rec):
            raise RuntimeError(f"{svc.name}: its supervisor is gone; see {home}/logs/{svc.name}.log")
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{svc.name} not healthy after {timeout:.0f}s; see {home}/logs/{svc.name}.log")
        time.sleep(poll)
    return time.time() - t0


# ------------------------------------------------------------------------------------------ postgres, s3
def init_postgres(home: Path, topo: cs.Topology) -> None:
    """What the official image's entrypoint does on an empty volume: initdb with ``POSTGRES_USER`` /
    ``POSTGRES_PASSWORD`` (scram-sha-256 for every connection), as an unprivileged user."""
    data = home / "postgres" / "data"
    for d in (home / "postgres", home / "postgres" / "run"):
        d.mkdir(parents=True, exist_ok=True)
    if (data / "PG_VERSION").exists():
        return
    env = topo.compose_env("postgres")
    data.mkdir(mode=0o700, exist_ok=True)
    pwfile = home / "postgres" / ".pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(env["POSTGRES_PASSWORD"] + "\n")
    kwargs = {}
    if os.geteuid() == 0:
        for p in (home / "postgres", home / "postgres" / "run", data, pwfile):
            shutil.chown(p, "nobody", "nogroup")
        kwargs = {"user": "nobody", "group": "nogroup", "extra_groups": []}
    try:
        r = subprocess.run(
            [cs.pg_bin("initdb"), "-D", str(data), "-U", env["POSTGRES_USER"], f"--pwfile={pwfile}", "-E", "UTF8",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-instructions"],
            capture_output=True, text=True, cwd=str(home / "postgres"), env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            **kwargs,
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
    say(f"PostgreSQL initialised in {data} (user {env['POSTGRES_USER']}, password auth)")


def create_database(topo: cs.Topology) -> None:
    """``POSTGRES_DB`` (the official image creates it on first start)."""
    import psycopg

    env = topo.compose_env("postgres")
    with psycopg.connect(
        host="127.0.0.1",
        port=topo.port("postgres", 5432),
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (env["POSTGRES_DB"],)).fetchone():
            conn.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')


def s3_clients(topo: cs.Topology, who: str = "admin"):
    import boto3
    from botocore.config import Config

    keys = json.loads((topo.home / "state" / "s3.json").read_text())[who]
    kw = dict(
        endpoint_url=f"http://127.0.0.1:{topo.port('minio', 9000)}",
        region_name=topo.env.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=keys["id"],
        aws_secret_access_key=keys["secret"],
        config=Config(s3={"addressing_style": "path"}),
    )
    return boto3.client("s3", **kw), boto3.client("iam", **kw)


def bucket_name(topo: cs.Topology) -> str:
    b = cs.interpolate("${STREAMREC_BUCKET:-s3://streamrec}", topo.env)
    return b.split("://", 1)[1].split("/", 1)[0]


def app_policy(bucket: str) -> dict:
    """The application user's policy: list, read, write and delete in ``bucket``, nothing else (the policy
    minio-init gives it in docker-compose.yaml). One moto deviation: moto authorizes a multi-object delete
    (``DeleteObjects``, which s3a uses to clean up) as ``s3:DeleteObject`` on the *bucket's* ARN, where AWS checks
    each key; so the bucket's ARN is listed for ``s3:DeleteObject`` too (meaningless on AWS, no wider)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{bucket}"]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                           "s3:ListMultipartUploadParts"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": [f"arn:aws:s3:::{bucket}"]},
        ],
    }  # fmt: skip


def init_s3(home: Path, topo: cs.Topology) -> None:
    """minio-init's duties on the moto server: the bucket, an application user limited to it (its keys, made
    by moto, into ``state/s3.json``), an admin user standing for MinIO's root; then IAM checks are switched on
    (``/moto-api/reset-auth``): from then on every request must be signed by a known key and allowed by its
    user's policy. Restores the bucket snapshot ``down`` took, if any."""
    import urllib.request

    import boto3

    state = home / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    moto = _record(home / "run" / "minio.child")
    keys_file = state / "s3.json"
    if keys_file.exists() and json.loads(keys_file.read_text()).get("moto") == moto:
        return  # this moto process was initialised already
    endpoint = f"http://127.0.0.1:{topo.port('minio', 9000)}"
    plain = dict(
        endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="init", aws_secret_access_key="init"
    )
    s3, iam = boto3.client("s3", **plain), boto3.client("iam", **plain)
    bucket = bucket_name(topo)
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    policy = app_policy(bucket)
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    out = {"moto": moto, "bucket": bucket}
    for who, user, pol in (("app", "streamrec-app", policy), ("admin", "streamrec-admin", admin)):
        try:
            iam.create_user(UserName=user)
        except iam.exceptions.EntityAlreadyExistsException:  # an init that stopped half-way
            for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                iam.delete_access_key(UserName=user, AccessKeyId=k["AccessKeyId"])
        iam.put_user_policy(UserName=user, PolicyName=f"{user}-policy", PolicyDocument=json.dumps(pol))
        k = iam.create_access_key(UserName=user)["AccessKey"]
        out[who] = {"user": user, "id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(req, timeout=10).read()
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(out, f)
    say(
        f"bucket s3://{bucket} ready on {endpoint}; application user streamrec-app limited to it (IAM checks on)"
    )
    restore_bucket(home, topo)


def snapshot_bucket(home: Path, topo: cs.Topology) -> int:
    """Copy the bucket to ``s3-snapshot/`` (moto keeps it in memory; a MinIO volume would outlive ``down``)."""
    s3, _ = s3_clients(topo)
    bucket = bucket_name(topo)
    snap = home / "s3-snapshot"
    tmp = home / "s3-snapshot.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            dest = tmp / obj["Key"]
            if ".." in Path(obj["Key"]).parts or obj["Key"].startswith("/"):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(dest))
            n += 1
    shutil.rmtree(snap, ignore_errors=True)
    if tmp.exists():
        tmp.rename(snap)
    return n


def restore_bucket(home: Path, topo: cs.Topology) -> None:
    snap = home / "s3-snapshot"
    if not snap.is_dir():
        return
    s3, _ = s3_clients(topo)
    bucket = bucket_name(topo)
    files = sorted((p for p in snap.rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime)
    for p in files:  # in the order they were written, so "arrival order" by LastModified is kept
        s3.upload_file(str(p), bucket, p.relative_to(snap).as_posix())
    say(f"restored {len(files)} objects of s3://{bucket} from {snap}")


# ------------------------------------------------------------------------------------------------- up, down
def up(home: Path) -> dict:
    """Start every service whose dependencies are ready, wait for every health check; returns timings (s)."""
    for d in ("logs", "run", "volumes/spark-checkpoints", "airflow/logs"):
        (home / d).mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)  # the postgres server (user nobody) must reach its folder
    (home / "airflow" / "auth").mkdir(mode=0o700, exist_ok=True)
    topo = topology(home)
    init_postgres(home, topo)
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
                init_s3(home, fresh)
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
                    create_database(fresh)
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
    if not purge and _alive(_record(home / "run" / "minio.pid")) and (home / "state" / "s3.json").exists():
        try:
            say(f"bucket snapshot: {snapshot_bucket(home, topo)} objects into {home / 's3-snapshot'}")
        except Exception as exc:  # noqa: BLE001 - stopping matters more than the snapshot
            say(f"bucket snapshot failed: {exc}")
    order = [s.name for s in topo.services() if not s.one_shot]
    layers = [
        list(cs.AIRFLOW),
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
        if not _alive(_record(home / "run" / f"{svc.name}.pid")):
            out[svc.name] = "stopped"
        elif not _alive(_record(home / "run" / f"{svc.name}.child")):
            out[svc.name] = "restarting"
        else:
            out[svc.name] = "healthy" if healthy(svc) else "unhealthy"
    return out


def spark_state(topo: cs.Topology) -> dict:
    """The Spark master's JSON status, each application with the workers its executors ran on (from each
    worker's JSON status: ``executors`` and ``finishedexecutors`` name their application)."""
    import urllib.request

    def get(url: str) -> dict:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)

    master = get(f"http://127.0.0.1:{topo.port('spark-master', 8080)}/json/")
    on: dict[str, set[str]] = {}
    for w in master["workers"]:
        try:
            ws = get(w["webuiaddress"].rstrip("/") + "/json/")
        except OSError:
            continue
        for ex in ws.get("executors", []) + ws.get("finishedexecutors", []):
            on.setdefault(ex["appid"], set()).add(w["id"])
    for app in master.get("activeapps", []) + master.get("completedapps", []):
        app["workers"] = sorted(on.get(app["id"], ()))
    return master


# ------------------------------------------------------------------------------- a private cluster (tests, benches)
def free_ports(n_workers: int = 2) -> dict[str, str]:
    """Free loopback ports for every port setting of the env file (the workers' UI ports consecutive)."""
    import socket

    socks, ports = [], []
    for _ in range(6):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    base = next(
        b
        for b in range(28191, 32000, n_workers + 3)
        if all(socket.socket().connect_ex(("127.0.0.1", p)) != 0 for p in range(b, b + n_workers))
    )
    keys = ["AIRFLOW_PORT", "SPARK_MASTER_UI_PORT", "MINIO_API_PORT", "CLUSTER_SPARK_MASTER_PORT",
            "CLUSTER_POSTGRES_PORT", "CLUSTER_SCHEDULER_HEALTH_PORT"]  # fmt: skip
    return {**dict(zip(keys, map(str, ports), strict=True)), "CLUSTER_SPARK_WORKER_UI_PORT": str(base)}


class Private:
    """A cluster of its own in ``home`` (fresh secrets, free ports): for tests and benchmarks. ``launcher(...)``
    runs this script on it in a subprocess; ``topology()`` and ``client_env()`` read its settings here."""

    def __init__(self, home: Path, **overrides: str) -> None:
        self.home = Path(home).resolve()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        settings = {**free_ports(), **{k: str(v) for k, v in overrides.items()}}
        fd = os.open(self.home / "cluster.env", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cs.render_env_file() + "".join(f"{k}={v}\n" for k, v in settings.items()))
        drop = set(settings) | set(cs.NATIVE_DEFAULTS) | set(cs.parse_env_file(cs.ENV_EXAMPLE.read_text()))
        self.env = {
            k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("AWS_", "AIRFLOW"))
        }
        self.env.update(STREAMREC_CLUSTER_HOME=str(self.home), PYTHONPATH=str(cs.REPO))

    def launcher(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, __file__, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout, cwd=cs.REPO)  # fmt: skip
        if check and r.returncode != 0:
            raise RuntimeError(
                f"cluster_launcher {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            )
        return r

    def settings(self) -> dict[str, str]:
        env = {**cs.NATIVE_DEFAULTS, **cs.parse_env_file((self.home / "cluster.env").read_text())}
        keys = self.home / "state" / "s3.json"
        if keys.exists():
            app = json.loads(keys.read_text())["app"]
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = app["id"], app["secret"]
        return env

    def topology(self) -> cs.Topology:
        return cs.Topology(self.home, self.settings())

    def client_env(self) -> dict[str, str]:
        return self.topology().client_env()


def log_files(home: Path) -> list[Path]:
    """Every log the cluster writes: each service's (``logs/``: the Spark master and workers, Airflow's
    services, PostgreSQL, moto), Airflow's task logs, and the executors' ``stdout``/``stderr`` in the workers'
    work folders."""
    out = sorted((home / "logs").glob("*.log")) + sorted(
        p for p in (home / "airflow" / "logs").rglob("*") if p.is_file()
    )
    out += sorted(p for p in home.glob("spark-worker-*/work/*/*/std*") if p.is_file())
    return out


def secret_values(home: Path) -> dict[str, str]:
    """Every secret the cluster holds (env file and moto's keys), by name: what no log may contain."""
    env = cs.parse_env_file((home / "cluster.env").read_text())
    out = {
        k: v for k, v in env.items() if cs.SECRET_NAME.search(k) and k != "AWS_ACCESS_KEY_ID" and len(v) >= 8
    }
    keys = home / "state" / "s3.json"
    if keys.exists():
        for who, k in json.loads(keys.read_text()).items():
            if isinstance(k, dict) and "secret" in k:
                out[f"s3 {who} secret"] = k["secret"]
    return out


def preflight(topo: cs.Topology) -> None:
    """Clear messages for what is missing, and ports taken by someone else."""
    import socket

    cs.pg_bin("postgres")
    if not topo.s3a_jars:
        raise SystemExit(
            "cluster: no s3a jars in .venv/s3a-jars: run `make setup` (scripts/fetch-s3a-jars.sh)"
        )
    taken = []
    for svc, port in [("postgres", 5432), ("minio", 9000), ("spark-master", 7077), ("spark-master", 8080),
                      ("airflow-apiserver", 8080), ("airflow-scheduler", 8974)]:  # fmt: skip
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
        load_env(home)
        print(home / "cluster.env")
        return 0
    if a.cmd == "up":
        running = (
            [p.stem for p in (home / "run").glob("*.pid") if _alive(_record(p))]
            if (home / "run").exists()
            else []
        )
        if not running:
            preflight(topology(home))
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
        st = spark_state(topo)
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

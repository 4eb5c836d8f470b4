"""The native cluster's data and state (``scripts/cluster_launcher.py`` runs the processes): PostgreSQL's
initialisation, the bucket on moto (its users, policy, snapshot), the Spark master's view of the applications,
the cluster's logs and secrets, and a private cluster for tests and benchmarks (:class:`Private`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster_services as cs  # noqa: E402

LAUNCHER = Path(__file__).resolve().parent / "cluster_launcher.py"


def say(*a: object) -> None:
    print("cluster:", *a, flush=True)


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


def init_s3(home: Path, topo: cs.Topology, moto: dict | None) -> None:
    """minio-init's duties on the moto server: the bucket, an application user limited to it (its keys, made
    by moto, into ``state/s3.json``), an admin user standing for MinIO's root; then IAM checks are switched on
    (``/moto-api/reset-auth``): from then on every request must be signed by a known key and allowed by its
    user's policy. Restores the bucket snapshot ``down`` took, if any."""
    import urllib.request

    import boto3

    state = home / "state"
    state.mkdir(mode=0o700, exist_ok=True)
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


def spark_state(topo: cs.Topology) -> dict:
    """The Spark master's JSON status, each application with the workers its executors ran on (``workers``) and
    the workers where it has an executor now (``running_on``), from each alive worker's JSON status
    (``executors`` and ``finishedexecutors`` name their application)."""
    import urllib.request

    def get(url: str) -> dict:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)

    master = get(f"http://127.0.0.1:{topo.port('spark-master', 8080)}/json/")
    on: dict[str, set[str]] = {}
    running: dict[str, set[str]] = {}  # executors alive now (a long-lived application releases idle ones)
    for w in master["workers"]:
        # a worker restarted under a new id keeps its old, DEAD entry (same UI port): alive ones only
        if w.get("state") != "ALIVE":
            continue
        try:
            ws = get(w["webuiaddress"].rstrip("/") + "/json/")
        except OSError:
            continue
        for ex in ws.get("executors", []) + ws.get("finishedexecutors", []):
            on.setdefault(ex["appid"], set()).add(w["id"])
        for ex in ws.get("executors", []):
            running.setdefault(ex["appid"], set()).add(w["id"])
    for app in master.get("activeapps", []) + master.get("completedapps", []):
        app["workers"] = sorted(on.get(app["id"], ()))
        app["running_on"] = sorted(running.get(app["id"], ()))
    return master


# ------------------------------------------------------------------------------- a private cluster (tests, benches)
def free_ports(n_workers: int = 2) -> dict[str, str]:
    """Free loopback ports for every port setting of the env file (the workers' UI ports consecutive)."""
    import socket

    socks, ports = [], []
    for _ in range(7):
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
            "CLUSTER_POSTGRES_PORT", "CLUSTER_SCHEDULER_HEALTH_PORT", "CLUSTER_SPARK_CONNECT_PORT"]  # fmt: skip
    return {**dict(zip(keys, map(str, ports), strict=True)), "CLUSTER_SPARK_WORKER_UI_PORT": str(base)}


class Private:
    """A cluster of its own in ``home`` (fresh secrets, free ports): for tests and benchmarks. ``launcher(...)``
    runs this script on it in a subprocess; ``topology()`` and ``client_env()`` read its settings here."""

    def __init__(self, home: Path, **overrides: str) -> None:
        self.home = cs.checked_home(home)  # it is deleted first: never the checkout
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
        r = subprocess.run([sys.executable, str(LAUNCHER), *args], env=self.env, capture_output=True, text=True,
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


def leaks(home: Path) -> list[tuple[str, str]]:
    """(secret name, log file) for every secret of :func:`secret_values` found in a file of :func:`log_files`."""
    secrets = secret_values(home)
    out = []
    for path in log_files(home):
        text = path.read_text(errors="replace")
        out += [(name, str(path)) for name, value in secrets.items() if value in text]
    return out

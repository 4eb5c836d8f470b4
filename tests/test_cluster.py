"""The cluster topology for real: ``scripts/cluster-up``, ``make demo``'s scenario through it, ``cluster-down``.

Everything of ``docker-compose.yaml`` runs as processes on 127.0.0.1 (``scripts/cluster_launcher.py``):
PostgreSQL, moto (for MinIO, IAM checks on), a Spark standalone master with two workers of one core each,
Airflow's API server, scheduler, DAG processor and triggerer on LocalExecutor. The scenario is
``scripts/airflow_demo.py`` (its generated data: 20k ratings of history, two partitions of 10k and the bad one;
rank 4, 3 iterations). What it proves:

* the bootstrap and its evaluation ran as **applications of the standalone cluster** (the master's JSON API:
  finished, 2 cores), with **executors on both workers** (each worker's JSON names the application); each update
  ran **over Spark Connect** (its task log) inside the one long-lived application of the ``spark-connect`` service
  (``streamrec-connect``, running, never restarted, its executors on both workers), with no application of its own;
* the **executors** (the Connect server's) read the partitions from ``s3a://`` and wrote the model there (their
  own logs, in the workers' work folders), and the bucket holds it (read back with boto3);
* **Airflow's metadata is in PostgreSQL** (the runs, read with psycopg; no SQLite file anywhere);
* the Spark cluster **refuses a client without the secret** (``spark.authenticate``): its application never
  reaches the master; the **S3 application user** cannot touch another bucket (moto's IAM checks);
* **no secret** of the cluster (passwords, keys, the Spark secret, moto's keys) is in any log: every service's,
  the Spark master's and workers', the executors', Airflow's task logs;
* ``cluster-down`` stops every process ``cluster-up`` started and nothing else.

Cost on 2 cores: see docs/CLUSTER.md (measured with ``--durations``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

PY = str(REPO / ".venv" / "bin" / "python")
LAUNCHER = str(REPO / "scripts" / "cluster_launcher.py")


def _group_alive(rec: dict) -> bool:
    import cluster_launcher

    return bool(cluster_launcher.group_members(rec["pgid"], rec["start"] or 0))


@pytest.fixture(scope="module")
def cluster():
    import cluster_data as cl

    # under var/, not /tmp/pytest-of-*: PostgreSQL runs as nobody and must reach its folder
    c = cl.Private(REPO / "var" / f"test-cluster-{os.getpid()}", STREAMREC_DRIVER_MEMORY="1g")
    c.env["CLUSTER_HEALTH_TIMEOUT"] = "900"
    t0 = time.time()
    up = c.launcher("up", check=False)
    c.up_seconds = round(time.time() - t0, 1)
    records = []
    try:
        assert up.returncode == 0, (up.stdout + up.stderr)[-5000:] + _tail_logs(c.home)
        records = [json.loads(p.read_text()) for p in (c.home / "run").glob("*.pid")]
        records += [json.loads(p.read_text()) for p in (c.home / "run").glob("*.child")]
        yield c
    finally:
        # under var/, not /tmp/pytest-of-*: other sessions' pytest runs rotate those away
        keep = REPO / "var" / "test-cluster-logs"
        shutil.rmtree(keep, ignore_errors=True)
        for p in cl.log_files(c.home):
            dest = keep / p.relative_to(c.home)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
        print(f"cluster logs kept in {keep}")
        down = c.launcher("down", "--purge", timeout=600, check=False)
        left = [r for r in records if _group_alive(r)]
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"cluster-down left process groups running: {left}"
        assert not c.home.exists(), "--purge removes the cluster's folder"


def _tail_logs(home: Path) -> str:
    out = []
    for p in sorted((home / "logs").glob("*.log")):
        out.append(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
    return "".join(out)


def _intruder(c, master: str) -> subprocess.Popen:
    """A Spark client without the secret (no SPARK_CONF_DIR with it): it must never get an application."""
    code = (
        "from pyspark.sql import SparkSession\n"
        f"s = SparkSession.builder.master({master!r}).appName('intruder-without-secret')"
        ".config('spark.ui.enabled', 'false').getOrCreate()\n"
        "print('COUNT', s.range(10).count())\n"
    )
    env = {k: v for k, v in c.env.items() if k != "SPARK_CONF_DIR"}
    env.update(SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=PY)
    return subprocess.Popen(
        [PY, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )


def test_the_demo_runs_distributed_on_the_cluster(cluster):
    import boto3
    import cluster_data as cl
    import psycopg
    from botocore.config import Config

    c = cluster
    topo = c.topology()
    master_url = f"spark://127.0.0.1:{topo.port('spark-master', 7077)}"
    intruder = _intruder(c, master_url)

    # the scenario: the demo's generated ratings (20k history, two partitions of 10k) and the bad partition
    t0 = time.time()
    demo = c.launcher(
        "run", "--", "python", str(REPO / "scripts" / "airflow_demo.py"),
        "--partitions", "2", "--rank", "4", "--iterations", "3", "--timeout", "1800", timeout=2400, check=False,
    )  # fmt: skip
    scenario_seconds = round(time.time() - t0, 1)
    assert demo.returncode == 0, demo.stdout[-5000:] + demo.stderr[-5000:] + _tail_logs(c.home)
    out = json.loads(demo.stdout.strip().splitlines()[-1])
    s = out["summary"]
    print(json.dumps({"up_seconds": c.up_seconds, "scenario_seconds": scenario_seconds, **out["timings"]}))

    # the scenario's outcome: both good partitions applied once, in order; the bad one quarantined
    assert s["applied"] == ["p-00001", "p-00002"], s
    assert list(s["quarantined"]) == ["p-bad"] and "ids are positive" in s["quarantined"]["p-bad"], s
    assert not s["rejected"], s
    current = next(v for v in s["versions"] if v["version"] == s["current"])
    assert current["status"] == "published" and current["rmse"] is not None

    # the Spark master ran them: the bootstrap and its evaluation as applications of their own (spark-submit),
    # each with 2 cores and executors on both workers; the updates inside the Connect server's application
    # (running since cluster-up, never restarted), whose executors ran on both workers too; the intruder never got
    # an application
    state = cl.spark_state(topo)
    workers = {w["id"] for w in state["workers"]}
    assert len(workers) == 2 and all(w["cores"] == 1 for w in state["workers"])
    apps = state["completedapps"] + state["activeapps"]
    names = sorted(a["name"] for a in apps)
    assert "intruder-without-secret" not in names, names
    ours = [a for a in apps if a["name"].startswith("streamrec-")]
    finished = [a for a in ours if a["state"] == "FINISHED"]
    assert {a["name"] for a in finished} == {"streamrec-bootstrap", "streamrec-evaluate"}, ours
    for a in finished:
        assert a["cores"] == 2 and set(a["workers"]) == workers, a
    assert "streamrec-update" not in names, "the update runs in the Connect server's application, not its own"
    served = [a for a in ours if a["name"] == "streamrec-connect"]
    assert len(served) == 1 and served[0]["state"] == "RUNNING", served
    connect_app = served[0]
    assert set(connect_app["workers"]) == workers, connect_app

    # each update task ran as a Connect client of that server (plain Python, no spark-submit of its own)
    remote = topo.client_env()["STREAMREC_SPARK_REMOTE"]
    update_logs = [
        p.read_text(errors="replace")
        for p in (c.home / "airflow" / "logs" / "dag_id=streamrec_update").rglob("task_id=update/*")
        if p.is_file()
    ]
    assert update_logs, "no log of the update task"
    assert all("Spark-Submit cmd" not in text for text in update_logs)
    over = [text for text in update_logs if f"update.py over Spark Connect at {remote}" in text]
    assert over, update_logs[0][-3000:]

    # the executors (not the driver) read the partitions and wrote the model through s3a
    stderr = {p: p.read_text(errors="replace") for p in c.home.glob("spark-worker-*/work/app-*/*/stderr")}
    assert {p.relative_to(c.home).parts[0] for p in stderr} == {"spark-worker-1", "spark-worker-2"}
    read = [p for p, t in stderr.items() if "Reading File path: s3a://streamrec/ratings/incoming/p-0000" in t]
    assert read, "no executor log names a partition read from s3a://"
    assert all(connect_app["id"] in p.parts for p in read), "read by the Connect server's executors"
    wrote = [p for p, t in stderr.items() if f"to s3a://streamrec/models/versions/{s['current']}/" in t]
    assert wrote, "no executor log has saved (FileOutputCommitter) a part of the current model to s3a://"
    assert all(connect_app["id"] in p.parts for p in wrote), "written by the Connect server's executors"
    app = cl.s3_clients(topo, "app")[0]
    keys = [
        o["Key"]
        for o in app.list_objects_v2(Bucket="streamrec", Prefix=f"models/versions/{s['current']}/")[
            "Contents"
        ]
    ]
    assert any(k.endswith(".parquet") for k in keys)
    manifest = json.loads(
        app.get_object(Bucket="streamrec", Key=f"models/versions/{s['current']}/manifest.json")["Body"].read()
    )
    assert manifest["partitions"] == ["p-00001", "p-00002"], "each partition once, in order, in the lineage"

    # the S3 application user reaches only its bucket (moto's IAM checks: see docs/CLUSTER.md)
    admin = cl.s3_clients(topo, "admin")[0]
    admin.create_bucket(Bucket="not-streamrec")
    for call in (
        lambda: app.put_object(Bucket="not-streamrec", Key="x", Body=b"x"),
        lambda: app.list_objects_v2(Bucket="not-streamrec"),
        lambda: app.list_buckets(),
        lambda: boto3.client(
            "s3", endpoint_url=topo.client_env()["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="streamrec-app", aws_secret_access_key="guessed",
            config=Config(s3={"addressing_style": "path"}),
        ).list_objects_v2(Bucket="streamrec"),
    ):  # fmt: skip
        with pytest.raises(
            Exception, match="AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden"
        ):
            call()

    # Airflow's metadata is in PostgreSQL
    pg = topo.compose_env("postgres")
    with psycopg.connect(
        host="127.0.0.1", port=topo.port("postgres", 5432), user=pg["POSTGRES_USER"],
        password=pg["POSTGRES_PASSWORD"], dbname=pg["POSTGRES_DB"],
    ) as conn:  # fmt: skip
        runs = conn.execute("SELECT dag_id, state FROM dag_run").fetchall()
    assert ("streamrec_bootstrap", "success") in runs
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=topo.port("postgres", 5432), user=pg["POSTGRES_USER"],
                        password="not-the-password", dbname=pg["POSTGRES_DB"], connect_timeout=10)  # fmt: skip
    assert any(d == "streamrec_update" and st == "success" for d, st in runs)
    assert not list(c.home.rglob("*.db")), "no SQLite database"

    # the client without the secret got nowhere
    try:
        text, _ = intruder.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        intruder.kill()
        text, _ = intruder.communicate()
    assert intruder.returncode != 0 and "COUNT" not in text, text[-3000:]
    master_log = (c.home / "logs" / "spark-master.log").read_text(errors="replace")
    assert "intruder-without-secret" not in master_log

    # no secret in any log: every service's, Spark master's, workers', executors', Airflow's task logs
    files = cl.log_files(c.home)
    assert any(p.name == "stderr" for p in files) and any("airflow" in p.parts for p in files)
    secrets = cl.secret_values(c.home)
    assert {"SPARK_AUTH_SECRET", "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "s3 app secret"} <= set(
        secrets
    )
    assert not cl.leaks(c.home), f"secrets in logs: {cl.leaks(c.home)}"
    # the secret is not on any process's command line either
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            for name, value in secrets.items():
                assert value not in cmd, f"{name} on the command line of pid {proc.name}"

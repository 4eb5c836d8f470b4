"""The warm Spark of the update path: a real Spark Connect server (``python -m streamrec.launch.connect serve``,
its supervisor restarting it), the real ``jobs/*.py`` attached to it as clients (``streamrec.pipeline.connect``).

* the launcher's pure rules (a lane's session id, the connection string, the server's command line);
* a server that is down: the job is not started, the error names the address and says the partition stays
  pending; nothing is written, and ``pipeline.pending`` still offers the partition;
* over the server: bootstrap (ALS) and an update with its evaluation, recommendations included; the candidate is
  the same, bit for bit, as the one a second session computes for the same base and partition;
* a server killed in the middle of an update: the try fails, the supervisor brings the server back, the retry
  writes the candidate, and once published the partition is in the lineage exactly once;
* a client killed while its query runs (its task was killed): the lane's next job interrupts that query and
  writes the same candidate as a clean run.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from connectserver import ConnectServer, free_port

from streamrec.launch import connect as launch
from streamrec.pipeline import connect

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "jobs"


# --- the launcher's rules ---------------------------------------------------------------------------------------
@pytest.mark.unit
def test_a_lane_has_one_stable_session_id():
    a = launch.session_id("streamrec_update.update")
    assert a == launch.session_id(" streamrec_update.update ")  # every job of the lane finds it again
    assert a != launch.session_id("streamrec_update.other")
    assert len(a) == 36
    with pytest.raises(ValueError, match=launch.SESSION_TAG_ENV):
        launch.session_id(" ")
    # a task's lane is <dag_id>.<task_id> (dags/_streamrec_common.connect_job); the warm-up's default is the
    # update task's
    assert launch.task_lane("streamrec_update", "update") == launch.UPDATE_LANE == "streamrec_update.update"


@pytest.mark.unit
def test_remote_url_and_server_command():
    assert launch.remote_url({}) is None
    assert launch.remote_url({launch.REMOTE_ENV: "sc://h:1"}) == "sc://h:1"
    with pytest.raises(ValueError, match="sc://"):
        launch.remote_url({launch.REMOTE_ENV: "http://h:1"})
    assert launch.host_port("sc://spark-connect:15002/;session_id=x") == ("spark-connect", 15002)
    assert launch.host_port("sc://h") == ("h", launch.DEFAULT_PORT)
    cmd = launch.server_command(
        master="spark://m:7077", port=15123, workdir="/tmp/x", python="/v/bin/python", env={}, s3=False
    )
    assert cmd[0] == "/v/bin/spark-submit" and cmd[cmd.index("--class") + 1] == launch.SERVER_CLASS
    assert cmd[cmd.index("--master") + 1] == "spark://m:7077"
    conf = dict(c.split("=", 1) for c in cmd[1:] if "=" in c and c.startswith("spark."))
    assert conf["spark.connect.grpc.binding.port"] == "15123"
    assert conf["spark.checkpoint.dir"] == "/tmp/x/checkpoints"  # static: a client cannot set it
    assert conf["spark.pyspark.python"] == "/v/bin/python"  # the UDF workers run streamrec's numpy
    assert "-Xss16m" in conf["spark.driver.extraJavaOptions"]
    assert not any("AWS_SECRET" in c or "secret.key" in c for c in cmd)


# --- a real server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory, connect_server):
    """A bucket with a generated history bootstrapped over the server (ALS over Connect) and published, and four
    partitions in ``ratings/incoming/``."""
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.storage.store import ModelStore

    work = tmp_path_factory.mktemp("connect-bucket")
    data = work / "data"
    write_dataset(
        SynthConfig(n_users=200, n_items=150, n_ratings=9000, seed=7),
        str(data),
        n_partitions=4,
        history_fraction=0.8,
    )
    bucket = work / "bucket"
    (bucket / "ratings" / "incoming").mkdir(parents=True)
    for f in sorted((data / "partitions").glob("p-*.csv")):
        (bucket / "ratings" / "incoming" / f.name).write_bytes(f.read_bytes())
    out = connect.run_job(
        JOBS / "bootstrap.py",
        [
            "--bucket",
            str(bucket),
            "--ratings",
            str(data / "history"),
            "--version",
            "v0001",
            "--rank",
            "6",
            "--iterations",
            "4",
            "--holdout-fraction",
            "0.1",
        ],
        lane="test.bootstrap",
        url=connect_server.url,
        python=sys.executable,
    )
    assert out["version"] == "v0001" and out["n_ratings"] > 6000
    store = ModelStore(str(bucket))
    store.publish("v0001")
    return bucket, store


def _update(
    server: ConnectServer, bucket: Path, pid: str, version: str, lane: str, attempt: int = 1, **kw
) -> dict:
    return connect.run_job(
        JOBS / "update.py",
        [
            "--bucket",
            str(bucket),
            "--version",
            version,
            "--evaluate",
            "--partition",
            f"{pid}={bucket}/ratings/incoming/{pid}.csv",
        ],
        lane=lane,
        attempt=attempt,
        url=server.url,
        python=sys.executable,
        **kw,
    )


def _arrays(store, version: str) -> dict[str, np.ndarray]:
    m = store.load_arrays(version)
    return {
        "users": np.column_stack([m.user_ids, m.user_bias, m.user_factors]),
        "items": np.column_stack([m.item_ids, m.item_bias, m.item_factors]),
        "mu": np.array([m.mu]),
    }


@pytest.mark.integration
@pytest.mark.slow
def test_server_down_fails_cleanly_and_leaves_the_partition_pending(bootstrapped, monkeypatch):
    from streamrec import pipeline

    bucket, store = bootstrapped
    monkeypatch.setenv("STREAMREC_BUCKET", str(bucket))
    before = store.list_versions()
    dead = f"sc://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(connect.ConnectUnavailable) as err:
        connect.run_job(
            JOBS / "update.py",
            [
                "--bucket",
                str(bucket),
                "--version",
                "vdead",
                "--partition",
                f"p-00001={bucket}/ratings/incoming/p-00001.csv",
            ],
            lane="test.dead",
            url=dead,
            wait_seconds=2,
        )
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert dead in msg and "stays pending" in msg and "connect-server start" in msg
    assert store.list_versions() == before  # nothing written
    b, s = pipeline.open_bucket()
    assert "p-00001" in [p["id"] for p in pipeline.pending(b, s)["pending"]]


@pytest.mark.integration
@pytest.mark.slow
def test_update_over_connect_is_deterministic_and_publishes_once_after_a_server_crash(
    connect_server, bootstrapped, monkeypatch
):
    server = connect_server
    from streamrec import pipeline

    bucket, store = bootstrapped
    monkeypatch.setenv("STREAMREC_BUCKET", str(bucket))
    clean = _update(server, bucket, "p-00001", "vclean", "test.clean")
    assert clean["version"] == "vclean" and clean["partitions"] == ["p-00001"]
    assert (
        clean["metrics"]["validation"]["n"] > 0
        and store.read_manifest("vclean")["ranking"]["recommendations"]
    )

    # the server's JVM dies while the update runs: the try fails, the supervisor restarts the server
    jvm = server.jvm_pid()
    result: dict = {}

    def first_try():
        try:
            result["out"] = _update(server, bucket, "p-00001", "v0002", "test.crash", attempt=1)
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=first_try)
    t.start()
    time.sleep(3)
    os.kill(jvm, signal.SIGKILL)
    t.join(300)
    assert isinstance(result.get("error"), connect.JobFailed | connect.ConnectUnavailable), result
    assert store.current() == "v0001"
    launch.wait_ready(server.url, timeout=180)
    assert server.jvm_pid() != jvm  # restarted by the supervisor
    assert "restarting" in server.log.read_text()

    retried = _update(server, bucket, "p-00001", "v0002", "test.crash", attempt=2, wait_seconds=60)
    assert retried["version"] == "v0002"
    store.publish("v0002", expected_current="v0001")
    assert store.read_manifest(store.current())["partitions"].count("p-00001") == 1
    b, s = pipeline.open_bucket()
    assert "p-00001" not in [p["id"] for p in pipeline.pending(b, s)["pending"]]
    a, c = _arrays(store, "v0002"), _arrays(store, "vclean")
    for table in a:
        assert np.array_equal(a[table], c[table]), table  # the crash left no trace in the model
    with pytest.raises(
        connect.JobFailed, match="already"
    ):  # the job refuses a partition in the base's lineage
        _update(server, bucket, "p-00001", "v0003", "test.again")


_LONG_QUERY = """
import sys, time
from streamrec.spark.session import get_session
spark = get_session("killed-try")
print("attached", flush=True)
spark.range(0, 10**12, 1, 2).selectExpr("sum(id % 7)").collect()  # minutes of work: killed long before
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_client_is_interrupted_by_the_next_job_of_its_lane(connect_server, bootstrapped):
    """A task killed while its query runs leaves that query running in the server; the lane's next job (the
    retry) interrupts it before it computes anything, and writes the same candidate as a clean run."""
    server = connect_server
    bucket, store = bootstrapped
    base = store.current()
    clean = _update(server, bucket, "p-00002", "vclean2", "test.clean2")
    env = {**os.environ, launch.REMOTE_ENV: server.url, launch.SESSION_TAG_ENV: "test.killed"}
    client = subprocess.Popen(
        [sys.executable, "-c", _LONG_QUERY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert client.stdout.readline().strip() == "attached"
    time.sleep(3)  # the query runs in the server
    client.kill()
    client.wait()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        retried = _update(server, bucket, "p-00002", "vkilled", "test.killed", attempt=2)
    assert "interrupted 1 operation(s) an earlier job of lane 'test.killed' left running" in out.getvalue()
    assert retried["version"] == "vkilled" and retried["parent"] == base == clean["parent"]
    a, c = _arrays(store, "vkilled"), _arrays(store, "vclean2")
    for table in a:
        assert np.array_equal(a[table], c[table]), table


_UDF_JOB = """
from streamrec.spark.session import get_session
spark = get_session("udf-job")
df = spark.range(40).selectExpr("id % 4 as g", "id as v")
print(df.groupBy("g").applyInPandas(lambda p: p.assign(v=p.v * 2), "g long, v long").count())
"""


def _daemons(server: ConnectServer) -> set[int]:
    """The Python UDF daemons the server's JVM started (its ``pyspark.daemon`` children)."""
    out = subprocess.run(["pgrep", "-P", str(server.jvm_pid()), "-f", "pyspark.daemon"], capture_output=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.integration
@pytest.mark.slow
def test_the_jobs_of_a_lane_share_one_warm_python_daemon(connect_server):
    """Spark 4.2 starts a Python daemon per Connect session and never stops it (SPARK-54055): the jobs of a lane
    share one session, so the server gains one daemon for the lane, not one per job."""
    env = {**os.environ, launch.REMOTE_ENV: connect_server.url, launch.SESSION_TAG_ENV: "test.udf-lane"}
    before = _daemons(connect_server)
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", _UDF_JOB], env=env, capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout.strip().endswith("40"), run.stderr[-2000:]
    assert len(_daemons(connect_server) - before) == 1


@pytest.mark.integration
@pytest.mark.slow
def test_the_warmup_starts_the_lanes_python_workers_and_leaves_nothing_behind(connect_server, tmp_path):
    """``python -m streamrec.spark.warmup`` (``scripts/connect-server start`` runs it before Airflow starts): a
    throwaway bootstrap and update in the lane's session, so the lane's first real job finds its Python daemon
    up; its store is deleted. Without a server configured it does nothing."""
    import json

    env = {k: v for k, v in os.environ.items() if k != launch.SESSION_TAG_ENV}
    cmd = [
        sys.executable,
        "-m",
        "streamrec.spark.warmup",
        "--lane",
        "test.warm-lane",
        "--workdir",
        str(tmp_path),
    ]
    skipped = subprocess.run(
        cmd, env={k: v for k, v in env.items() if k != launch.REMOTE_ENV}, capture_output=True, text=True
    )
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["warmup"] == "skipped"
    before = _daemons(connect_server)
    run = subprocess.run(
        cmd, env={**env, launch.REMOTE_ENV: connect_server.url}, capture_output=True, text=True
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0 and out["warmup"] == "done", (out, run.stderr[-2000:])
    assert out["seconds"]["bootstrap"] > 0 and out["seconds"]["update"] > 0
    assert list((tmp_path / "warmup").iterdir()) == []  # the throwaway store is gone
    warmed = _daemons(connect_server) - before
    assert len(warmed) == 1  # the lane's daemon, started by the warm-up
    job = subprocess.run(
        [sys.executable, "-c", _UDF_JOB],
        env={**env, launch.REMOTE_ENV: connect_server.url, launch.SESSION_TAG_ENV: "test.warm-lane"},
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0 and job.stdout.strip().endswith("40"), job.stderr[-2000:]
    assert _daemons(connect_server) - before == warmed  # the lane's job used it: no new daemon

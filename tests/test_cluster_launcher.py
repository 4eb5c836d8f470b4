"""The native cluster launcher's pieces that need no running cluster (``scripts/cluster_services.py``,
``scripts/cluster_launcher.py``, ``scripts/cluster_moto.py``, the entrypoint's Spark secret, s3a's shared jars).

The launcher against the compose file (same commands, environment, health checks): ``tests/test_compose.py``.
The launcher for real (up, the scenario, faults, down): ``tests/test_cluster.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import cluster_data as cd  # noqa: E402
import cluster_launcher as cl  # noqa: E402
import cluster_services as cs  # noqa: E402

pytestmark = pytest.mark.unit


def test_interpolation_follows_compose():
    env = {"A": "1", "EMPTY": ""}
    assert cs.interpolate("${A}", env) == "1"
    assert cs.interpolate("${B:-x}", env) == "x"
    assert cs.interpolate("${EMPTY:-x}", env) == "x"
    assert cs.interpolate("${EMPTY-x}", env) == ""
    assert cs.interpolate("${B-x}", env) == "x"
    assert cs.interpolate("$$A and $A", env) == "$A and 1"
    with pytest.raises(KeyError, match="set B in .env"):
        cs.interpolate("${B:?set B in .env}", env)
    with pytest.raises(KeyError):
        cs.interpolate("${EMPTY:?no}", env)


def test_env_file_has_fresh_secrets_and_the_native_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_CLUSTER_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("CLUSTER_POSTGRES_PORT", "25432")  # the caller's environment wins (compose's rule) ...
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-shell")  # ... except for the S3 keys
    env = cl.load_env(tmp_path / "c", create=True)
    path = tmp_path / "c" / "cluster.env"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "=change-me" not in text
    assert env["CLUSTER_POSTGRES_PORT"] == "25432"
    assert env["AWS_SECRET_ACCESS_KEY"] != "from-the-shell"
    assert env["SPARK_WORKER_CORES"] == "1" and env["CLUSTER_SPARK_WORKERS"] == "2"
    assert len(env["SPARK_AUTH_SECRET"]) >= 32
    assert cl.load_env(tmp_path / "c", create=True)["SPARK_AUTH_SECRET"] == env["SPARK_AUTH_SECRET"], (
        "generated once"
    )


def test_the_env_file_is_never_written_into_the_checkout(tmp_path, monkeypatch):
    """The env file holds secrets: the cluster's home is outside the checkout or under its git-ignored var/. A
    command that only reads (status, down, run) never creates one."""
    for bad in (REPO, REPO / "docs", REPO.parent):
        monkeypatch.setenv("STREAMREC_CLUSTER_HOME", str(bad))
        with pytest.raises(SystemExit, match="refusing"):
            cl.cluster_home()
        with pytest.raises(SystemExit, match="refusing"):
            cl.load_env(bad, create=True)
        with pytest.raises(SystemExit, match="refusing"):
            cd.Private(bad)
    assert not (REPO / "cluster.env").exists()
    monkeypatch.setenv("STREAMREC_CLUSTER_HOME", str(tmp_path / "c"))
    assert cl.cluster_home() == (tmp_path / "c").resolve()
    assert cs.checked_home(REPO / "var" / "x") == REPO / "var" / "x"
    with pytest.raises(FileNotFoundError, match="make cluster-up"):
        cl.load_env(tmp_path / "c")
    assert cl.main(["down"]) == 0 and not (tmp_path / "c").exists()


def test_entrypoint_puts_the_spark_secret_in_a_private_conf_only(tmp_path):
    """SPARK_AUTH_SECRET -> a 600 spark-defaults.conf (with spark.authenticate) in a 700 folder; the variable is
    gone from what the entrypoint runs; a change-me placeholder is refused."""
    runtime = tmp_path / "conf"
    env = {
        "PATH": "/usr/bin:/bin",
        "SPARK_CONF_DIR": str(REPO / "docker" / "spark-conf"),
        "SPARK_AUTH_SECRET": "s3cret-for-the-test",
        "STREAMREC_SPARK_CONF_RUNTIME": str(runtime),
    }
    run = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "env"], env=env, capture_output=True, text=True, check=True
    )
    seen = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
    assert "SPARK_AUTH_SECRET" not in seen and "s3cret" not in run.stdout + run.stderr
    assert seen["SPARK_CONF_DIR"] == str(runtime)
    conf = (runtime / "spark-defaults.conf").read_text()
    assert conf.startswith((REPO / "docker" / "spark-conf" / "spark-defaults.conf").read_text())
    assert "spark.authenticate true\nspark.authenticate.secret s3cret-for-the-test\n" in conf
    assert "spark.master.rest.enabled                    false" in conf
    assert (runtime / "spark-defaults.conf").stat().st_mode & 0o077 == 0
    assert runtime.stat().st_mode & 0o077 == 0
    env["SPARK_AUTH_SECRET"] = "change-me-spark-auth-secret"
    refused = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "true"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "make compose-env" in refused.stderr


def test_shared_s3a_jars_go_on_the_class_paths_not_to_every_executor(tmp_path):
    from streamrec.launch import s3a

    jars = [tmp_path / "hadoop-aws-3.3.1.jar", tmp_path / "aws-java-sdk-bundle-1.11.901.jar"]
    for j in jars:
        j.write_bytes(b"jar")
    env = {"STREAMREC_S3A_JARS": ",".join(map(str, jars)), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    shipped = s3a.spark_conf(env)
    assert (
        shipped["spark.jars"] == ",".join(map(str, jars)) and "spark.executor.extraClassPath" not in shipped
    )
    shared = s3a.spark_conf({**env, "STREAMREC_S3A_SHARED_JARS": "1"})
    assert "spark.jars" not in shared
    assert (
        shared["spark.driver.extraClassPath"]
        == shared["spark.executor.extraClassPath"]
        == os.pathsep.join(map(str, jars))
    )
    assert shared["spark.hadoop.fs.s3a.aws.credentials.provider"] == s3a.PROVIDERS_V1, "3.3.1 compat still on"
    assert "--jars" not in s3a.submit_args({**env, "STREAMREC_S3A_SHARED_JARS": "1"})


def test_moto_wrapper_checks_what_the_client_signed():
    """cluster_moto.py empties botocore's list of never-signed headers in moto's process, so a request that
    signs User-Agent (the AWS SDK for Java v1 in hadoop-aws 3.3.1) verifies; botocore's own default skips it."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def canonical(blacklist: list[str]) -> str:
        saved = list(botocore.auth.SIGNED_HEADERS_BLACKLIST)
        botocore.auth.SIGNED_HEADERS_BLACKLIST[:] = blacklist
        try:
            req = AWSRequest(
                "HEAD", "http://127.0.0.1:9/b/k", headers={"User-Agent": "aws-sdk-java/1.11.901"}
            )
            req.context["timestamp"] = "20260101T000000Z"
            auth = botocore.auth.S3SigV4Auth(Credentials("k", "s"), "s3", "us-east-1")
            return auth.signed_headers(auth.headers_to_sign(req))
        finally:
            botocore.auth.SIGNED_HEADERS_BLACKLIST[:] = saved

    assert "user-agent" not in canonical(list(botocore.auth.SIGNED_HEADERS_BLACKLIST))
    assert "user-agent" in canonical([])
    text = (REPO / "scripts" / "cluster_moto.py").read_text()
    assert "SIGNED_HEADERS_BLACKLIST[:] = []" in text


def test_down_stops_only_the_recorded_group(tmp_path):
    """stop() signals the recorded process group (only members started after it), never a recycled pid."""
    home = tmp_path
    (home / "run").mkdir()
    (home / "logs").mkdir()
    mine = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        rec = {"pid": mine.pid, "pgid": mine.pid, "start": cl.starttime(mine.pid)}
        (home / "run" / "svc.pid").write_text(json.dumps(rec))
        stale = {"pid": other.pid, "pgid": other.pid, "start": (cl.starttime(other.pid) or 0) - 1}
        (home / "run" / "old.pid").write_text(json.dumps(stale))
        assert cl.alive(rec) and not cl.alive(stale), "a pid whose start time differs is not ours"
        assert cl.stop(home, "svc", grace=10)
        mine.wait(timeout=10)
        cl.stop(home, "old", grace=1)
        time.sleep(0.5)
        assert other.poll() is None, "a process that only shares a recycled pid must survive"
        assert not (home / "run" / "svc.pid").exists()
    finally:
        for p in (mine, other):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def test_log_files_cover_master_worker_executor_and_airflow_logs(tmp_path):
    """The files the cluster test (and tests/test_security.py) scan for secrets."""
    for rel in (
        "logs/spark-master.log",
        "logs/spark-worker-1.log",
        "spark-worker-2/work/app-1/0/stderr",
        "airflow/logs/dag_id=x/run_id=y/task_id=z/attempt=1.log",
        "logs/postgres.log",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "spark-worker-2" / "work" / "app-1" / "0" / "aws-java-sdk-bundle.jar").write_bytes(b"jar")
    found = {p.relative_to(tmp_path).as_posix() for p in cd.log_files(tmp_path)}
    assert found == {
        "logs/spark-master.log",
        "logs/spark-worker-1.log",
        "spark-worker-2/work/app-1/0/stderr",
        "airflow/logs/dag_id=x/run_id=y/task_id=z/attempt=1.log",
        "logs/postgres.log",
    }


def test_connect_server_is_stopped_when_its_master_forgot_it(capsys):
    """A standalone master that restarts forgets its applications; the Connect server's driver would wait for a
    reconnection for ever (its port still answering). ``serve``'s watch stops it after the grace period, so its
    supervisor starts it again (registered anew); a master that takes it back (recovery) cancels the watch."""
    from streamrec.launch import connect

    def child(lines: str, sleep: float) -> subprocess.Popen:
        code = f"import sys, time\nprint({lines!r}, flush=True)\ntime.sleep({sleep})\n"
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    t0 = time.monotonic()
    lost = child(
        "WARN StandaloneSchedulerBackend: Disconnected from Spark cluster! Waiting for reconnection...", 60
    )
    assert connect._watch_master(lost, grace=1.0) == -signal.SIGTERM
    assert time.monotonic() - t0 < 20
    out = capsys.readouterr().out
    assert "Disconnected from Spark cluster" in out, "the server's output is copied through"
    assert "stopping the server so that it registers again" in out
    back = child(
        "Disconnected from Spark cluster!\nINFO StandaloneAppClient: Master has changed, new master is at x\nok",
        3,
    )
    assert connect._watch_master(back, grace=1.0) == 0

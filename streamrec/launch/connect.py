"""The warm Spark of the update path: a long-lived Spark Connect server, and how clients find it.

Every ``spark-submit`` pays a JVM start, class loading and JIT before its few seconds of work (10-60 s per update
on two cores, ``docs/STREAMING.md``). A Spark Connect server (``org.apache.spark.sql.connect.service.
SparkConnectServer``, shipped in pyspark 4.2's jars) pays that once; the update job then runs as a thin gRPC
client (``jobs/update.py`` started by plain Python with ``$STREAMREC_SPARK_REMOTE`` set,
``streamrec.spark.session``), and the process that starts it needs no JVM.

This module has no pyspark import (it only builds command lines and checks a port), so the launchers
(``scripts/airflow-up``, the cluster launcher, compose) and the pipeline can use it.

Settings (environment):

* ``STREAMREC_SPARK_REMOTE``: ``sc://host:port`` of the server the jobs attach to; unset = every job is its own
  ``spark-submit`` (the default outside the stacks ``make airflow-up`` / ``make cluster-up`` start);
* ``STREAMREC_CONNECT_PORT`` (15002, Spark's default) and ``STREAMREC_CONNECT_HOST`` (``127.0.0.1``): where
  :func:`server_command` binds;
* ``STREAMREC_CONNECT_MASTER``: the server's master (default ``$STREAMREC_SPARK_MASTER``, else ``local[2]``);
* ``STREAMREC_CONNECT_DIR``: the server's working folder (checkpoints; default ``var/connect``).

One session per lane: the jobs of one lane (the update DAG's ``update`` task: one at a time, ``max_active_runs=1``)
share one long-lived Connect session, whose id is derived from the lane's name (:func:`session_id`). A job
starts by interrupting whatever its lane still runs (a client killed with its task leaves its query running in
the server) and clearing the lane's cache, and closes its client without releasing the session. Why one session
and not one per try: Spark 4.2 starts one Python UDF daemon per Connect session and never stops it
(SPARK-54055), so a session per update would leave a ~50 MB process behind per partition; a lane's session
keeps one daemon, warm (its workers have numpy and streamrec imported already).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from streamrec.launch import jvm, s3a

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_PORT = 15002
REMOTE_ENV = "STREAMREC_SPARK_REMOTE"
MASTER_LOST = "Disconnected from Spark cluster"
MASTER_BACK = "Master has changed, new master is at"
"""The driver's log lines when its standalone master goes away and when a (recovered) master takes it back."""
SESSION_TAG_ENV = "STREAMREC_CONNECT_SESSION"
"""Set by the launcher of a lane's job: the lane's name (:func:`session_id`)."""
_NAMESPACE = uuid.UUID("5f0c6a3e-6d1f-4a4e-9a57-2b0c5e7d9a11")


def remote_url(env: Mapping[str, str] | None = None) -> str | None:
    """``sc://host:port`` the jobs attach to, or None (each job is its own spark-submit)."""
    url = (env if env is not None else os.environ).get(REMOTE_ENV, "").strip()
    if url and not url.startswith("sc://"):
        raise ValueError(f"{REMOTE_ENV}={url!r}: expected sc://host:port")
    return url or None


def host_port(url: str) -> tuple[str, int]:
    """``sc://host:port[/;params]`` → (host, port)."""
    netloc = url.removeprefix("sc://").split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    return (host or netloc, int(port) if port.isdigit() else DEFAULT_PORT) if host else (netloc, DEFAULT_PORT)


def task_lane(dag_id: str, task_id: str) -> str:
    """The lane of an Airflow task's Connect jobs, ``<dag_id>.<task_id>``: the tries and runs of one task share
    its session (one job at a time: the DAGs that use a lane have ``max_active_runs=1``)."""
    return f"{dag_id}.{task_id}"


UPDATE_LANE = task_lane("streamrec_update", "update")
"""The update task's lane: the one ``streamrec.spark.warmup`` warms (``scripts/connect-server start``)."""


def session_id(lane: str) -> str:
    """The Connect session id of ``lane``: stable, so every job of the lane attaches to the same session (a
    UUID, as Spark Connect requires)."""
    if not lane or not lane.strip():
        raise ValueError(f"{SESSION_TAG_ENV}: a lane name is required")
    return str(uuid.uuid5(_NAMESPACE, lane.strip()))


def reachable(url: str, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at the server's address."""
    host, port = host_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ready(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> float:
    """Wait until the server accepts connections; returns the seconds waited. Raises ``TimeoutError`` (or
    ``RuntimeError`` when ``proc``, the server process, exits first)."""
    t0 = time.monotonic()
    while not reachable(url):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Spark Connect server exited with status {proc.returncode}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no Spark Connect server at {url} after {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - t0


def server_command(
    *,
    master: str | None = None,
    port: int | None = None,
    host: str | None = None,
    workdir: str | Path | None = None,
    python: str | None = None,
    driver_memory: str | None = None,
    s3: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The ``spark-submit`` line of the server (runs in the foreground; a supervisor restarts it).

    The settings a client cannot change live here: the checkpoint folder (a static conf: a Connect client has no
    ``sparkContext.setCheckpointDir``), the Python of the UDF workers (streamrec's virtualenv: ``applyInPandas``
    runs the update's numpy on the server side), the driver JVM's options (``streamrec.launch.jvm``), with an
    ``s3://`` bucket the s3a jars and conf (credentials only through the server's environment) and, on a standalone
    master (``spark://``), dynamic allocation (idle executors released, so the batch jobs get the cores).
    """
    env = env if env is not None else os.environ
    python = python or env.get("STREAMREC_PYTHON") or sys.executable
    submit = Path(python).parent / "spark-submit"
    master = master or env.get("STREAMREC_CONNECT_MASTER") or env.get("STREAMREC_SPARK_MASTER") or "local[2]"
    port = int(port or env.get("STREAMREC_CONNECT_PORT") or DEFAULT_PORT)
    host = host or env.get("STREAMREC_CONNECT_HOST") or "127.0.0.1"
    workdir = Path(workdir or env.get("STREAMREC_CONNECT_DIR") or "var/connect").resolve()
    conf = {
        "spark.connect.grpc.binding.port": str(port),
        "spark.connect.grpc.binding.address": host,
        "spark.checkpoint.dir": str(workdir / "checkpoints"),
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.driver.extraJavaOptions": jvm.driver_java_options(),
        "spark.ui.enabled": env.get("STREAMREC_SPARK_UI", "false"),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        # a client that died (its task was killed) leaves its query detached: abandon it after 60 s, not 5 min
        "spark.connect.execute.manager.detachedTimeout": "60s",
        # a lane's session lives as long as the server (jobs never release it; a closed id cannot be reused)
        "spark.connect.session.manager.defaultSessionTimeout": "3650d",
    }
    if master.startswith("spark://"):
        # a standalone cluster: an application holds every core it is given until it ends (a long-lived server
        # would starve the batch jobs' spark-submit for ever): executors only while queries run, released when
        # idle (shuffle tracking: no external shuffle service needed)
        conf.update(
            {
                "spark.dynamicAllocation.enabled": "true",
                "spark.dynamicAllocation.shuffleTracking.enabled": "true",
                "spark.dynamicAllocation.minExecutors": "0",
                "spark.dynamicAllocation.executorIdleTimeout": "20s",
                "spark.dynamicAllocation.shuffleTracking.timeout": "20s",
                "spark.dynamicAllocation.cachedExecutorIdleTimeout": "60s",
            }
        )
    if master.startswith("local"):
        # INFO logs every operation of every session: a long-lived server's log would grow without end. (On a
        # standalone master INFO stays: _watch_master reads the driver's "Master has changed" INFO line.)
        conf["spark.log.level"] = env.get("STREAMREC_SPARK_LOG_LEVEL", "WARN")
    cmd = [str(submit), "--class", SERVER_CLASS, "--name", "streamrec-connect", "--master", master]
    cmd += ["--driver-memory", driver_memory or env.get("STREAMREC_CONNECT_MEMORY", "2g")]
    if s3 if s3 is not None else s3a.uses_s3(env.get("STREAMREC_BUCKET")):
        cmd += s3a.submit_args(env)
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    return cmd


def _watch_master(child: subprocess.Popen, grace: float) -> int:
    """Copy the server's output through and stop it once it has been cut off from its standalone master for
    ``grace`` seconds; returns its exit status.

    A standalone master that restarts (no recovery mode) forgets its applications, and the server's driver waits
    for a reconnection that never comes: its port still answers, its queries wait for executors for ever. Stopped,
    it is started again by its supervisor and registers with the master anew."""
    import threading

    lost: list[float] = []

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if MASTER_LOST in line and not lost:
                lost.append(time.monotonic())
            elif MASTER_BACK in line:
                lost.clear()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while child.poll() is None:
        if lost and time.monotonic() - lost[0] > grace:
            print(
                f"streamrec-connect: cut off from the standalone master for {grace:.0f} s (a restarted master "
                "forgets its applications): stopping the server so that it registers again",
                flush=True,
            )
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        time.sleep(1)
    code = child.wait()
    reader.join(5)
    return code


def serve(
    argv_conf: Mapping[str, str] | None = None,
    restart_delay: float = 2.0,
    once: bool = False,
    master_grace: float = 60.0,
) -> int:
    """Run the server in the foreground and restart it when it exits (the supervisor of ``scripts/connect-server``;
    compose and the cluster launcher restart it themselves and pass ``once``). SIGTERM stops it for good. On a
    standalone master it also ends when it has lost that master for ``master_grace`` s (:func:`_watch_master`)."""
    cmd = server_command(**(argv_conf or {}))
    Path(os.environ.get("STREAMREC_CONNECT_DIR") or "var/connect").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    # spark-submit's find-spark-home asks the python3 first on PATH where pyspark is: ours first
    env["PATH"] = f"{Path(cmd[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop(REMOTE_ENV, None)
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    starts = 0
    while True:
        starts += 1
        print(f"streamrec-connect: start {starts}: {' '.join(cmd)}", flush=True)
        if cmd[cmd.index("--master") + 1].startswith("spark://"):
            child = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
            )
            code = _watch_master(child, master_grace)
        else:
            child = subprocess.Popen(cmd, env=env)
            code = child.wait()
        if stopping or once:
            return code if not stopping else 0
        print(
            f"streamrec-connect: server exited with status {code}; restarting in {restart_delay:.0f} s",
            flush=True,
        )
        time.sleep(restart_delay)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m streamrec.launch.connect", description=__doc__.splitlines()[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the server in the foreground, restarting it when it dies")
    s.add_argument("--master")
    s.add_argument("--port", type=int)
    s.add_argument("--host")
    s.add_argument("--once", action="store_true", help="do not restart (compose/cluster supervisors do)")
    sub.add_parser("command", help="print the server's spark-submit line")
    w = sub.add_parser(
        "wait", help="wait until the server at $STREAMREC_SPARK_REMOTE (or --url) accepts clients"
    )
    w.add_argument("--url")
    w.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        conf = {k: getattr(args, k) for k in ("master", "port", "host") if getattr(args, k)}
        return serve(conf, once=args.once)
    if args.cmd == "command":
        print(" ".join(server_command()))
        return 0
    url = args.url or remote_url() or f"sc://127.0.0.1:{DEFAULT_PORT}"
    try:
        print(f"{url} ready after {wait_ready(url, args.timeout):.1f} s")
    except TimeoutError as exc:
        print(f"streamrec-connect: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

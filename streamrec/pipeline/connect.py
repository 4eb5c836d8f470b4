"""Run a ``jobs/*.py`` entry point as a Spark Connect client of the warm server (the update task's hot path).

The same job and the same argv as under ``spark-submit``; only the launcher differs: plain Python with
``$STREAMREC_SPARK_REMOTE`` set, so ``streamrec.spark.session.get_session`` attaches to the long-lived server
(``streamrec.launch.connect``) instead of starting a JVM. What a task try needs around it:

* **a clear failure when the server is down**: checked before the job starts (one TCP connect); the task fails
  with the server's address and how to start it, nothing is written, the partition stays pending and the task's
  retry (or the next run) applies it once the server is back;
* **no two tries writing the same candidate**: the jobs of a ``lane`` (the update task: one job at a time) share
  one Connect session; a job first interrupts what the lane still runs (a client killed with its task leaves
  its query running in the server), so a retry never writes beside its killed predecessor;
* **the client dies with the task**: the job runs as a child process that gets SIGKILL when the task process
  dies (``PR_SET_PDEATHSIG``) and SIGTERM when the task is stopped.

The job's output is copied to this process's stdout (the task log), line by line. Returns the JSON object of the
job's last line (the update job prints the candidate's manifest there).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from streamrec.launch import connect
from streamrec.launch.connect import task_lane  # noqa: F401  (the DAGs name their task's lane with it)


class ConnectUnavailable(RuntimeError):
    """No Spark Connect server answers at ``$STREAMREC_SPARK_REMOTE``."""


class JobFailed(RuntimeError):
    """The job exited with a non-zero status."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_job(
    job: str | Path,
    argv: Sequence[str],
    *,
    lane: str,
    attempt: int = 1,
    url: str | None = None,
    python: str | None = None,
    env: dict[str, str] | None = None,
    wait_seconds: float = 0.0,
) -> dict:
    """Run ``python job *argv`` attached to the Connect server at ``url`` (default ``$STREAMREC_SPARK_REMOTE``), in
    the long-lived session of ``lane`` (jobs of one lane must run one at a time; ``attempt`` is only logged).

    ``wait_seconds``: how long to wait for a server that is (re)starting before giving up. Raises
    :class:`ConnectUnavailable` (nothing was run) or :class:`JobFailed` (the job's exit status and last lines).
    """
    env = dict(os.environ if env is None else env)
    url = url or connect.remote_url(env)
    if not url:
        raise ConnectUnavailable(f"{connect.REMOTE_ENV} is not set: no Spark Connect server to attach to")
    try:
        connect.wait_ready(url, timeout=wait_seconds)
    except TimeoutError:
        raise ConnectUnavailable(
            f"no Spark Connect server answers at {url} (waited {wait_seconds:.0f} s). Nothing was applied: the "
            "partition stays pending and the task's retry or the next run applies it. Start the server with "
            "scripts/connect-server start (make airflow-up and make cluster-up start it), or unset "
            f"{connect.REMOTE_ENV} to run the job with spark-submit."
        ) from None
    env[connect.REMOTE_ENV] = url
    env[connect.SESSION_TAG_ENV] = lane
    cmd = [python or env.get("STREAMREC_PYTHON") or sys.executable, str(job), *map(str, argv)]
    print(
        f"streamrec: {' '.join(cmd[1:2])} over Spark Connect at {url} (lane {lane}, try {attempt})",
        flush=True,
    )
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - a child that outlives its task would keep writing
    )
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        proc.terminate()
        if callable(previous):
            previous(signum, frame)

    main_thread = _is_main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, stop)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail = [*tail[-40:], line.rstrip("\n")]
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise JobFailed(f"{Path(job).name} exited with status {code}: " + " | ".join(tail[-5:]))
    for line in reversed(tail):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

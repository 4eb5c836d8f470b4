"""A Spark Connect server for the tests (``python -m streamrec.launch.connect serve``: the supervisor that restarts
it), on a free port, in its own process group. ``conftest.connect_server`` starts one per test session (per
xdist worker) when a test asks for it: the tests that run update jobs attach to it, as the stacks do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from streamrec.launch import connect as launch

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectServer:
    """``python -m streamrec.launch.connect serve`` (the supervisor) on a free port, in its own process group."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.url = f"sc://127.0.0.1:{self.port}"
        self.log = work / "connect.log"
        self.env = {
            **os.environ,
            "STREAMREC_CONNECT_DIR": str(work / "connect"),
            "STREAMREC_CONNECT_MEMORY": "1g",
            "STREAMREC_PYTHON": sys.executable,
        }
        self.env.pop(launch.REMOTE_ENV, None)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ConnectServer:
        fh = open(self.log, "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.launch.connect", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        launch.wait_ready(self.url, timeout=180, proc=self.proc)
        return self

    def jvm_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid), "-f", launch.SERVER_CLASS], capture_output=True
        )
        pids = [int(p) for p in out.stdout.split() if b"java" in Path(f"/proc/{int(p)}/cmdline").read_bytes()]
        assert pids, self.log.read_text()[-2000:]
        return pids[0]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop_and_check(self) -> bytes:
        """Stop; returns what is left of its process group after up to 30 s (empty: it all went)."""
        self.stop()
        left = b""
        for _ in range(30):  # the JVM's Python workers leave once it is gone
            left = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True).stdout
            if not left:
                break
            time.sleep(1)
        return left

"""A real S3 endpoint for tests: ``moto_server`` started as a subprocess on a free local port.

Used by the ``s3_endpoint`` / ``s3_env`` / ``s3_bucket_uri`` fixtures in ``conftest.py``. Each test gets its own
freshly created bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key-do-not-log",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port nobody listens on right now (racy by nature, good enough for a test server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_binary() -> str:
    """``moto_server`` next to the running interpreter (the venv's bin folder)."""
    candidate = Path(sys.executable).parent / "moto_server"
    return str(candidate) if candidate.exists() else "moto_server"


class MotoServer:
    """``moto_server -H 127.0.0.1 -p <port>`` as a child process; ``endpoint`` once started."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, **DUMMY_ENV}
        self.proc = subprocess.Popen(
            [moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"moto_server exited with code {self.proc.returncode} (log: {self.log_path})"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def set_s3_env(monkeypatch, endpoint: str) -> None:  # noqa: ANN001 (pytest MonkeyPatch)
    """Point boto3 at ``endpoint`` with dummy credentials, isolated from any real AWS config on the machine."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    for var, value in DUMMY_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def create_bucket(name: str | None = None) -> str:
    """Create a bucket on the configured endpoint (env from ``set_s3_env``) and return its name."""
    from streamrec.storage.s3client import shared_s3_client

    name = name or f"test-{uuid.uuid4().hex[:12]}"
    shared_s3_client().create_bucket(Bucket=name)
    return name


# --- outage injection ------------------------------------------------------------------------------------------
class TcpProxy:
    """A TCP proxy in front of the moto server, to make "the S3 server" unavailable and available again.

    This is how ``tests/test_faults.py`` injects an S3 outage: the clients talk to ``proxy.endpoint``, and
    :meth:`stop` closes the listening socket and severs every open connection, so requests fail the way they do
    when a server is down (connection reset, then connection refused); :meth:`start` listens on the same port
    again. moto keeps its whole state in memory, so killing moto itself would lose the bucket; the proxy makes the
    server unreachable while its state survives, which is what an outage of a real S3 endpoint looks like to a
    client.

    ``cut_on(marker)`` arms a one-shot trigger: the first client chunk containing ``marker`` (e.g.
    ``b"PUT /bucket/models/CURRENT "``, an HTTP request line) is *not* forwarded and the proxy stops at that
    instant, so the outage begins exactly at that request. ``stopped`` is set when that happens.
    """

    def __init__(self, target: str, port: int | None = None) -> None:
        from urllib.parse import urlparse

        u = urlparse(target)
        self.target = (u.hostname or "127.0.0.1", int(u.port or 80))
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._marker: bytes | None = None
        self.stopped = threading.Event()
        self.cut_requests: list[bytes] = []

    def start(self) -> TcpProxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        with self._lock:
            self._listener = s
        self.stopped.clear()
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="tcp-proxy-accept").start()
        return self

    def stop(self) -> None:
        """Refuse new connections and sever the open ones (idempotent)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = set(self._conns), set()
        if listener is not None:
            _close(listener)
        for c in conns:
            _close(c)
        self.stopped.set()

    def cut_on(self, marker: bytes) -> None:
        self._marker = marker

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: the outage began
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                marker = self._marker
                if from_client and marker is not None and marker in data:
                    self._marker = None
                    self.cut_requests.append(data.split(b"\r\n", 1)[0])
                    self.stop()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()

"""A real S3 endpoint for tests: ``moto_server`` started as a subprocess on a free local port.

Used by the ``s3_endpoint`` / ``s3_env`` / ``s3_bucket_uri`` fixtures in ``conftest.py``. Each test gets its own
freshly created bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
    from streamrec.bucket import shared_s3_client

    name = name or f"test-{uuid.uuid4().hex[:12]}"
    shared_s3_client().create_bucket(Bucket=name)
    return name

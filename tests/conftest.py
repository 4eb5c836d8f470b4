"""Shared fixtures: one small local Spark session for the whole test run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from streamrec.spark import get_session

    session = get_session(
        "streamrec-tests",
        master="local[2]",
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")),
        shuffle_partitions=2,
    )
    yield session
    session.stop()


# --- S3 (moto_server subprocess; see tests/s3server.py) ---------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server running for the whole session."""
    from s3server import MotoServer

    server = MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server.endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Environment pointing boto3 at the moto server with dummy credentials; returns the endpoint."""
    from s3server import set_s3_env

    set_s3_env(monkeypatch, s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3_bucket_uri(s3_env):
    """``s3://<fresh bucket>`` on the moto server (a new empty bucket per test)."""
    from s3server import create_bucket

    return f"s3://{create_bucket()}"

"""Shared fixtures: one small local Spark session for the whole test run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

# The longest files (``--durations``: whole real-Airflow runs, 2-5 min each) run first, then the other files
# with slow tests, then the rest. ``make test`` runs two pytest-xdist workers, one file at a time each
# (``--dist loadfile --no-loadscope-reorder``): started last, a 5-minute file would run alone at the end.
LONGEST_FIRST = (
    "test_cluster.py",  # the whole cluster topology and the demo's scenario through it: ~6.5 min on 2 cores (setup, 319 s call, teardown)
    "test_tuning_e2e.py",
    "test_scheduler_restart.py",
    "test_pipeline_e2e.py",
    "test_pipeline_e2e_s3.py",
    "test_corpus_dag.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        if item.path.name in LONGEST_FIRST:
            return LONGEST_FIRST.index(item.path.name)
        return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    by_file: dict = {}
    for item in items:
        by_file[item.path] = min(by_file.get(item.path, len(LONGEST_FIRST) + 1), rank(item))
    items.sort(key=lambda item: by_file[item.path])  # stable: each file's tests stay together, in order


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from streamrec.spark.session import get_session

    session = get_session(
        "streamrec-tests",
        master="local[2]",
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")),
        shuffle_partitions=2,
    )
    yield session
    session.stop()


# --- Spark Connect (tests/connectserver.py) ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """A warm Spark Connect server for the whole session (of this xdist worker), started on first use."""
    from connectserver import ConnectServer

    server = ConnectServer(tmp_path_factory.mktemp("connect")).start()
    yield server
    left = server.stop_and_check()
    assert left == b"", f"processes of the Connect server left behind after SIGTERM: {left!r}"


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

"""Injected faults (issue 5, part 2): the update pipeline survives a crash, an S3 outage, a lost success and a
concurrent run, with real parts only (real Spark and spark-submit, a real moto server, a real SIGKILL).

Every fault ends with the same three checks (``bench/reliability_faults.py`` holds the scenarios, shared with the
benchmark, and documents them):

* the published model equals, bit for bit, the one a clean run produces from the same inputs (the update is
  deterministic for the same inputs, version id and seed: hash hold-out, no random draw, one grouped-map task);
* every partition is applied exactly once, in order (the published manifest's ``partitions``);
* no half-written version is ever visible (a reader thread polls the pointer during the whole scenario).

One bootstrap (``world``, module scope) is shared; each test clones its bucket.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import reliability_faults as rf  # noqa: E402  (bench/reliability_faults.py: the scenarios, shared with the bench)

from streamrec.core import faults  # noqa: E402


def _assert_checks(result: dict) -> None:
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, f"{result['fault']}: failed checks {failed}\ndetails: {result.get('details')}"


# ----------------------------------------------------------------------------------------------------------------
# the failpoints themselves
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_failpoint_is_inert_unless_named(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("after_pointer")  # nothing
    monkeypatch.setenv(faults.ENV, "before_pointer")
    faults.point("after_pointer")  # another point: nothing
    with pytest.raises(faults.InjectedFault, match="before_pointer"):
        faults.point("before_pointer")


@pytest.mark.unit
def test_failpoint_sleep_and_parsing(monkeypatch):
    assert faults.active("after_pointer, before_pointer=sleep(0.2)") == {
        "after_pointer": "raise",
        "before_pointer": "sleep(0.2)",
    }
    monkeypatch.setenv(faults.ENV, "before_pointer=sleep(0.2)")
    t0 = time.monotonic()
    faults.point("before_pointer")
    assert 0.15 < time.monotonic() - t0 < 2
    for bad in ("no_such_point", "after_pointer=explode", "after_pointer=sleep(x)"):
        with pytest.raises(ValueError):
            faults.active(bad)
    with pytest.raises(ValueError):
        faults.point("no_such_point")


# ----------------------------------------------------------------------------------------------------------------
# the pointer's compare-and-swap (ModelStore.publish), without Spark
# ----------------------------------------------------------------------------------------------------------------
def _tiny_store(uri):
    import numpy as np

    from streamrec.core.arrays import ModelArrays
    from streamrec.storage.store import ModelStore

    store = ModelStore(uri)
    rng = np.random.default_rng(0)
    for v in ("v0", "v1", "v2"):
        arrays = ModelArrays(
            mu=3.5,
            rank=2,
            user_ids=[1, 2],
            user_bias=rng.normal(size=2),
            user_factors=rng.normal(size=(2, 2)),
            item_ids=[10],
            item_bias=[0.1],
            item_factors=[[0.2, 0.3]],
        )
        store.write_arrays(arrays, {"kind": "update", "parent": "v0", "partitions": [v]}, v)
    store.publish("v0")
    return store


def _race(store, versions, expected="v0", overlap=0.5):
    """Publish each version from its own thread at once, held ``overlap`` s between the pointer's read and write."""
    from streamrec.storage.store import ModelStore, StoreError

    out: dict[str, str] = {}

    def publish(v: str) -> None:
        try:
            ModelStore(store.bucket).publish(v, expected_current=expected)
            out[v] = "published"
        except StoreError as exc:
            out[v] = f"refused: {exc}"

    threads = [threading.Thread(target=publish, args=(v,)) for v in versions]
    with _env(faults.ENV, f"before_pointer=sleep({overlap})"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    return out


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _check_cas(store):
    from streamrec.storage.store import PointerMovedError

    store.publish("v1", expected_current="v0")
    with pytest.raises(PointerMovedError, match="moved"):
        store.publish("v2", expected_current="v0")
    assert store.current() == "v1"
    assert store.read_manifest("v2")["status"] == "candidate"
    out = _race(store, ["v0", "v2"], expected="v1")
    assert sorted(o.split(":")[0] for o in out.values()) == ["published", "refused"], out
    winner = next(v for v, o in out.items() if o == "published")
    loser = next(v for v in out if v != winner)
    assert store.current() == winner
    # the loser's manifest is what it was before (v0: published earlier, a rollback target; v2: a candidate)
    assert store.read_manifest(loser)["status"] == ("published" if loser == "v0" else "candidate")


@pytest.mark.unit
def test_publish_is_compare_and_swap_local(tmp_path):
    _check_cas(_tiny_store(str(tmp_path / "bucket")))


@pytest.mark.integration
def test_publish_is_compare_and_swap_s3(s3_bucket_uri):
    _check_cas(_tiny_store(s3_bucket_uri))


# ----------------------------------------------------------------------------------------------------------------
# shared world
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dag_parse(tmp_path_factory):
    """Airflow parsing ``dags/`` in a subprocess, started first so that it overlaps with the Spark set-up."""
    work = tmp_path_factory.mktemp("faults-dag")
    return work, rf.start_dag_parse(work)


@pytest.fixture(scope="module")
def world(dag_parse, spark, tmp_path_factory):
    """Bootstrap ``V0`` (published) and the clean runs' candidates ``VA`` (p-00001) and ``VB`` (p-00002)."""
    return rf.make_world(tmp_path_factory.mktemp("faults-world"), spark)


@pytest.fixture(scope="module")
def dag(dag_parse):
    """The update DAG as Airflow parses it: ``max_active_runs`` and the update task's spark-submit settings."""
    return rf.dag_facts(*dag_parse)


# ----------------------------------------------------------------------------------------------------------------
# fault 1: SIGKILL of the update job mid-run, then the same command again
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
def test_update_job_killed_mid_write_then_retried(world, dag, tmp_path):
    """spark-submit jobs/update.py with the DAG's argv and conf, SIGKILLed (its whole process group) while it
    writes the candidate; the retry with the same version id publishes the model a clean run builds."""
    assert dag["application"] == str(REPO / "jobs" / "update.py")
    res = rf.fault_kill_update(world, tmp_path, dag)
    _assert_checks(res)
    assert res["details"]["processes_killed"] >= 3  # launcher, JVM, Python driver (at least)
    assert res["details"]["model"]["max_abs_diff"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# fault 2: the S3 server unreachable during publish
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("cut", ["manifest", "pointer"])
def test_s3_outage_during_publish_then_retry(world, s3_env, cut):
    """The outage (a TCP proxy in front of moto stops, ``tests/s3server.py`` ``TcpProxy``) begins when the
    publish sends the manifest's PUT, or the pointer's PUT (the manifest already says published); the
    pointer never moves during the outage, and the retried publish completes it."""
    res = rf.fault_s3_outage(world, s3_env, cut)
    _assert_checks(res)
    assert res["details"]["status_during_outage"] == ("candidate" if cut == "manifest" else "published")


# ----------------------------------------------------------------------------------------------------------------
# fault 3: death right after the pointer write, before the task records success
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.spark
@pytest.mark.parametrize("where", ["local", "s3"])
def test_failure_after_pointer_then_publish_retried(world, where, tmp_path, request):
    from streamrec.storage.bucket import Bucket

    if where == "s3":
        uri = request.getfixturevalue("s3_bucket_uri")
        bucket = Bucket.from_uri(uri)
    else:
        bucket = Bucket.from_uri(tmp_path / "bucket")
    res = rf.fault_after_pointer(world, bucket)
    _assert_checks(res)
    assert res["details"]["asset_extra"]["version"] == rf.VA


# ----------------------------------------------------------------------------------------------------------------
# fault 4: two update runs publishing at once
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.spark
def test_concurrent_publish_local_one_wins_loser_applied_next(world, dag, spark, tmp_path):
    from streamrec.storage.bucket import Bucket

    res = rf.fault_concurrent_publish(world, Bucket.from_uri(tmp_path / "bucket"), dag, spark, tmp_path)
    _assert_checks(res)
    assert res["checks"]["dag_max_active_runs_1"]


@pytest.mark.integration
@pytest.mark.spark
def test_concurrent_publish_s3_one_wins(world, dag, s3_bucket_uri):
    from streamrec.storage.bucket import Bucket

    res = rf.fault_concurrent_publish(world, Bucket.from_uri(s3_bucket_uri), dag)
    _assert_checks(res)

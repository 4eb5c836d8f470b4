"""Catch-up batching: ``pipeline.check_and_select`` picks up to N contract-passing partitions in arrival order
(``max_partitions_per_run``, the update DAG's Param), quarantining failures on the way; a rejected batch is held
and re-queued as one. No Spark: the model is written with pyarrow (``ModelStore.write_arrays``), GX runs with its
pandas engine (no Data Docs).

Expected selections are written out by hand from the drop order below.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from streamrec import pipeline
from streamrec.core.arrays import ModelArrays
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
NOW = 1_790_000_000.0
HEADER = "user,item,rating,timestamp\n"
GOOD = HEADER + "1,10,3.5,964982703\n2,11,4.0,964982800\n3,10,5,964982900\n"
BAD = HEADER + "1,10,7.0,964982703\n0,11,4.0,964982800\n"  # off the scale, a user id 0
# arrival order (mtime): a, b, bad1, c, bad2, d, e
DROPS = [("a", GOOD), ("b", GOOD), ("bad1", BAD), ("c", GOOD), ("bad2", BAD), ("d", GOOD), ("e", GOOD)]


def _arrays(user_ids, item_ids) -> ModelArrays:
    rank = 2
    return ModelArrays(
        mu=3.5,
        rank=rank,
        user_ids=np.asarray(user_ids, np.int64),
        user_bias=np.zeros(len(user_ids)),
        user_factors=np.full((len(user_ids), rank), 0.1),
        item_ids=np.asarray(item_ids, np.int64),
        item_bias=np.zeros(len(item_ids)),
        item_factors=np.full((len(item_ids), rank), 0.1),
        n=10,
    )


@pytest.fixture
def stream(tmp_path) -> tuple[Bucket, ModelStore]:
    """A bucket with a published base model (lineage: nothing) and the seven drops of ``DROPS``."""
    bucket, store = pipeline.open_bucket(str(tmp_path / "bucket"))
    v0 = store.write_arrays(
        _arrays([1, 2, 3], [10, 11]), {"kind": "bootstrap", "partitions": []}, "v20260101T000000-boot-000000"
    )
    store.publish(v0)
    for k, (name, body) in enumerate(DROPS):
        key = f"{pipeline.INCOMING}/{name}.csv"
        bucket.write_text(key, body)
        os.utime(bucket.uri(key), (NOW - 100 + k, NOW - 100 + k))
    return bucket, store


def _select(bucket, store, n):
    return pipeline.check_and_select(bucket, store, pipeline.pending(bucket, store), NOW, False, n)


def test_default_is_one_partition_per_run(stream) -> None:
    bucket, store = stream
    sel = pipeline.check_and_select(bucket, store, pipeline.pending(bucket, store), NOW, build_docs=False)
    assert [p["id"] for p in sel["partitions"]] == ["a"]
    assert sel["partitions"][0]["id"] == "a"
    assert [r["id"] for r in sel["checked"]] == ["a"]


def test_batch_takes_the_first_n_passing_in_arrival_order(stream) -> None:
    bucket, store = stream
    sel = _select(bucket, store, 4)
    assert [p["id"] for p in sel["partitions"]] == ["a", "b", "c", "d"]
    assert sel["partitions"][0]["id"] == "a"
    # checked in arrival order up to the 4th passing one; e is left for the next run (not even checked)
    assert [(r["id"], r["ok"]) for r in sel["checked"]] == [
        ("a", True),
        ("b", True),
        ("bad1", False),
        ("c", True),
        ("bad2", False),
        ("d", True),
    ]
    assert bucket.exists("quarantine/bad1/report.json") and bucket.exists("quarantine/bad2/report.json")
    assert not bucket.exists("reports/partitions/e/report.json")
    # the quarantined ones are not pending any more; what is left, in order: the batch (not applied yet) and e
    assert [p["id"] for p in pipeline.pending(bucket, store)["pending"]] == ["a", "b", "c", "d", "e"]


def test_batch_larger_than_the_backlog_takes_everything_that_passes(stream) -> None:
    bucket, store = stream
    sel = _select(bucket, store, 1000)
    assert [p["id"] for p in sel["partitions"]] == ["a", "b", "c", "d", "e"]
    assert len(sel["checked"]) == 7


def test_only_failures_select_nothing(tmp_path) -> None:
    bucket, store = pipeline.open_bucket(str(tmp_path / "bucket"))
    store.publish(store.write_arrays(_arrays([1], [10]), {"kind": "bootstrap", "partitions": []}, "v1"))
    bucket.write_text(f"{pipeline.INCOMING}/x.csv", BAD)
    sel = _select(bucket, store, 5)
    assert sel["partitions"] == []
    assert [(r["id"], r["ok"]) for r in sel["checked"]] == [("x", False)]


def test_none_takes_the_environment_else_one(stream, monkeypatch) -> None:
    bucket, store = stream
    monkeypatch.setenv(pipeline.MAX_PARTITIONS_ENV, "2")
    assert [p["id"] for p in _select(bucket, store, None)["partitions"]] == ["a", "b"]
    monkeypatch.delenv(pipeline.MAX_PARTITIONS_ENV)
    assert pipeline.max_partitions_per_run(None) == 1
    monkeypatch.setenv(pipeline.MAX_PARTITIONS_ENV, "7")
    assert pipeline.max_partitions_per_run(3) == 3, "an explicit value (the form) wins over the environment"


@pytest.mark.parametrize("bad", [0, -1, "x", 2.5, "2.5"])
def test_invalid_batch_sizes_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="whole number >= 1"):
        pipeline.max_partitions_per_run(bad)


def test_string_and_whole_float_batch_sizes() -> None:
    assert pipeline.max_partitions_per_run("4") == 4
    assert pipeline.max_partitions_per_run(3.0) == 3


def test_version_id_of_a_batch() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert pipeline.batch_suffix(["p-00001"]) == "p-00001"
    assert pipeline.batch_suffix(["p-00001", "p-00002", "p-00003"]) == "p-00001-n3"
    v = pipeline.version_id("upd", "scheduled__x", when, pipeline.batch_suffix(["p-00001", "p-00002"]))
    assert v.startswith("v20260102T030405-upd-p-00001-n2-")
    assert pipeline.batch_suffix(["p" * 100, "q"]).endswith("-n2")
    with pytest.raises(ValueError):
        pipeline.batch_suffix([])


def test_run_version_ids_follow_the_order_runs_started_in() -> None:
    """An asset-triggered run's run_after is when its first event was queued: a fallback run created later can
    carry an earlier run_after than the run started before it. Ids use the start time, so they sort in the
    order the versions were built; a run not started yet (no start_date) falls back to run_after."""
    from types import SimpleNamespace

    first = SimpleNamespace(
        run_id="asset_triggered__1",
        run_after=datetime(2026, 1, 2, 3, 4, 37, tzinfo=UTC),
        start_date=datetime(2026, 1, 2, 3, 4, 40, tzinfo=UTC),
    )
    second = SimpleNamespace(  # queued before the first ran (earlier run_after), started after it ended
        run_id="scheduled__2",
        run_after=datetime(2026, 1, 2, 3, 4, 31, tzinfo=UTC),
        start_date=datetime(2026, 1, 2, 3, 5, 10, tzinfo=UTC),
    )
    a, b = (pipeline.run_version_id("upd", r, "p-00001") for r in (first, second))
    assert a.startswith("v20260102T030440-upd-p-00001-") and b.startswith("v20260102T030510-upd-p-00001-")
    assert a < b
    assert pipeline.run_version_id("upd", first) == pipeline.run_version_id("upd", first)  # a retry: same id
    not_started = SimpleNamespace(run_id="manual__3", run_after=first.run_after, start_date=None)
    assert pipeline.run_version_id("boot", not_started).startswith("v20260102T030437-boot-")


def test_a_rejected_batch_is_held_and_requeued_as_one(stream) -> None:
    bucket, store = stream
    base = store.current()
    v = "v20260101T000100-upd-a-n3-111111"
    store.write_arrays(
        _arrays([1, 2, 3], [10, 11]),
        {"kind": "update", "parent": base, "partitions": ["a", "b", "c"]},
        v,
    )
    pipeline.reject(store, v, {"reasons": ["worse than the published model"]})
    store.update_manifest(v, new_partitions=["a", "b", "c"])
    plan = pipeline.pending(bucket, store)
    assert [p["id"] for p in plan["pending"]] == ["bad1", "bad2", "d", "e"]
    assert {k: plan["skipped"][k] for k in "abc"} == dict.fromkeys("abc", f"rejected by the gate in {v}")
    # naming one partition of the batch releases the whole candidate's partitions, in arrival order again
    assert pipeline.requeue(store, ["b"]) == [v]
    assert store.read_manifest(v)["status"] == "rejected" and store.read_manifest(v)["requeued_at"]
    assert [p["id"] for p in pipeline.pending(bucket, store)["pending"]] == [n for n, _ in DROPS]


def test_update_job_takes_repeated_partitions_in_order() -> None:
    """The argv the validate task builds (``--partition ID=URI`` once per partition of the batch) parses with
    jobs/update.py's own parser into the ordered list ``runs.update_version`` folds in."""
    spec = importlib.util.spec_from_file_location("_streamrec_job_update", REPO / "jobs" / "update.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    ns = job.parse(
        ["--bucket", "b", "--partition", "c=/x/c.csv", "--partition", "a=/x/a.csv", "--partition", "b=/x/b"]
    )
    assert ns.partition == [("c", "/x/c.csv"), ("a", "/x/a.csv"), ("b", "/x/b")]

"""The update DAG's event trigger (``plugins/streamrec_trigger.py``) and its logic (``streamrec.pipeline.watch``).

The trigger's real ``run()`` (an async generator, as the triggerer drives it) is run in a thread of its own against
a local bucket folder and a moto S3 server, while the test drops files: one event per new partition, none for
what was there before it started, none for temporary upload names (``x.csv.tmp``) until the rename. The backlog
logic (``pending`` events after a publish or a quarantine, none while the pending set is unchanged) is driven
poll by poll with a model written by pyarrow (``ModelStore.write_arrays``, no Spark).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))  # as every Airflow process does ([core] plugins_folder)

pytestmark = pytest.mark.unit

CSV = b"user,item,rating\n1,10,4.0\n2,20,3.5\n"


class Running:
    """``trigger.run()`` on an event loop in a thread; the payloads it yields land in a queue."""

    def __init__(self, trigger) -> None:
        self.trigger = trigger
        self.q: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self._consume())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def _consume(self) -> None:
        async for event in self.trigger.run():
            self.q.put(event.payload)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the trigger did not stop when cancelled"

    def wait_polls(self, n: int, timeout: float = 60) -> None:
        """Until the trigger has listed ``n`` more times from now."""
        target = self.trigger.polls + n
        deadline = time.monotonic() + timeout
        while self.trigger.polls < target:
            assert self.error is None, self.error
            assert self.thread.is_alive(), "the trigger ended by itself"
            assert time.monotonic() < deadline, f"the trigger listed {self.trigger.polls} times in {timeout}s"
            time.sleep(0.02)

    def drain(self) -> list[dict]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.q.get_nowait())
        return out

    def settled_events(self, polls: int = 5) -> list[dict]:
        """Everything yielded until ``polls`` more listings are done (the settle rule needs two)."""
        self.wait_polls(polls)
        return self.drain()


def _trigger(uri: str):
    import streamrec_trigger

    import streamrec.pipeline.watch  # noqa: F401 - imported here, so the first poll does not pay for it

    return streamrec_trigger.IncomingPartitionsTrigger(
        bucket=uri, poll_seconds=0.05, drain_seconds=0.5, settle_seconds=30.0
    )


def _scenario(uri: str) -> None:
    """Drops into ``uri``'s incoming/ while the trigger runs; asserts the events."""
    from streamrec.pipeline import INCOMING
    from streamrec.storage.bucket import Bucket

    bucket = Bucket.from_uri(uri)
    bucket.write_bytes(f"{INCOMING}/old.csv", CSV)  # there before the watch: never announced
    bucket.write_bytes(f"{INCOMING}/older/part-0.csv", CSV)
    trigger = _trigger(uri)
    with Running(trigger) as run:
        assert run.settled_events() == [], "files already there were announced"

        for name in ("a.csv", "b.csv", "c.parquet"):
            bucket.write_bytes(f"{INCOMING}/{name}", CSV)
        events = run.settled_events()
        assert sorted(e["partition"] for e in events) == ["a", "b", "c"], events
        assert all(e["reason"] == "arrival" for e in events), events
        assert {e["key"] for e in events} == {f"{INCOMING}/{n}" for n in ("a.csv", "b.csv", "c.parquet")}
        assert run.settled_events(10) == [], "an announced file was announced again"

        # uploads in progress: a temporary name, and a folder partition holding one
        bucket.write_bytes(f"{INCOMING}/x.csv.tmp", CSV)
        bucket.write_bytes(f"{INCOMING}/y.csv._COPYING_", CSV)
        bucket.write_bytes(f"{INCOMING}/batch7/part-0.csv", CSV)
        bucket.write_bytes(f"{INCOMING}/batch7/part-1.csv.part", CSV)
        assert run.settled_events() == [], "a temporary upload name was announced"

        # the uploads complete: renamed (S3 has no rename: a new key, the temporary one deleted)
        bucket.write_bytes(f"{INCOMING}/x.csv", CSV)
        bucket.delete(f"{INCOMING}/x.csv.tmp")
        bucket.write_bytes(f"{INCOMING}/batch7/part-1.csv", CSV)
        bucket.delete(f"{INCOMING}/batch7/part-1.csv.part")
        events = run.settled_events()
        assert sorted(e["partition"] for e in events) == ["batch7", "x"], events
        assert next(e for e in events if e["partition"] == "batch7")["size"] == 2 * len(CSV)

        # hidden names are not partitions at all
        bucket.write_bytes(f"{INCOMING}/.hidden.csv", CSV)
        bucket.write_bytes(f"{INCOMING}/_SUCCESS", b"")
        assert run.settled_events() == []

        # a file rewritten with other bytes is new again; one dropped again after a delete too
        bucket.write_bytes(f"{INCOMING}/a.csv", CSV + b"3,30,5.0\n")
        bucket.delete(f"{INCOMING}/b.csv")
        run.wait_polls(3)
        bucket.write_bytes(f"{INCOMING}/b.csv", CSV)
        events = run.settled_events()
        assert sorted(e["partition"] for e in events) == ["a", "b"], events
        assert run.settled_events(10) == []
    assert run.error is None, run.error


def test_trigger_local_folder(tmp_path):
    _scenario(str(tmp_path / "bucket"))


@pytest.mark.integration
def test_trigger_s3(s3_bucket_uri):
    _scenario(s3_bucket_uri)


def test_trigger_outlives_an_unreachable_bucket(tmp_path, monkeypatch):
    """Listing errors are logged and retried: the watcher never ends on its own, and picks up when it can."""
    from streamrec.pipeline import INCOMING
    from streamrec.storage.bucket import LocalBucket

    trigger = _trigger(str(tmp_path / "bucket"))
    calls = {"n": 0}
    from streamrec.pipeline import watch

    real = watch.snapshot

    def flaky(bucket, prefix=INCOMING):
        calls["n"] += 1
        if 3 <= calls["n"] <= 6:
            raise ConnectionError("S3 endpoint down")
        return real(bucket, prefix)

    monkeypatch.setattr(watch, "snapshot", flaky)
    with Running(trigger) as run:
        run.wait_polls(1)
        deadline = time.monotonic() + 60
        while calls["n"] < 7:
            assert run.thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        LocalBucket(tmp_path / "bucket").write_bytes(f"{INCOMING}/late.csv", CSV)
        assert [e["partition"] for e in run.settled_events()] == ["late"]
    assert run.error is None


def test_settle_rule_waits_for_a_file_being_written(tmp_path):
    """A local file whose size changes between listings is announced once it stops changing."""
    from streamrec.pipeline import INCOMING
    from streamrec.pipeline.watch import IncomingWatch
    from streamrec.storage.bucket import LocalBucket

    bucket = LocalBucket(tmp_path)
    now = [1000.0]
    w = IncomingWatch(bucket, settle=5.0, clock=lambda: now[0])
    assert w.poll() == []  # baseline: empty
    path = tmp_path / INCOMING / "slow.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CSV)
    os.utime(path, (now[0], now[0]))
    assert w.poll() == []  # first sight, fresh mtime: not settled
    with path.open("ab") as fh:
        fh.write(b"3,30,5.0\n")
    os.utime(path, (now[0] + 1, now[0] + 1))
    now[0] += 1
    assert w.poll() == []  # it changed: still not settled
    now[0] += 1
    assert [e["partition"] for e in w.poll()] == ["slow"]  # unchanged since the last listing
    assert w.poll() == []
    # an old mtime (a copy that kept its timestamp) is settled at first sight
    old = tmp_path / INCOMING / "kept.csv"
    old.write_bytes(CSV)
    os.utime(old, (now[0] - 60, now[0] - 60))
    assert [e["partition"] for e in w.poll()] == ["kept"]


def _publish(store, version: str, partitions: list[str]) -> None:
    from streamrec.core.arrays import ModelArrays

    arrays = ModelArrays(
        mu=3.0,
        rank=1,
        user_ids=[1, 2],
        user_bias=[0.0, 0.0],
        user_factors=[[0.1], [0.2]],
        item_ids=[10, 20],
        item_bias=[0.0, 0.0],
        item_factors=[[0.3], [0.4]],
    )
    store.write_arrays(arrays, {"kind": "update", "partitions": partitions}, version)
    store.publish(version)


def test_backlog_events(tmp_path):
    """``pending`` events: at start when something is pending, after each change of the pending set (a publish,
    a quarantine), never while it is unchanged, nothing when all is absorbed; arrivals do not double up."""
    from streamrec.pipeline import INCOMING, QUARANTINE
    from streamrec.pipeline.watch import IncomingWatch
    from streamrec.storage.bucket import LocalBucket
    from streamrec.storage.store import ModelStore

    bucket = LocalBucket(tmp_path)
    store = ModelStore(bucket)
    now = [1000.0]

    def drop(name: str) -> None:
        bucket.write_bytes(f"{INCOMING}/{name}", CSV)
        os.utime(tmp_path / INCOMING / name, (now[0] - 60, now[0] - 60))  # settled

    for name in ("p1.csv", "p2.csv", "p3.csv"):
        drop(name)
    w = IncomingWatch(bucket, drain=10.0, clock=lambda: now[0])
    assert w.poll() == [], "no published model: nothing is pending"

    _publish(store, "v20260101T000000-boot", [])
    now[0] += 1
    assert w.poll() == [
        {"reason": "pending", "base": "v20260101T000000-boot", "partitions": ["p1", "p2", "p3"]}
    ]
    for _ in range(3):  # a run works on p1: the set does not change
        now[0] += 11
        assert w.poll() == []

    _publish(store, "v20260101T000100-upd", ["p1"])  # the run published p1: the pointer moved
    now[0] += 1
    assert w.poll() == [{"reason": "pending", "base": "v20260101T000100-upd", "partitions": ["p2", "p3"]}]

    # p2 quarantined (no publish): noticed at the next drain check, not before
    bucket.write_json(f"{QUARANTINE}/p2/report.json", {"partition": {}})
    now[0] += 1
    assert w.poll() == []
    now[0] += 10
    assert w.poll() == [{"reason": "pending", "base": "v20260101T000100-upd", "partitions": ["p3"]}]

    # an arrival is announced once; the pending check right after it records the set without a second event
    drop("p4.csv")
    now[0] += 1
    assert w.poll() == [
        {
            "reason": "arrival",
            "partition": "p4",
            "key": f"{INCOMING}/p4.csv",
            "size": len(CSV),
            "mtime": now[0] - 61,
        }
    ]
    now[0] += 11
    assert w.poll() == []

    _publish(store, "v20260101T000200-upd", ["p1", "p3", "p4"])
    now[0] += 1
    assert w.poll() == []  # all absorbed (p2 is quarantined): nothing pending, no event
    now[0] += 30
    assert w.poll() == []


def test_trigger_serializes_and_imports_by_classpath():
    """The triggerer re-creates the trigger from ``serialize()``: the classpath imports (plugins folder on
    ``sys.path``) and the kwargs give back an equal trigger; the schedule is the asset or the fallback."""
    import streamrec_trigger
    from airflow._shared.module_loading import import_string
    from airflow.sdk import AssetOrTimeSchedule, DeltaTriggerTimetable

    trigger = streamrec_trigger.IncomingPartitionsTrigger(bucket="s3://b/x", poll_seconds=3)
    classpath, kwargs = trigger.serialize()
    assert classpath == streamrec_trigger.CLASSPATH
    again = import_string(classpath)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs == {"bucket": "s3://b/x", "poll_seconds": 3.0, "drain_seconds": 10.0, "settle_seconds": 3.0}

    schedule = streamrec_trigger.update_schedule()
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert isinstance(schedule.timetable, DeltaTriggerTimetable)
    assert schedule.asset_condition.name == streamrec_trigger.INCOMING_ASSET_NAME
    (watcher,) = schedule.asset_condition.watchers
    assert watcher.trigger.serialize()[0] == classpath


def test_knobs_from_the_environment(monkeypatch):
    from datetime import timedelta

    import streamrec_trigger

    monkeypatch.setenv("STREAMREC_UPDATE_FALLBACK_SECONDS", "600")
    monkeypatch.setenv("STREAMREC_WATCH_POLL_SECONDS", "5")
    monkeypatch.setenv("STREAMREC_BUCKET", "/data/bucket")
    assert streamrec_trigger.fallback_interval() == timedelta(minutes=10)
    kwargs = streamrec_trigger.incoming_asset().watchers[0].trigger.serialize()[1]
    assert (kwargs["poll_seconds"], kwargs["bucket"]) == (5.0, "/data/bucket")
    for bad in ("x", "-1", "0"):  # a bad value must not break the DAG's import
        monkeypatch.setenv("STREAMREC_UPDATE_FALLBACK_SECONDS", bad)
        assert streamrec_trigger.fallback_interval() == timedelta(minutes=5)
    # unset: 1 s between listings of a local folder, 2 s on S3 (each listing a billed LIST request)
    monkeypatch.delenv("STREAMREC_WATCH_POLL_SECONDS")
    for bucket, poll in (("/data/bucket", 1.0), ("s3://b/prefix", 2.0)):
        monkeypatch.setenv("STREAMREC_BUCKET", bucket)
        kwargs = streamrec_trigger.incoming_asset().watchers[0].trigger.serialize()[1]
        assert (kwargs["poll_seconds"], kwargs["settle_seconds"]) == (poll, 2.0)


@pytest.mark.unit
def test_only_the_scheduler_preloads_the_update_tasks_modules():
    """``plugins/airflow_local_settings.py``: the ``airflow scheduler`` process imports Great Expectations and the
    pipeline's modules before its LocalExecutor forks, so each task finds them imported; no other Airflow
    process does, nor the scheduler with ``STREAMREC_PRELOAD=0``."""
    import subprocess

    plugins = str(Path(__file__).resolve().parent.parent / "plugins")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; import airflow_local_settings; "
        "print(sorted(m for m in airflow_local_settings.PRELOAD if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "STREAMREC_PRELOAD"}
    cases = [
        (["/venv/bin/airflow", "scheduler"], {}, True),
        (["/venv/bin/airflow", "api-server"], {}, False),
        (["/venv/bin/airflow", "triggerer"], {}, False),
        (["/venv/bin/airflow", "scheduler"], {"STREAMREC_PRELOAD": "0"}, False),
    ]
    for argv, extra, preloaded in cases:
        run = subprocess.run(
            [sys.executable, "-c", code, plugins, *argv], env={**env, **extra}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        imported = eval(run.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list
        if preloaded:
            assert imported == sorted(
                [
                    "great_expectations",
                    "streamrec.pipeline.contract.gx",
                    "streamrec.pipeline.plans",
                    "streamrec.pipeline.reports",
                    "streamrec.pipeline.tasks",
                ]
            ), run.stderr
            assert "streamrec preload: 5 of 5 modules imported" in run.stderr
        else:
            assert "great_expectations" not in imported and "streamrec preload" not in run.stderr, (
                argv,
                extra,
            )

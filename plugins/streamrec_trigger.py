"""The event that starts ``streamrec_update``: a partition landed in ``ratings/incoming/`` (Airflow 3 asset watcher).

``streamrec_update`` is scheduled on :func:`update_schedule`: the asset :data:`INCOMING_ASSET_NAME` *or* a slow
fallback timetable (``AssetOrTimeSchedule``). The asset has an ``AssetWatcher`` whose trigger,
:class:`IncomingPartitionsTrigger` (a ``BaseEventTrigger``), runs forever in the triggerer: every
``poll_seconds`` it lists ``incoming/`` of the bucket (one ``LIST``, local folder or ``s3://``) and yields a
``TriggerEvent`` per new settled partition, and one when the backlog of pending partitions changes
(``streamrec.pipeline.watch``: what is announced and why). Each event becomes an asset event; the scheduler
starts a run (events that arrive while a run is active are folded into one next run: ``max_active_runs=1``).

What a run applies is still decided by its first task against the model's lineage (``streamrec.pipeline.pending``):
a duplicate event finds nothing new and the run ends there; a lost event (triggerer down, restarted between
two polls) is caught by the fallback schedule, and a triggerer that starts announces whatever is pending then.

How the triggerer finds this class: a trigger is re-created from ``serialize()``'s classpath with
``import_string``; every Airflow process puts ``[core] plugins_folder`` on ``sys.path``
(``airflow.settings.prepare_syspath_for_config_and_plugins``), so this module imports as ``streamrec_trigger``
in the DAG processor (which imports it from ``dags/streamrec_update.py``), the scheduler and the triggerer; the
plugin manager loads it under the same name. It registers no plugin. Parsing the DAG imports nothing of
streamrec (the DAG processor stays light): the listing code is imported in the triggerer, on the first poll.

Knobs (environment, read where the DAG is parsed; they are the trigger's kwargs, shown with the asset):

* ``STREAMREC_WATCH_POLL_SECONDS`` (default 1 for a local folder, 2 for ``s3://``, where each listing is a
  billed ``LIST`` request): seconds between listings. A new file is announced at the listing that sees it
  unchanged a second time (or once its mtime is 2 s old), so this is most of the detection delay;
* ``STREAMREC_WATCH_DRAIN_SECONDS`` (default 10): at most this often, the pending check of the backlog;
* ``STREAMREC_UPDATE_FALLBACK_SECONDS`` (default 300): the fallback schedule of ``streamrec_update``;
* ``STREAMREC_BUCKET``: the bucket watched (else the triggerer's ``streamrec.pipeline.bucket_uri()``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, DeltaTriggerTimetable
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

CLASSPATH = "streamrec_trigger.IncomingPartitionsTrigger"
"""The importable name (the plugins folder is on ``sys.path``); not ``__name__``-derived on purpose."""
INCOMING_ASSET_NAME = "streamrec_incoming"
INCOMING_ASSET_URI = "streamrec://ratings/incoming"


def _seconds(var: str, default: float, low: float) -> float:
    """``$var`` as a number of seconds >= ``low``, else ``default`` (a bad value must not break the DAG's import)."""
    try:
        value = float(os.environ.get(var, "") or default)
    except ValueError:
        return default
    return value if value >= low else default


class IncomingPartitionsTrigger(BaseEventTrigger):
    """Poll ``ratings/incoming/`` of ``bucket`` every ``poll_seconds``; yield an event per new partition and per
    change of the pending backlog (``streamrec.pipeline.watch.IncomingWatch``). Runs until cancelled.

    A listing that fails (S3 unreachable, a permission error) is logged and retried at the next poll: the watcher
    never ends on its own. The blocking listing runs in a worker thread, off the triggerer's event loop.
    """

    def __init__(
        self,
        bucket: str | None = None,
        poll_seconds: float = 2.0,
        drain_seconds: float = 10.0,
        settle_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket or None
        self.poll_seconds = float(poll_seconds)
        self.drain_seconds = float(drain_seconds)
        self.settle_seconds = float(settle_seconds if settle_seconds is not None else max(2.0, poll_seconds))
        self.polls = 0  # listings done by run() (for the log and the tests)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "bucket": self.bucket,
                "poll_seconds": self.poll_seconds,
                "drain_seconds": self.drain_seconds,
                "settle_seconds": self.settle_seconds,
            },
        )

    def _watch(self):
        from streamrec import pipeline
        from streamrec.pipeline.watch import IncomingWatch

        bucket, _ = pipeline.open_bucket(self.bucket)
        return IncomingWatch(bucket, settle=self.settle_seconds, drain=self.drain_seconds)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = None
        failures = 0
        while True:
            try:
                if watch is None:
                    watch = await asyncio.to_thread(self._watch)
                    self.log.info(
                        "watching %s every %ss", watch.bucket.uri("ratings/incoming"), self.poll_seconds
                    )
                events = await asyncio.to_thread(watch.poll)
                self.polls += 1
                failures = 0
            except Exception as exc:  # noqa: BLE001 - a watcher must outlive an outage of its bucket
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    self.log.warning(
                        "listing incoming/ failed (%d in a row): %s: %s", failures, type(exc).__name__, exc
                    )
                events = []
            for event in events:
                self.log.info("event: %s", event)
                yield TriggerEvent(event)
            await asyncio.sleep(self.poll_seconds)


def default_poll_seconds(bucket: str | None) -> float:
    """1 s between listings of a local folder (a directory scan), 2 s on ``s3://`` (a ``LIST`` request each).
    (The test of ``streamrec.launch.s3a.uses_s3``, written here: parsing the DAG imports nothing of streamrec.)"""
    return 2.0 if (bucket or "").startswith(("s3://", "s3a://")) else 1.0


def incoming_asset() -> Asset:
    """The asset ``streamrec_update`` is scheduled on, with its watcher (kwargs from the environment)."""
    bucket = os.environ.get("STREAMREC_BUCKET") or None
    poll = _seconds("STREAMREC_WATCH_POLL_SECONDS", default_poll_seconds(bucket), 0.1)
    trigger = IncomingPartitionsTrigger(
        bucket=bucket,
        poll_seconds=poll,
        drain_seconds=_seconds("STREAMREC_WATCH_DRAIN_SECONDS", 10.0, 0.0),
    )
    return Asset(
        name=INCOMING_ASSET_NAME,
        uri=INCOMING_ASSET_URI,
        group="streamrec",
        watchers=[AssetWatcher(name="streamrec_incoming_watcher", trigger=trigger)],
    )


def fallback_interval() -> timedelta:
    """``$STREAMREC_UPDATE_FALLBACK_SECONDS`` (default 300 s, at least 10 s)."""
    return timedelta(seconds=_seconds("STREAMREC_UPDATE_FALLBACK_SECONDS", 300.0, 10.0))


def update_schedule() -> AssetOrTimeSchedule:
    """``streamrec_update``'s schedule: an event on :func:`incoming_asset`, or every :func:`fallback_interval`."""
    return AssetOrTimeSchedule(timetable=DeltaTriggerTimetable(fallback_interval()), assets=incoming_asset())

"""What is new in ``ratings/incoming/``: the logic of the update DAG's event trigger, as plain Python.

The trigger (``plugins/streamrec_trigger.py``, run by Airflow's triggerer) calls :meth:`IncomingWatch.poll`
every few seconds and turns what it returns into asset events; ``streamrec_update`` is scheduled on that asset.
Nothing here decides what a run applies: the run's first task lists ``incoming/`` against the published model's
lineage (:func:`streamrec.pipeline.pending`), the source of truth for exactly once. An event only says *look
now*; a duplicate event finds nothing new and the run ends in its first task, and a lost event is caught by the
DAG's slow fallback schedule.

Two kinds of event
------------------
**arrival** (one per partition whose listing signature is new): the signature of a partition is
``(size, mtime)`` of its file, or of a folder partition's files together (:func:`snapshot`, one ``LIST``).
A partition is announced once it is *settled*: the same signature in two consecutive listings, or an ``mtime``
at least ``settle`` seconds old (a local file still being written changes size and mtime between polls; an S3
object is complete when it is listed). Not announced:

* what the first listing finds (it was there before the watch started; the ``pending`` event below covers
  whatever of it is still unabsorbed);
* temporary upload names (:data:`TEMP_SUFFIXES`: ``x.csv.tmp``, ``x.csv.part``, ``x.csv._COPYING_`` ...), and a
  folder partition while any of its files has one; hidden names (``.``/``_`` first) are skipped by the listing
  already (``streamrec.pipeline.contract.list_incoming``);
* a partition whose signature was already announced (a file rewritten with new bytes is announced again).

**pending** (the backlog): the scheduler folds every event that arrives while a run is active into *one* next
run, and a run applies at most ``max_partitions_per_run`` partitions, so ten partitions dropped at once would
otherwise leave nine for the fallback schedule. So whenever the published pointer moves, after an arrival, and
every ``drain`` seconds, the watch asks :func:`streamrec.pipeline.pending` (only when the listing holds a
partition outside the current lineage: that check is one read of the pointer, plus the manifest when the pointer
moved) and announces the pending set when it is non-empty and differs from the last one seen: after a publish,
a quarantine or a gate rejection the head of the queue changes and the next run starts within ``drain``
seconds; while a run works on a partition the set does not change and nothing is announced. The set seen
right after an arrival is recorded without an event (the arrival event already asked for a run). A run that
failed leaves the set unchanged: its retry comes from the task's retries or the fallback schedule.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamrec.pipeline.contract import list_incoming
from streamrec.pipeline.tasks import INCOMING, pending
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".filepart",
    ".crdownload",
    ".download",
    ".inprogress",
    ".uploading",
    "._copying_",
)
"""Name endings of uploads in progress (compared case-insensitively): ``x.csv.tmp`` is not announced; the
rename to ``x.csv`` is."""


def is_temp(name: str) -> bool:
    """True for a temporary upload name (:data:`TEMP_SUFFIXES`; the base name of a key)."""
    return posixpath.basename(name).lower().endswith(TEMP_SUFFIXES)


@dataclass(frozen=True)
class Seen:
    """One partition in a listing: its id, key (file or folder), bytes of its files and newest mtime."""

    id: str
    key: str
    size: int
    mtime: float

    @property
    def signature(self) -> tuple[int, float]:
        return (self.size, round(self.mtime, 3))

    def as_event(self) -> dict:
        return {
            "reason": "arrival",
            "partition": self.id,
            "key": self.key,
            "size": self.size,
            "mtime": self.mtime,
        }


def snapshot(bucket: Bucket, prefix: str = INCOMING) -> dict[str, Seen]:
    """Partition key -> :class:`Seen`, for the settled-looking partitions under ``prefix`` (one ``LIST``):
    temporary upload names are left out, and so is a folder partition while any of its files has one."""
    out: dict[str, Seen] = {}
    for part in list_incoming(bucket, prefix):
        if any(is_temp(f) for f in part.files):
            continue
        out[part.key] = Seen(part.id, part.key, int(part.size), float(part.mtime))
    return out


class IncomingWatch:
    """The state of one watch of ``incoming/`` (module docstring). ``poll()`` returns the events to emit."""

    def __init__(
        self,
        bucket: Bucket,
        *,
        settle: float = 2.0,
        drain: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.store = ModelStore(bucket)
        self.settle, self.drain, self.clock = settle, drain, clock
        self.announced: dict[str, tuple[int, float]] | None = None  # None: no baseline listing yet
        self.previous: dict[str, Seen] = {}
        self.pointer: str | None = None
        self.lineage: set[str] = set()
        self.last_pending: tuple | None = None
        self.last_check = float("-inf")

    # --- arrivals ------------------------------------------------------------------------------------------
    def arrivals(self, snap: dict[str, Seen], now: float) -> list[dict]:
        """The partitions of ``snap`` to announce now (and remember as announced)."""
        if self.announced is None:  # the baseline: what is already there is not new
            self.announced = {k: s.signature for k, s in snap.items()}
            self.previous = snap
            return []
        out = []
        for key, seen in snap.items():
            if self.announced.get(key) == seen.signature:
                continue
            before = self.previous.get(key)
            if (before is not None and before.signature == seen.signature) or now - seen.mtime >= self.settle:
                out.append(seen.as_event())
                self.announced[key] = seen.signature
        for key in [k for k in self.announced if k not in snap]:  # gone: dropped again later, it is new again
            del self.announced[key]
        self.previous = snap
        return out

    # --- the backlog ---------------------------------------------------------------------------------------
    def _outside_lineage(self, snap: dict[str, Seen]) -> tuple[bool, bool]:
        """(pointer moved since the last call, the listing holds an id outside the current lineage)."""
        current = self.store.current()
        moved = current != self.pointer
        if moved:
            self.pointer = current
            self.lineage = set(self.store.read_manifest(current).get("partitions", [])) if current else set()
        if current is None:
            return moved, False
        return moved, any(s.id not in self.lineage for s in snap.values())

    def backlog(self, snap: dict[str, Seen], now: float, arrived: bool) -> dict | None:
        """A ``pending`` event when the pending set is non-empty and new (module docstring), else None."""
        moved, outside = self._outside_lineage(snap)
        if not (moved or arrived or now - self.last_check >= self.drain):
            return None
        self.last_check = now
        if not outside:
            self.last_pending = None
            return None
        found = pending(self.bucket, self.store)
        ids = tuple(p["id"] for p in found["pending"])
        state = (found["base"], ids) if ids else None
        if state == self.last_pending:
            return None
        self.last_pending = state
        if state is None or arrived:
            return None
        return {"reason": "pending", "base": found["base"], "partitions": list(ids)}

    def poll(self) -> list[dict]:
        """One listing; the events to emit now (arrivals first, then at most one ``pending``)."""
        now = self.clock()
        snap = snapshot(self.bucket)
        events = self.arrivals(snap, now)
        more = self.backlog(snap, now, arrived=bool(events))
        return events + ([more] if more else [])

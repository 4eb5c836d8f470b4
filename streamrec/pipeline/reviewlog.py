"""The review log: ``models/events/``, one JSON object per review action (rollback, re-queue), append-only;
and what it holds back from the update DAG (:func:`hold_state`, read by ``pipeline.pending``).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from streamrec.core.layout import EVENTS, QUARANTINE, REQUEUE_MARKER
from streamrec.storage.bucket import Bucket

log = logging.getLogger("streamrec.pipeline.review")


def _now(when: datetime | None = None) -> datetime:
    when = when or datetime.now(UTC)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


# ------------------------------------------------------------------------------------------------------------
# the review log
# ------------------------------------------------------------------------------------------------------------
def record_event(bucket: Bucket, action: str, when: datetime | None = None, **fields: Any) -> dict:
    """Append one event to ``models/events/`` and return it (with its ``id``)."""
    ts = _now(when)
    event_id = f"{ts:%Y%m%dT%H%M%S.%f}-{secrets.token_hex(3)}"
    doc = {"id": event_id, "action": action, "at": ts.isoformat(timespec="seconds"), **fields}
    bucket.write_json(f"{EVENTS}/{event_id}.json", doc)
    log.info("review event %s: %s", event_id, {k: v for k, v in doc.items() if k != "id"})
    return doc


def events(bucket: Bucket) -> list[dict]:
    """Every event of the review log, oldest first."""
    out = []
    for obj in bucket.list(EVENTS):
        if obj.key.endswith(".json"):
            try:
                out.append(bucket.read_json(obj.key))
            except (FileNotFoundError, ValueError):  # unreadable: shown as such, never fatal
                out.append({"id": obj.key.rsplit("/", 1)[-1][:-5], "action": "unreadable"})
    return out


def held_by_rollback(log_events: list[dict]) -> dict[str, str]:
    """Partition id -> the rollback event holding it (the latest event naming a partition decides)."""
    held: dict[str, str] = {}
    for ev in log_events:
        if ev.get("action") == "rollback":
            for pid in ev.get("restored") or []:
                held.pop(pid, None)
            for pid in ev.get("held") or []:
                held[pid] = ev["id"]
        elif ev.get("action") == "requeue":
            for pid in ev.get("partitions") or []:
                held.pop(pid, None)
    return held


def released_quarantine(bucket: Bucket) -> set[str]:
    """Quarantined partition ids whose re-queue marker is newer than their quarantine record."""
    record: dict[str, float] = {}
    marker: dict[str, float] = {}
    for obj in bucket.list(QUARANTINE):
        parts = obj.key.split("/")
        if len(parts) == 3 and obj.mtime is not None:
            if parts[2] == "report.json":
                record[parts[1]] = obj.mtime
            elif parts[2] == REQUEUE_MARKER:
                marker[parts[1]] = obj.mtime
    return {pid for pid, t in marker.items() if t > record.get(pid, float("-inf"))}


def hold_state(bucket: Bucket) -> dict:
    """What ``pipeline.pending`` needs from the review actions: ``held`` (partition id -> rollback event id)
    and ``released`` (quarantined partition ids re-queued since they were quarantined)."""
    return {"held": held_by_rollback(events(bucket)), "released": released_quarantine(bucket)}

"""What a reviewer sees and does: versions with lineage, gate decisions, quarantine, lookups, rollback, re-queue.

Plain Python on a :class:`~streamrec.storage.bucket.Bucket` and a :class:`~streamrec.storage.store.ModelStore` (no Airflow, no
Spark, no web framework): the Airflow plugin ``plugins/streamrec_review.py`` serves these functions as a page
and a small JSON API, and the tests call them directly.

The review log: ``models/events/``
----------------------------------
Every action taken from the review page is recorded as one JSON object
``models/events/<UTC yyyymmddThhmmss.ffffff>-<6 hex>.json`` (``action``, ``at``, ``actor``, ``reason`` and the
action's facts). The log is append-only: events are only ever added, never rewritten or deleted. One object per
event rather than one ``events.jsonl`` because S3 has no append: a read-modify-write of a shared file loses an
event when two writers race, a new key cannot. Keys sort by time, so listing the folder reads the log in order.

Rollback
--------
:func:`rollback` moves ``models/CURRENT`` back to an earlier *published* version (a rejected or never-published
candidate cannot become current: the gate never accepted it). The manifest of the version rolled back from gets
``rolled_back`` (when, to which version, why); it stays ``published`` (it was accepted once, and a later rollback
may return to it).

The update DAG builds every candidate on ``store.current()``, so its next candidate is built on the version
rolled back to. A run in flight during the rollback cannot undo it: ``pipeline.publish`` refuses to move the
pointer when it no longer names the base the candidate was built from.

*Which partitions become pending again?* ``pipeline.pending`` offers every partition of ``ratings/incoming/``
that the current manifest has not absorbed. After a rollback from ``B`` to ``A``, the partitions in ``B``'s
lineage but not in ``A``'s ("the rolled-back partitions") are no longer absorbed. Offering them again at once
would, within one schedule tick, fold the same data back in and rebuild much the same model the reviewer just
rolled back from: the rollback would undo itself, and the partition that did the damage would come back with
the rest. So a rollback **holds** them: the rollback event lists them (``held``), and ``pending`` skips a
held partition (reason ``held by rollback <event>``) until a reviewer re-queues it (:func:`requeue`), the same
way a gate-rejected partition waits for a re-queue. Held partitions are listed on the page with a re-queue
button; re-queueing them one by one, oldest first, replays the stream minus the partitions left out.

Re-queue
--------
:func:`requeue` releases one partition, whatever holds it:

* **gate-rejected** (a rejected ``update`` candidate absorbed it): ``pipeline.requeue`` marks that candidate
  ``requeued_at`` (it stays rejected, never published) and the partition is pending again;
* **held by a rollback**: a ``requeue`` event naming it releases it (the latest event about a partition wins);
* **quarantined** (failed the data contract): a marker ``quarantine/<id>/requeue.json`` makes ``pending``
  offer the same bytes again, so the next update run checks them again, e.g. after the contract or the rating
  scale was changed. The marker counts only while it is newer than the quarantine record
  ``quarantine/<id>/report.json`` (both times are the bucket's own object times, so no two clocks are
  compared): when the partition fails again, ``contract.quarantine`` rewrites the record, the marker is stale,
  and the partition is held again instead of being re-checked every 30 s. (Fixing the data needs no re-queue:
  drop the fixed file under the same name and it is checked again because its bytes changed.)

Each re-queue is recorded as a ``requeue`` event. A partition already absorbed by the current version, or held
by nothing, is refused with a ``ValueError`` saying so.

Lookup
------
:class:`LookupCache` keeps the loaded :class:`~streamrec.pipeline.lookup.Recommender` of the last few versions in
memory (a published version never changes; an unpublished one is keyed by its ``created_at`` too, so a
rewritten candidate is reloaded), and the current-version pointer for ``pointer_ttl`` seconds (one GET per
lookup on S3 would cost more than the scoring). The lookup ranks the items by the version's ranking rule
(``streamrec.core.ranking``) and leaves out every item the user rated: the version's seen table
(``ModelStore.load_seen``, kept beside its factors), loaded with the model. Beside the recommendations it shows the
user's own top-rated items (from the same table: highest rating first, then the more widely rated item), so a
reviewer can judge the recommendations against the user's taste. A version written before the seen table
existed has none: its lookup says so (``rated.known`` false) and cannot exclude anything. Item titles come from
``ratings/movies.csv`` (:data:`MOVIES`) when the bucket has one, in MovieLens format
(``movieId,title,genres``, with a header); cached by the object's size and time.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from streamrec.core import layout
from streamrec.pipeline.review_lookup import LookupCache, lookup, read_movies
from streamrec.pipeline.reviewlog import (
    events,
    held_by_rollback,
    hold_state,
    record_event,
    released_quarantine,
)
from streamrec.storage.bucket import Bucket, check_key
from streamrec.storage.store import PUBLISHED, REJECTED, ModelStore, StoreError

log = logging.getLogger(__name__)

EVENTS, MOVIES, REPORTS, QUARANTINE, INCOMING = (
    layout.EVENTS,
    layout.MOVIES,
    layout.REPORTS,
    layout.QUARANTINE,
    layout.INCOMING,
)
REQUEUE_MARKER = layout.REQUEUE_MARKER

__all__ = [
    "EVENTS",
    "MOVIES",
    "LookupCache",
    "events",
    "hold_state",
    "lookup",
    "overview",
    "read_movies",
    "read_report",
    "record_event",
    "requeue",
    "rollback",
]


# ------------------------------------------------------------------------------------------------------------
# what the page shows
# ------------------------------------------------------------------------------------------------------------
def _new_partitions(manifest: dict, by_version: dict[str, dict]) -> list[str]:
    """The partitions a version added to its parent's lineage (as ``pipeline.new_partitions``, from manifests
    already read)."""
    if "new_partitions" in manifest:
        return list(manifest["new_partitions"])
    parent = by_version.get(manifest.get("parent") or "")
    before = set((parent or {}).get("partitions") or [])
    return [p for p in manifest.get("partitions") or [] if p not in before]


def _version_row(m: dict, current: str | None, by_version: dict[str, dict], report_keys: set[str]) -> dict:
    metrics = m.get("metrics") or {}
    validation = metrics.get("validation") or {}
    gate_key = f"{REPORTS}/gates/{m.get('version')}.html"
    return {
        "version": m.get("version"),
        "kind": m.get("kind"),
        "parent": m.get("parent"),
        "status": m.get("status"),
        "current": m.get("version") == current,
        "created_at": m.get("created_at"),
        "published_at": m.get("published_at"),
        "rank": m.get("rank"),
        "mu": m.get("mu"),
        "n_ratings": m.get("n_ratings"),
        "n_users": m.get("n_users"),
        "n_items": m.get("n_items"),
        "partitions": list(m.get("partitions") or []),
        "new_partitions": _new_partitions(m, by_version),
        "params": m.get("params") or {},
        "rmse": validation.get("rmse"),
        "mae": validation.get("mae"),
        "validation_rows": validation.get("n"),
        "prequential": metrics.get("prequential") or {},
        "gate": m.get("gate"),
        "reason": m.get("reason"),
        "requeued_at": m.get("requeued_at"),
        "rolled_back": m.get("rolled_back"),
        "gate_report": gate_key if gate_key in report_keys else None,
    }


def _gate_row(row: dict) -> dict | None:
    gate = row.get("gate")
    if not isinstance(gate, dict) or "accepted" not in gate:
        if row["status"] != REJECTED:
            return None
        gate = {"accepted": False, "reasons": [row.get("reason") or "rejected"]}
    return {
        "version": row["version"],
        "kind": row["kind"],
        "status": row["status"],
        "accepted": bool(gate.get("accepted")),
        "reasons": list(gate.get("reasons") or []),
        "candidate_rmse": gate.get("candidate_rmse"),
        "published_rmse": gate.get("published_rmse"),
        "published_version": gate.get("published_version"),
        "baseline_rmse": gate.get("baseline_rmse"),
        "ceiling": gate.get("ceiling"),
        "tolerance": gate.get("tolerance"),
        "validation_rows": gate.get("validation_rows"),
        "new_partitions": row["new_partitions"],
        "requeued_at": row["requeued_at"],
        "gate_report": row["gate_report"],
    }


def overview(bucket: Bucket, store: ModelStore) -> dict:
    """Everything the review page shows, as JSON-able data (versions newest first).

    ``versions``: lineage (parent, partitions absorbed and new ones), hyper-parameters, metrics, status and
    which one is current; ``gates``: every gate decision with its numbers; ``quarantined``: reasons and the
    keys of their Data Docs / reports; ``held``: partitions held by a rollback; ``chart``: the points of the
    RMSE chart (``reports.history_points``); ``events``: the review log, newest first."""
    from streamrec.pipeline import reports
    from streamrec.pipeline import tasks as pipeline

    manifests = store.list_versions()
    current = store.current()
    by_version = {str(m.get("version")): m for m in manifests}
    report_keys = {o.key for o in bucket.list(REPORTS)}
    rows = [_version_row(m, current, by_version, report_keys) for m in reversed(manifests)]
    gates = [g for g in (_gate_row(r) for r in rows) if g is not None]
    log_events = events(bucket)
    state = {"held": held_by_rollback(log_events), "released": released_quarantine(bucket)}
    incoming = {p.id for p in _incoming(bucket)}
    quarantined = []
    for q in reports.quarantined(bucket):  # newest first, with the one-line reason
        pid = q["id"]
        docs = f"{reports.DATADOCS}/{pid}/index.html"
        rep = f"{reports.PARTITION_REPORTS}/{pid}/report.json"
        quarantined.append(
            {
                "id": pid,
                "reason": q["reason"],
                "quarantined_at": datetime.fromtimestamp(q["mtime"], UTC).isoformat(timespec="seconds")
                if q["mtime"]
                else None,
                "datadocs": docs if docs in report_keys else None,
                "report": rep if rep in report_keys else None,
                "requeued": pid in state["released"],
                "raw_present": pid in incoming,
            }
        )
    current_manifest = by_version.get(current or "") or {}
    rejected = pipeline.rejected_partitions(store)
    return {
        "bucket": bucket.uri(),
        "current": current,
        "current_rmse": pipeline.rmse_of(current_manifest),
        "applied": list(current_manifest.get("partitions") or []),
        "versions": rows,
        "gates": gates,
        "quarantined": quarantined,
        "rejected": rejected,
        "held": state["held"],
        "chart": reports.history_points(manifests),
        "events": list(reversed(log_events)),
        "index": reports.INDEX if reports.INDEX in report_keys else None,
        "movies": MOVIES if bucket.exists(MOVIES) else None,
    }


def chart_svg(store: ModelStore) -> str:
    """The RMSE chart of every version (``reports.rmse_svg``; streaming updates as circles, bootstrap squares,
    retrain diamonds; hollow red rejected)."""
    from streamrec.pipeline import reports

    return reports.rmse_svg(store.list_versions(), highlight=store.current(), highlight_label="current")


def read_report(bucket: Bucket, key: str) -> bytes:
    """The bytes of a report file under ``reports/``; any other key (or one that could escape the root: ``..``,
    absolute, backslash ...) is refused with ``PermissionError``; a missing one raises ``FileNotFoundError``."""
    try:
        body = check_key(key)
    except ValueError as exc:
        raise PermissionError(f"refused key {key!r}: {exc}") from None
    if not body.startswith(REPORTS + "/"):
        raise PermissionError(f"refused key {key!r}: only files under {REPORTS}/ are served")
    return bucket.read_bytes(body)


# ------------------------------------------------------------------------------------------------------------
# actions
# ------------------------------------------------------------------------------------------------------------
def _need_reason(reason: str | None) -> str:
    text = " ".join(str(reason or "").split())
    if not text:
        raise ValueError("a reason is required (it is recorded in the review log)")
    return text[:500]


def rollback(
    bucket: Bucket,
    store: ModelStore,
    version: str,
    reason: str,
    actor: str | None = None,
    expected_current: str | None = None,
    when: datetime | None = None,
) -> dict:
    """Make an earlier published ``version`` current again; return the ``rollback`` event.

    Refuses (``StoreError``) a version that is not published, the current version itself, and, when
    ``expected_current`` is given, a pointer that moved since the caller looked (a stale page must not undo a
    publish it never saw). The event is written first (``from``, ``to``, ``held``: the partitions absorbed by
    ``from`` but not by ``to``, see the module docstring), then the pointer moves (``store.publish``), then the
    manifest of ``from`` gets ``rolled_back``. ``restored`` lists the partitions an earlier rollback held that
    ``version`` has absorbed (they are no longer held). A crash after the event but before the pointer moves leaves an
    event whose ``held`` partitions are all still absorbed by the current version: harmless to ``pending``.
    """
    reason = _need_reason(reason)
    ModelStore.check_version(version)
    target = store.read_manifest(version)
    current = store.current()
    if expected_current is not None and current != expected_current:
        raise StoreError(
            f"the current version is {current}, not {expected_current}: reload the page before rolling back"
        )
    if version == current:
        raise StoreError(f"version {version} is already the current version")
    if target.get("status") != PUBLISHED:
        raise StoreError(
            f"version {version} is {target.get('status')}: only a version that was published can be made "
            "current again (the gate never accepted it)"
        )
    source = store.read_manifest(current) if current else {}
    kept = set(target.get("partitions") or [])
    held = [p for p in source.get("partitions") or [] if p not in kept]
    before = held_by_rollback(events(bucket))
    restored = [p for p in target.get("partitions") or [] if p in before]  # absorbed again: no longer held
    event = record_event(
        bucket,
        "rollback",
        when,
        actor=actor,
        reason=reason,
        **{"from": current, "to": version, "held": held, "restored": restored},
    )
    store.publish(version)
    if current:
        store.update_manifest(
            current, rolled_back={"at": event["at"], "to": version, "reason": reason, "event": event["id"]}
        )
    return event


def requeue(
    bucket: Bucket,
    store: ModelStore,
    partition: str,
    reason: str,
    actor: str | None = None,
    when: datetime | None = None,
) -> dict:
    """Offer ``partition`` to the update DAG again, whatever holds it (gate rejection, rollback, quarantine);
    return the ``requeue`` event (``released``: what held it). See the module docstring."""
    from streamrec.pipeline import tasks as pipeline

    reason = _need_reason(reason)
    pid = check_key(partition)
    if "/" in pid:
        raise ValueError(f"invalid partition id {partition!r}")
    current = store.current()
    if current and pid in (store.read_manifest(current).get("partitions") or []):
        raise ValueError(f"partition {pid} is already absorbed by the current version {current}")
    released: list[dict] = []
    rejected = pipeline.rejected_partitions(store)
    if pid in rejected:
        released.append({"by": "gate", "versions": pipeline.requeue(store, [pid], when)})
    log_events = events(bucket)
    held = held_by_rollback(log_events)
    if pid in held:
        released.append({"by": "rollback", "event": held[pid]})
    record_key = f"{QUARANTINE}/{pid}/report.json"
    if bucket.exists(record_key) and pid not in released_quarantine(bucket):
        if not any(p.id == pid for p in _incoming(bucket)):
            raise ValueError(
                f"partition {pid} is quarantined but its raw file is no longer under {INCOMING}/: "
                "drop it again instead"
            )
        released.append({"by": "quarantine", "record": record_key})
    if not released:
        raise ValueError(
            f"partition {pid} is not held by the gate, a rollback or the quarantine: nothing to re-queue"
        )
    event = record_event(
        bucket, "requeue", when, actor=actor, reason=reason, partitions=[pid], released=released
    )
    if any(r["by"] == "quarantine" for r in released):
        # Written after the record it must be newer than (see the module docstring). S3 object times have a
        # resolution of one second: a marker written in the same second as the record is not newer, so it is
        # written again a second later.
        marker = {"event": event["id"], "at": event["at"], "actor": actor}
        for _ in range(3):
            bucket.write_json(f"{QUARANTINE}/{pid}/{REQUEUE_MARKER}", marker)
            if pid in released_quarantine(bucket):
                break
            time.sleep(1.1)
        else:
            raise RuntimeError(f"the re-queue marker of {pid} is not newer than its quarantine record")
    return event


def _incoming(bucket: Bucket) -> list:
    from streamrec.pipeline.contract import list_incoming

    return list_incoming(bucket, INCOMING)

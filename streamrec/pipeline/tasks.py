"""What the Airflow DAGs do between the Spark jobs, as plain Python (no Airflow, no Spark, no JVM).

The DAGs in ``dags/`` only wire tasks; each task calls one function here, so the logic is testable without a
scheduler and the DAG files stay thin. Everything goes through a :class:`~streamrec.storage.bucket.Bucket` (a local
folder or ``s3://``) and the :class:`~streamrec.storage.store.ModelStore`.

What is pending, and why nothing is applied twice or skipped
-----------------------------------------------------------
The record of what a model has absorbed is its manifest's ``partitions`` (cumulative lineage). A partition
under ``ratings/incoming/`` is *pending* when it is

* not in the current model's lineage (applied partitions are never offered again; the update job also refuses a
  partition already in its base's lineage),
* not quarantined (``quarantine/<id>/report.json`` exists for the same bytes: same size and mtime; a file fixed
  and dropped again under the same name is checked again), and
* not held by a gate-rejected candidate (a rejected ``update`` version's new partitions; see :func:`requeue`),
  nor by a rollback until a reviewer re-queues it (``streamrec.pipeline.review``: a quarantined partition re-queued there
  is offered again, same bytes and all).

The raw files under ``incoming/`` are never moved or deleted, so a crash at any point leaves the partition
either in the published lineage (done) or pending (done again, from the same base, into the same
deterministic version id).

The gate's numbers
------------------
:func:`gate_numbers` scores the candidate, the published model and the candidate's biases-only baseline (its
factors zeroed: ``mu + b_u + b_i``) on the same rows, the candidate's validation set, with
``streamrec.core.arrays.predict`` (fallbacks for unknown ids, clipped to the scale; the formula of
``streamrec.spark.evaluate``), in numpy from the stored tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.core import layout, metrics
from streamrec.core.arrays import ModelArrays, predict
from streamrec.pipeline.reviewlog import hold_state
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import PUBLISHED, REJECTED, ModelStore

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
HISTORY = layout.HISTORY
INCOMING = layout.INCOMING
QUARANTINE = layout.QUARANTINE
VALIDATION = layout.VALIDATION
LAYOUT = layout.TOP_LEVEL


def bucket_uri() -> str:
    """The bucket root: ``$STREAMREC_BUCKET`` (a folder, ``file://`` or ``s3://bucket[/prefix]``), default
    ``<repo>/var/bucket``."""
    return os.environ.get("STREAMREC_BUCKET") or str(REPO / "var" / "bucket")


def open_bucket(uri: str | None = None) -> tuple[Bucket, ModelStore]:
    bucket = Bucket.from_uri(uri or bucket_uri())
    return bucket, ModelStore(bucket)


def version_id(kind: str, run_id: str, when: datetime | None, suffix: str = "") -> str:
    """A version id derived only from the DAG run: a retried task rewrites the same candidate.

    ``v<yyyymmddThhmmss>-<kind>[-<suffix>]-<6 hex of run_id>``, sortable by time like the store's own ids."""
    when = when or datetime.now(UTC)
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", suffix).strip("-._")[:60]
    parts = [f"v{when:%Y%m%dT%H%M%S}", kind, *([safe] if safe else []), digest]
    return ModelStore.check_version("-".join(parts))


def run_version_id(kind: str, dag_run: Any, suffix: str = "") -> str:
    """The version id of a DAG run's candidate (:func:`version_id`), timed by when the run *started*.

    Not ``run_after``: for an asset-triggered run that is when its first event was queued, and a fallback run
    created while events waited behind an active run could get an earlier time than a run built before it, so
    ids would stop sorting in build order (``list_versions``, the history chart and the index sort by id). Runs
    of one DAG start one after another (``max_active_runs=1``), so their start times follow build order; a task
    retry keeps its run's ``start_date``, so a retried task still rewrites the same candidate."""
    return version_id(kind, dag_run.run_id, dag_run.start_date or dag_run.run_after, suffix)


# ------------------------------------------------------------------------------------------------------------
# what is pending
# ------------------------------------------------------------------------------------------------------------
def rejected_partitions(store: ModelStore) -> dict[str, str]:
    """Partition id -> the rejected version that holds it (skipping versions marked ``requeued``)."""
    out: dict[str, str] = {}
    for m in store.list_versions():
        if m.get("status") != REJECTED or m.get("requeued_at") or m.get("kind") != "update":
            continue
        for pid in new_partitions(store, m):
            out.setdefault(pid, m["version"])
    return out


def new_partitions(store: ModelStore, manifest: dict) -> list[str]:
    """The partitions a version added to its parent's lineage (``new_partitions`` if recorded)."""
    if "new_partitions" in manifest:
        return list(manifest["new_partitions"])
    parent = manifest.get("parent")
    before: set[str] = set()
    if parent:
        with contextlib.suppress(LookupError):
            before = set(store.read_manifest(parent).get("partitions", []))
    return [p for p in manifest.get("partitions", []) if p not in before]


def quarantined(bucket: Bucket) -> dict[str, dict]:
    """Partition id -> the quarantined partition record (its ``size``/``mtime`` when quarantined)."""
    out = {}
    for obj in bucket.list(QUARANTINE):
        parts = obj.key.split("/")
        if len(parts) == 3 and parts[2] == "report.json":
            try:
                out[parts[1]] = bucket.read_json(obj.key).get("partition") or {}
            except (FileNotFoundError, ValueError):
                out[parts[1]] = {}
    return out


def _same_bytes(part: Any, record: dict) -> bool:
    if not record:
        return True
    return int(record.get("size", -1)) == int(part.size) and math.isclose(
        float(record.get("mtime", -1.0)), float(part.mtime), abs_tol=1e-3
    )


def pending(bucket: Bucket, store: ModelStore) -> dict:
    """What the update DAG should look at now: the current version and the pending partitions in arrival
    order (as dicts), plus what was skipped and why (for the log), and ``waiting``: the object keys of
    unfinished uploads (temporary names, see ``contract.incoming``), skipped as "waiting for its upload to
    finish" until they are renamed."""
    from streamrec.pipeline.contract import REFUSED_KEY, WAITING_WHY, list_incoming

    current = store.current()
    if current is None:
        return {"base": None, "pending": [], "skipped": {}, "note": "no published model: bootstrap first"}
    lineage = set(store.read_manifest(current).get("partitions", []))
    rejected = rejected_partitions(store)
    quar = quarantined(bucket)
    # --- review actions (streamrec.pipeline.review): partitions held by a rollback; quarantined ones re-queued ---
    review = hold_state(bucket)
    # --- end review actions ---
    todo, skipped, refused, waiting = [], {}, [], []
    for part in list_incoming(bucket, INCOMING, refused, waiting):
        if part.id in lineage:
            skipped[part.id] = "applied"
        elif part.id in rejected:
            skipped[part.id] = f"rejected by the gate in {rejected[part.id]}"
        elif part.id in review["held"]:  # review: held by a rollback until re-queued
            skipped[part.id] = f"held by rollback {review['held'][part.id]}"
        elif (
            part.id in quar and _same_bytes(part, quar[part.id]) and part.id not in review["released"]
        ):  # review: a re-queue marker newer than the quarantine record offers the same bytes again
            skipped[part.id] = "quarantined"
        else:
            todo.append(part.as_dict())
    skipped.update({key: REFUSED_KEY for key in refused})
    skipped.update({key: WAITING_WHY for key in waiting})  # unfinished uploads: picked up once renamed
    return {"base": current, "pending": todo, "skipped": skipped, "waiting": waiting}


def requeue(store: ModelStore, partition_ids: Iterable[str], when: datetime | None = None) -> list[str]:
    """Release partitions held by rejected versions: those versions get ``requeued_at`` (they stay rejected and
    are never published); the partitions become pending again. Returns the versions changed.

    A rejected *batch* (a candidate of several partitions, ``max_partitions_per_run`` > 1) is one gate decision:
    naming any of its partitions releases all of them (the next run checks and batches them again)."""
    wanted = set(partition_ids)
    changed = []
    stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds")
    for m in store.list_versions():
        if (
            m.get("status") == REJECTED
            and m.get("kind") == "update"
            and not m.get("requeued_at")
            and wanted & set(new_partitions(store, m))
        ):
            store.update_manifest(m["version"], requeued_at=stamp)
            changed.append(m["version"])
    return changed


# ------------------------------------------------------------------------------------------------------------
# the gate
# ------------------------------------------------------------------------------------------------------------
def _key_in(bucket: Bucket, uri: str) -> tuple[Bucket, str]:
    """(bucket, key prefix) for a Spark URI written by the jobs (inside the bucket, or anywhere else)."""
    root = bucket.spark_uri("").rstrip("/")
    if uri.startswith(root + "/"):
        return bucket, uri[len(root) + 1 :].strip("/")
    return Bucket.from_uri(uri), ""


def read_ratings_arrays(bucket: Bucket, uris: Sequence[str]) -> dict[str, np.ndarray]:
    """The Parquet ratings under ``uris`` (folders written by Spark) as numpy ``user``, ``item``, ``rating`` and
    ``ts`` (epoch seconds as float64, NaN where missing: a time-aware model predicts at each rating's time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for uri in uris:
        b, prefix = _key_in(bucket, uri)
        for obj in b.list(prefix):
            name = obj.key.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not name.startswith(("_", ".")):
                t = pq.read_table(pa.BufferReader(b.read_bytes(obj.key)))
                ts = (
                    t.column("ts").cast(pa.float64())
                    if "ts" in t.column_names
                    else pa.nulls(len(t), pa.float64())
                )
                tables.append(t.select(["user", "item", "rating"]).append_column("ts", ts))
    if not tables:
        return {
            k: np.zeros(0, dt)
            for k, dt in (("user", np.int64), ("item", np.int64), ("rating", float), ("ts", float))
        }
    t = pa.concat_tables(tables, promote_options="permissive")
    return {
        "user": np.asarray(t.column("user").to_numpy(), dtype=np.int64),
        "item": np.asarray(t.column("item").to_numpy(), dtype=np.int64),
        "rating": np.asarray(t.column("rating").to_numpy(), dtype=np.float64),
        "ts": t.column("ts").to_numpy(zero_copy_only=False).astype(np.float64),
    }


def rmse(
    arrays: ModelArrays, rows: dict[str, np.ndarray], low: float, high: float, factors: bool = True
) -> float | None:
    """RMSE of ``streamrec.core.arrays.predict`` (``mu + b_u + b_i + p_u·q_i``, the fallbacks for unknown ids,
    clipped to ``[low, high]``) on ``rows``; ``factors=False``: the biases-only baseline. None when no rows."""
    return error_metrics(arrays, rows, low, high, factors)["rmse"]


def error_metrics(
    arrays: ModelArrays, rows: dict[str, np.ndarray], low: float, high: float, factors: bool = True
) -> dict:
    """RMSE, MAE, n and fallback counts (``streamrec.core.metrics``) of ``arrays`` on ``rows``, in numpy: what
    ``streamrec.spark.evaluate.rmse`` computes for the same rows (the gate's and the evaluate job's numbers agree
    to rounding; ``tests/test_predict.py``)."""
    user, item = rows["user"], rows["item"]
    pred = predict(arrays, user, item, clip=(low, high), factors=factors, time=rows.get("ts"))
    known_u, known_i = arrays.user_rows(user) >= 0, arrays.item_rows(item) >= 0
    return metrics.error_metrics(rows["rating"], pred, known_u, known_i)


def scale_bounds(manifest: dict) -> tuple[float, float]:
    """``(low, high)`` of the rating scale a version was built with (its ``params.scale``; half stars if none)."""
    from streamrec.core.schema import RatingScale

    text = (manifest.get("params") or {}).get("scale")
    s = RatingScale.parse(text) if text else RatingScale()
    return float(s.low), float(s.high)


def gate_numbers(store: ModelStore, version: str, published: str | None, baseline: bool) -> dict:
    """RMSE of the candidate, of ``published`` and (with ``baseline``) of the candidate's biases only, all on
    the candidate's validation set; ``validation``: the candidate's whole metrics dict there (RMSE, MAE, n,
    fallback counts). Also the Spark evaluate job's RMSE when one ran (bootstrap, retrain), as a cross-check."""
    manifest = store.read_manifest(version)
    low, high = scale_bounds(manifest)
    rows = read_ratings_arrays(store.bucket, manifest.get("validation", []))
    cand = store.load_arrays(version)
    validation = error_metrics(cand, rows, low, high)
    out: dict[str, Any] = {
        "validation_rows": len(rows["rating"]),
        "validation": validation,
        "candidate_rmse": validation["rmse"],
        "baseline_rmse": rmse(cand, rows, low, high, factors=False) if baseline else None,
        "published_rmse": rmse(store.load_arrays(published), rows, low, high) if published else None,
        "spark_rmse": ((manifest.get("metrics") or {}).get("validation") or {}).get("rmse"),
    }
    if (
        out["spark_rmse"] is not None
        and out["candidate_rmse"] is not None
        and not math.isclose(out["spark_rmse"], out["candidate_rmse"], rel_tol=1e-6, abs_tol=1e-9)
    ):
        log.warning("numpy RMSE %s != evaluate job's %s", out["candidate_rmse"], out["spark_rmse"])
    return out


def decide(
    store: ModelStore,
    version: str,
    published: str | None,
    ceiling: float,
    tolerance: float,
    baseline: bool,
) -> dict:
    """Run the gate on a candidate, record the decision in its manifest (``gate``) and return it.

    A candidate that no Spark job evaluated (the update DAG's: its job does not pass ``--evaluate``, the gate
    scores the same rows here) also gets the gate's numbers as its ``metrics.validation``, which the reports and
    the review page read; one that was evaluated keeps the Spark job's, and the two are compared."""
    from streamrec.core import gate

    nums = gate_numbers(store, version, published, baseline)
    decision = gate.decide(
        nums["candidate_rmse"],
        published_rmse=nums["published_rmse"],
        baseline_rmse=nums["baseline_rmse"],
        ceiling=ceiling,
        tolerance=tolerance,
    ).as_dict()
    decision.update(
        version=version,
        published_version=published,
        validation_rows=nums["validation_rows"],
        spark_rmse=nums["spark_rmse"],
    )
    manifest = store.read_manifest(version)
    extra = {"new_partitions": new_partitions(store, manifest)} if manifest.get("kind") == "update" else {}
    found = manifest.get("metrics") or {}
    if not found.get("validation"):
        extra["metrics"] = {**found, "validation": nums["validation"]}
    store.update_manifest(version, gate=decision, **extra)
    log.info("gate %s: %s", version, decision)
    return decision


def publish(store: ModelStore, version: str, expected_current: str | None) -> dict:
    """Publish ``version`` if the pointer still names ``expected_current`` (what the candidate was built from or
    judged against); otherwise refuse, so a concurrent publish is never silently undone. Idempotent: when the
    pointer already names ``version`` (a retry after the pointer was written), nothing is written again.

    The check and the pointer write are one compare-and-swap in ``ModelStore.publish``: of two runs publishing
    from the same base at once, exactly one wins and the other gets ``PointerMovedError`` (a ``StoreError``);
    its partition stays pending (it is not in the published lineage) and the next run applies it."""
    if store.current() == version:
        return store.read_manifest(version)
    store.publish(version, expected_current=expected_current)
    return store.read_manifest(version)


def reject(store: ModelStore, version: str, decision: dict) -> dict:
    """Mark a candidate rejected with the gate's reasons (idempotent)."""
    m = store.read_manifest(version)
    if m.get("status") != REJECTED:
        store.reject(version, "; ".join(decision.get("reasons") or ["rejected by the gate"]), decision)
    return store.read_manifest(version)


def write_reports(bucket: Bucket, store: ModelStore, version: str, published: str | None) -> dict:
    """Gate report of ``version`` (against ``published``, the model it was judged against) and the index."""
    from streamrec.pipeline import reports

    cand = store.read_manifest(version)
    pub = store.read_manifest(published) if published and published != version else None
    decision = cand.get("gate") or {}
    gate_key = reports.gate_report(bucket, cand, pub, decision, store.list_versions())
    index_key = reports.write_index(bucket, store)
    return {"gate_report": bucket.uri(gate_key), "index": bucket.uri(index_key), "status": cand.get("status")}


def rmse_of(manifest: dict) -> float | None:
    return ((manifest.get("metrics") or {}).get("validation") or {}).get("rmse")


def model_event_extra(manifest: dict) -> dict:
    """The ``extra`` of a ``streamrec_model`` Asset event (a publish, a rollback): which model is current now."""
    return {
        "version": manifest["version"],
        "rmse": rmse_of(manifest),
        "partitions": len(manifest.get("partitions") or []),
    }


def summary(bucket: Bucket, store: ModelStore) -> dict:
    """Versions, their RMSE and status, applied / quarantined / rejected partitions: for the demo and bench."""
    versions = store.list_versions()
    current = store.current()
    applied = store.read_manifest(current).get("partitions", []) if current else []
    return {
        "current": current,
        "versions": [
            {
                "version": m["version"],
                "kind": m.get("kind"),
                "status": m.get("status"),
                "rmse": rmse_of(m),
                "partitions": len(m.get("partitions", [])),
                "reason": m.get("reason"),
            }
            for m in versions
        ],
        "applied": applied,
        "quarantined": {pid: _reason_of(bucket, pid) for pid in sorted(quarantined(bucket))},
        "rejected": rejected_partitions(store),
        "published": [m["version"] for m in versions if m.get("status") == PUBLISHED],
        "index": bucket.uri("reports/index.html"),
    }


def _reason_of(bucket: Bucket, pid: str) -> str:
    try:
        return bucket.read_text(f"{QUARANTINE}/{pid}/reason.txt").strip()
    except FileNotFoundError:
        return "?"


# ------------------------------------------------------------------------------------------------------------
# the data contract, per partition
# ------------------------------------------------------------------------------------------------------------
def scale_of(store: ModelStore, version: str | None):
    """The rating scale a version was built with (default: half stars 0.5..5)."""
    from streamrec.core.schema import RatingScale

    text = ((store.read_manifest(version).get("params") or {}).get("scale")) if version else None
    return RatingScale.parse(text) if text else RatingScale()


MAX_PARTITIONS_ENV = "STREAMREC_MAX_PARTITIONS_PER_RUN"


def max_partitions_per_run(value: int | str | None = None) -> int:
    """How many contract-passing partitions one update run applies (the analogue of Spark Structured
    Streaming's ``maxFilesPerTrigger``): ``value`` if given, else ``$STREAMREC_MAX_PARTITIONS_PER_RUN``, else 1.
    Must be a whole number >= 1 (``ValueError`` otherwise)."""
    if value is None or value == "":
        value = os.environ.get(MAX_PARTITIONS_ENV) or 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"max_partitions_per_run must be a whole number >= 1, got {value!r}") from None
    if isinstance(value, float) and value != n or n < 1:
        raise ValueError(f"max_partitions_per_run must be a whole number >= 1, got {value!r}")
    return n


def check_and_select(
    bucket: Bucket,
    store: ModelStore,
    plan: dict,
    now_ts: float,
    build_docs: bool = True,
    max_partitions: int | None = 1,
) -> dict:
    """Check the pending partitions of ``plan`` (from :func:`pending`) in arrival order against the data
    contract; quarantine each one that fails (the raw file stays where it is) and stop once
    ``max_partitions`` have passed (``None``: :func:`max_partitions_per_run` from the environment, else 1):
    the batch this run applies, in arrival order. Partitions after the batch are not checked (the next run
    does). Returns ``{"partitions": [partition dict, ...], "checked": [...], "scale": ...}``.
    """
    from streamrec.pipeline.contract import Partition, check_partition
    from streamrec.pipeline.contract import quarantine as quarantine_partition

    limit = max_partitions_per_run(max_partitions)
    scale = scale_of(store, plan.get("base"))
    checked: list[dict] = []
    batch: list[dict] = []
    for d in plan.get("pending", []):
        if len(batch) >= limit:
            break
        part = Partition.from_dict(d)
        check = check_partition(bucket, part, scale, now_ts, build_docs=build_docs)
        row = {
            "id": part.id,
            "ok": check.ok,
            "reason": check.reason,
            "rows": check.n_rows,
            "report": bucket.uri(check.report_key),
            "docs": bucket.uri(check.docs_key) if check.docs_key else None,
        }
        if not check.ok:
            row["quarantine"] = bucket.uri(quarantine_partition(bucket, part, check))
        else:
            batch.append(d)
        checked.append(row)
    return {"partitions": batch, "checked": checked, "scale": str(scale)}


def batch_suffix(partition_ids: Sequence[str]) -> str:
    """The version-id suffix naming a batch: the partition id for one, ``<first>-n<count>`` for several
    (:func:`version_id` keeps 60 characters; the manifest's ``new_partitions`` names them all)."""
    ids = list(partition_ids)
    if not ids:
        raise ValueError("an update batch needs at least one partition")
    return ids[0] if len(ids) == 1 else f"{ids[0][:48]}-n{len(ids)}"

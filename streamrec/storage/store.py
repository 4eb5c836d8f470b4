"""Versioned model store on a :class:`~streamrec.storage.bucket.Bucket` (a local folder or ``s3://``).

Layout under the bucket root::

    models/versions/<version>/users/part-*.parquet    factor tables, schema.FACTOR_SCHEMA
    models/versions/<version>/items/part-*.parquet
    models/versions/<version>/seen/part-*.parquet     optional: what every user rated (streamrec.core.seen)
    models/versions/<version>/recommendations/part-*.parquet
                                                      optional: top-K of every user (streamrec.spark.recommend)
    models/versions/<version>/manifest.json           written AFTER every table
    models/CURRENT                                    {"version", "published_at", "previous"}: written last

Invariants:

* A version without ``manifest.json`` is incomplete and invisible: ``list_versions`` skips it, ``read_manifest``,
  ``load_*`` and ``publish`` refuse it. Rewriting an unpublished version first deletes its manifest, so a
  half-rewritten version is never visible either.
* The manifest lists the exact Parquet files of each table; readers read those files and nothing else. The
  optional tables (``seen``, ``recommendations``) are written, like the factor tables, before the manifest, so
  they appear with their version atomically and a half-written version shows none of them; a version whose
  manifest does not list one (written before it existed) simply has none (``load_seen`` returns None).
* ``models/CURRENT`` changes in one atomic write (one rename locally, one PUT on S3), after the manifest says
  ``published``, and as a compare-and-swap: two publishers racing from the same base never both win (an
  ``flock`` locally, a conditional ``PUT`` on S3; see ``publish``). Publishing an older published version is a
  rollback.
* A published version is never overwritten; a rejected version is never published.

Manifest fields written by the store (callers cannot change them with ``update_manifest``): ``format``,
``version``, ``created_at``, ``rank``, ``mu``, ``n_ratings``, ``n_users``, ``n_items``, ``tables``. ``status`` is
``candidate`` on write, then ``published`` (``publish``) or ``rejected`` (``reject``, with ``reason``/``gate``).
Fields set by callers and stored as given: ``parent``, ``kind`` (bootstrap|update|retrain), ``params``,
``metrics``, ``partitions`` and ``inputs`` (cumulative lineage), ``gate`` and anything else JSON-serialisable.

``load_arrays`` reads a version into numpy with pyarrow through the bucket (no Spark, no JVM): the serving path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamrec.core import faults, layout
from streamrec.core.arrays import ModelArrays, table_from_side
from streamrec.core.seen import SeenItems
from streamrec.storage.bucket import Bucket, LocalBucket, S3Bucket
from streamrec.storage.s3client import is_not_found
from streamrec.storage.tables import read_side

log = logging.getLogger(__name__)

MODELS, VERSIONS, POINTER = layout.MODELS, layout.VERSIONS, layout.POINTER
MANIFEST = "manifest.json"
SIDES = ("users", "items")
SEEN, RECOMMENDATIONS = "seen", "recommendations"
OPTIONAL_TABLES = (SEEN, RECOMMENDATIONS)
TABLES = SIDES + OPTIONAL_TABLES
MANIFEST_FORMAT = 1

CANDIDATE, PUBLISHED, REJECTED = "candidate", "published", "rejected"
STORE_FIELDS = frozenset(
    {"format", "version", "created_at", "rank", "mu", "n_ratings", "n_users", "n_items", "tables"}
)
"""Manifest fields owned by the store: filled by ``write_*``, refused by ``update_manifest``."""

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

"""``schema.FACTOR_SCHEMA`` as Arrow (the list layout Spark writes: ``list<element: double>``)."""


class StoreError(RuntimeError):
    """An operation the store refuses (overwriting a published version, publishing a rejected one ...)."""


class PointerMovedError(StoreError):
    """A compare-and-swap publish lost: the pointer no longer names the version it expected."""


ANY_CURRENT = object()
"""``ModelStore.publish``'s default ``expected_current``: publish whatever the pointer names now."""


class VersionNotFoundError(StoreError, LookupError):
    """No such version, or it has no manifest (incomplete), or there is no current version."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).isoformat(timespec="seconds")


class ModelStore:
    """Versioned factor models under ``models/`` of a bucket (see the module docstring for the layout).

    ``root`` is a bucket URI (local path, ``file://``, ``s3://bucket[/prefix]``) or a :class:`Bucket`. ``clock``
    (default: now, UTC) stamps ``created_at`` / ``published_at`` and the generated version ids. ``table_files``
    is the number of Parquet files per table a Spark write produces (None: as many as the DataFrame's partitions).
    """

    def __init__(
        self,
        root: str | Bucket,
        *,
        clock: Callable[[], datetime] = _utc_now,
        table_files: int | None = 1,
    ) -> None:
        self.bucket = Bucket.from_uri(root)
        self.clock = clock
        self.table_files = table_files

    def __repr__(self) -> str:
        return f"ModelStore({self.bucket!r})"

    # --- keys -----------------------------------------------------------------------------------------------
    @staticmethod
    def check_version(version: str) -> str:
        """Return ``version`` if it is a valid id (letters, digits, ``._-``; a single key segment)."""
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version) or version in (".", ".."):
            raise ValueError(
                f"invalid model version id {version!r} (letters, digits, '.', '_', '-'; max 128)"
            )
        return version

    def version_key(self, version: str, name: str = "") -> str:
        """Bucket key of a version's folder, or of ``name`` inside it."""
        base = f"{VERSIONS}/{self.check_version(version)}"
        return f"{base}/{name}" if name else base

    def table_uri(self, version: str, side: str) -> str:
        """Spark location of a version's table folder (``users``, ``items``, ``seen``, ``recommendations``)."""
        if side not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, got {side!r}")
        return self.bucket.spark_uri(self.version_key(version, side))

    def new_version_id(self) -> str:
        """A sortable, unique id: ``v<UTC yyyymmddThhmmss>-<6 hex>``, e.g. ``v20261126T183000-3f2a1c``."""
        ts = self.clock()
        ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
        return f"v{ts:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"

    # --- writing --------------------------------------------------------------------------------------------
    def write_arrays(
        self,
        arrays: ModelArrays,
        manifest: dict,
        version: str | None = None,
        seen: SeenItems | None = None,
        tables: dict[str, pa.Table] | None = None,
    ) -> str:
        """Write ``arrays`` with pyarrow through the bucket (no Spark) as a new candidate version.

        ``seen``: the version's seen-items table (what every user rated); ``tables``: other optional tables by
        name (``recommendations``). For tests, small models and buckets Spark cannot reach; same layout and
        guarantees as Spark's ``streamrec.spark.model.write_model``.
        """
        version = self.begin_write(version)
        out: dict[str, pa.Table] = {
            "users": table_from_side(arrays.user_ids, arrays.user_bias, arrays.user_n, arrays.user_factors),
            "items": table_from_side(arrays.item_ids, arrays.item_bias, arrays.item_n, arrays.item_factors),
        }
        if seen is not None:
            out[SEEN] = seen.to_table()
        for name, table in (tables or {}).items():
            if name not in OPTIONAL_TABLES:
                raise ValueError(f"unknown table {name!r}: one of {OPTIONAL_TABLES}")
            out[name] = table
        counts: dict[str, int] = {}
        for name in TABLES:
            self.bucket.delete_prefix(self.version_key(version, name))
            if name not in out:
                continue
            buf = io.BytesIO()
            pq.write_table(out[name], buf, compression="snappy")
            self.bucket.write_bytes(self.version_key(version, f"{name}/part-00000.parquet"), buf.getvalue())
            counts[name] = out[name].num_rows
        files = self.data_files(version, tuple(counts))
        return self.finish_write(
            version, manifest, mu=arrays.mu, n=arrays.n, rank=arrays.rank, files=files, counts=counts
        )

    def begin_write(self, version: str | None) -> str:
        version = self.check_version(version) if version is not None else self.new_version_id()
        key = self.version_key(version, MANIFEST)
        if self.current() == version:
            raise StoreError(f"version {version} is the current version: refusing to overwrite it")
        if self.bucket.exists(key):
            old = self.bucket.read_json(key)
            if old.get("status") == PUBLISHED:
                raise StoreError(f"version {version} was published: refusing to overwrite it")
            # Hide the version while its tables are rewritten: no manifest = incomplete = invisible.
            self.bucket.delete(key)
            log.info("rewriting unpublished version %s (was %s)", version, old.get("status"))
        return version

    def data_files(self, version: str, tables: tuple[str, ...] = SIDES) -> dict[str, list[dict]]:
        """The Parquet data files of each of ``tables`` (Spark's ``_SUCCESS``, ``.crc`` and hidden files
        excluded)."""
        out: dict[str, list[dict]] = {}
        prefix = self.version_key(version)
        for side in tables:
            files = []
            for obj in self.bucket.list(f"{prefix}/{side}"):
                name = obj.key.rsplit("/", 1)[-1]
                if name.endswith(".parquet") and not name.startswith(("_", ".")):
                    files.append({"key": obj.key[len(prefix) + 1 :], "size": obj.size})
            out[side] = files
        return out

    def finish_write(
        self,
        version: str,
        manifest: dict,
        *,
        mu: float,
        n: int,
        rank: int,
        files: dict[str, list[dict]],
        counts: dict[str, int],
    ) -> str:
        doc = dict(manifest or {})
        doc.update(
            format=MANIFEST_FORMAT,
            version=version,
            status=CANDIDATE,
            created_at=_iso(self.clock()),
            rank=int(rank),
            mu=float(mu),
            n_ratings=int(n),
            n_users=int(counts["users"]),
            n_items=int(counts["items"]),
            tables={
                name: {"files": files[name], "rows": int(counts[name])} for name in TABLES if name in files
            },
        )
        self.bucket.write_json(self.version_key(version, MANIFEST), doc)
        log.info(
            "wrote model version %s (%d users, %d items, rank %d)",
            version,
            doc["n_users"],
            doc["n_items"],
            rank,
        )
        return version

    # --- manifests ------------------------------------------------------------------------------------------
    def read_manifest(self, version: str) -> dict:
        """The manifest of a complete version; ``VersionNotFoundError`` when it has none."""
        try:
            return self.bucket.read_json(self.version_key(version, MANIFEST))
        except FileNotFoundError:
            raise VersionNotFoundError(
                f"model version {version!r} has no manifest (unknown or incomplete)"
            ) from None

    def update_manifest(self, version: str, **fields: Any) -> dict:
        """Merge ``fields`` into a version's manifest (one atomic rewrite) and return the new manifest.

        Store-owned fields are refused, and so is ``status="published"`` (use :meth:`publish`) or moving the
        current version away from ``published`` (publish another version first).
        """
        owned = sorted(STORE_FIELDS.intersection(fields))
        if owned:
            raise ValueError(f"manifest fields {owned} are written by the store and cannot be updated")
        doc = self.read_manifest(version)
        if "status" in fields:
            new, old = fields["status"], doc.get("status")
            if new == PUBLISHED and old != PUBLISHED:
                raise StoreError(f"use publish() to publish version {version}")
            if old == PUBLISHED and new != PUBLISHED and self.current() == version:
                raise StoreError(
                    f"version {version} is current: publish another version before changing its status"
                )
        doc.update(fields)
        self.bucket.write_json(self.version_key(version, MANIFEST), doc)
        return doc

    def list_versions(self) -> list[dict]:
        """Manifests of every complete version, sorted by version id (versions without a manifest are skipped)."""
        found = []
        for obj in self.bucket.list(VERSIONS):
            parts = obj.key.split("/")
            if len(parts) == 4 and parts[3] == MANIFEST and _VERSION_RE.fullmatch(parts[2]):
                found.append(parts[2])
        out = []
        for version in sorted(found):
            try:
                out.append(self.read_manifest(version))
            except VersionNotFoundError:  # deleted while listing
                continue
        return out

    # --- publishing -----------------------------------------------------------------------------------------
    def current(self) -> str | None:
        """The published version the pointer names, or None before the first publish."""
        try:
            pointer = self.bucket.read_json(POINTER)
        except FileNotFoundError:
            return None
        return pointer.get("version")

    def publish(self, version: str, expected_current: str | None | object = ANY_CURRENT) -> None:
        """Make ``version`` current: manifest status ``published``, then the pointer, in one write, last.

        Refuses a version without manifest, a rejected one, or one whose table files are missing. Publishing an
        older published version is a rollback.

        The pointer write is a compare-and-swap: with ``expected_current`` (a version id, or None for "no
        pointer yet") it happens only if the pointer still names that version, else ``PointerMovedError``; even
        without it, a pointer changed by someone else between this call's read and its write is never silently
        overwritten (``PointerMovedError`` too). How, per storage:

        * local folder: an exclusive ``flock`` on the ``models/`` folder around read, check and write (released
          by the kernel when the process dies, so a killed publisher never leaves a stale lock; a lock is per open
          file description, so threads exclude each other too). Needs a file system with working ``flock``
          (a local disk; not every network file system).
        * S3: a conditional ``PUT`` of the pointer, ``If-Match: <ETag read>`` (``If-None-Match: *`` when there was
          no pointer); a ``412 Precondition Failed`` means another writer won. Needs an S3 that honours
          conditional writes (AWS S3 since 2024-11, MinIO, moto 5); one that ignores them gives no protection.

        The loser of a race sees the pointer moved before it writes anything (local), or has its manifest set back
        to what it was (S3: the manifest is written before the conditional pointer ``PUT``).
        """
        doc = self.read_manifest(version)
        if doc.get("status") == REJECTED:
            raise StoreError(
                f"version {version} was rejected ({doc.get('reason', 'no reason given')}): not publishing it"
            )
        self._check_files(version, doc)
        with self._pointer_lock():
            pointer, token = self._read_pointer()
            previous = pointer.get("version") if pointer else None
            if expected_current is not ANY_CURRENT and previous != expected_current:
                raise PointerMovedError(
                    f"current version moved from {expected_current} to {previous} while publishing {version}: "
                    "a concurrent publish won; not publishing (run the DAG again)"
                )
            faults.point("before_pointer")  # failpoint: the pointer is read, nothing written yet
            before = {k: doc[k] for k in ("status", "published_at") if k in doc}
            now = _iso(self.clock())
            doc.update(status=PUBLISHED, published_at=now)
            self.bucket.write_json(self.version_key(version, MANIFEST), doc)
            try:
                self._swap_pointer({"version": version, "published_at": now, "previous": previous}, token)
            except PointerMovedError:
                doc.pop("published_at", None)
                doc.update(before)
                self.bucket.write_json(self.version_key(version, MANIFEST), doc)
                raise
        faults.point("after_pointer")  # failpoint: the pointer names the version, the caller is not told yet
        log.info("published model version %s (previous: %s)", version, previous)

    # --- the pointer's compare-and-swap (see publish) -----------------------------------------------------
    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        """Local folder: an exclusive ``flock`` on ``models/`` for the block. S3: nothing (conditional PUT)."""
        if not isinstance(self.bucket, LocalBucket):
            yield
            return
        import fcntl

        folder = self.bucket.root / MODELS
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_pointer(self) -> tuple[dict | None, str | None]:
        """(the pointer document or None, the token a conditional write needs: the S3 ETag, None locally)."""
        if not isinstance(self.bucket, S3Bucket):
            try:
                return self.bucket.read_json(POINTER), None
            except FileNotFoundError:
                return None, None
        try:
            resp = self.bucket.client.get_object(Bucket=self.bucket.bucket, Key=self.bucket._key(POINTER))
        except Exception as exc:
            if is_not_found(exc):
                return None, None
            raise
        with contextlib.closing(resp["Body"]) as body:
            return json.loads(body.read().decode("utf-8")), resp["ETag"]

    def _swap_pointer(self, new: dict, token: str | None) -> None:
        """Write the pointer if it is still what ``_read_pointer`` saw (local: under ``_pointer_lock``)."""
        if not isinstance(self.bucket, S3Bucket):
            self.bucket.write_json(POINTER, new)
            return
        body = (
            json.dumps(new, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
        ).encode()
        cond = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        try:
            self.bucket.client.put_object(
                Bucket=self.bucket.bucket, Key=self.bucket._key(POINTER), Body=body, **cond
            )
        except Exception as exc:
            resp = getattr(exc, "response", None) or {}
            code = str(resp.get("Error", {}).get("Code", ""))
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code not in ("PreconditionFailed", "ConditionalRequestConflict") and status not in (409, 412):
                raise
            now, _ = self._read_pointer()
            if now == new:  # our own PUT landed and the client retried it (the response was lost): we won
                return
            raise PointerMovedError(
                f"current version moved to {(now or {}).get('version')} while publishing {new['version']}: "
                "a concurrent publish won (conditional PUT refused); not publishing (run the DAG again)"
            ) from None

    def reject(self, version: str, reason: str, gate: dict | None = None) -> None:
        """Mark ``version`` rejected (it can never be published) with the reason and the gate's report."""
        doc = self.read_manifest(version)
        if self.current() == version:
            raise StoreError(f"version {version} is current: publish another version before rejecting it")
        doc.update(status=REJECTED, reason=reason, rejected_at=_iso(self.clock()))
        if gate is not None:
            doc["gate"] = gate
        self.bucket.write_json(self.version_key(version, MANIFEST), doc)
        log.info("rejected model version %s: %s", version, reason)

    def _check_files(self, version: str, doc: dict) -> None:
        listed = {o.key: o.size for o in self.bucket.list(self.version_key(version))}
        for side in doc.get("tables", {}):
            for f in doc["tables"][side].get("files", []):
                key = self.version_key(version, f["key"])
                if key not in listed:
                    raise StoreError(f"version {version} is damaged: {key} is missing")
                if "size" in f and listed[key] != f["size"]:
                    raise StoreError(
                        f"version {version} is damaged: {key} has {listed[key]} bytes, manifest says {f['size']}"
                    )

    # --- reading --------------------------------------------------------------------------------------------
    def _resolve(self, version: str | None) -> str:
        if version is not None:
            return version
        current = self.current()
        if current is None:
            raise VersionNotFoundError(f"no published model version in {self.bucket!r}")
        return current

    def _files(self, version: str, doc: dict, side: str) -> list[str]:
        tables = doc.get("tables")
        if tables is None:  # a manifest without file list: every data file of the folder
            return [self.version_key(version, f["key"]) for f in self.data_files(version)[side]]
        return [self.version_key(version, f["key"]) for f in tables[side]["files"]]

    def version_tables(self, version: str | None = None) -> tuple[str, dict, dict[str, list[str]]]:
        """``(version, manifest, {side: [keys of its Parquet files]})`` of a stored version (None = current)."""
        version = self._resolve(version)
        doc = self.read_manifest(version)
        return version, doc, {side: self._files(version, doc, side) for side in SIDES}

    def table_keys(self, version: str, name: str, doc: dict | None = None) -> list[str] | None:
        """Keys of the Parquet files of an optional table (``seen``, ``recommendations``) of a complete version;
        None when its manifest lists no such table (a version written before the table existed)."""
        doc = doc if doc is not None else self.read_manifest(version)
        entry = (doc.get("tables") or {}).get(name)
        if entry is None:
            return None
        return [self.version_key(version, f["key"]) for f in entry["files"]]

    def load_seen(self, version: str | None = None) -> SeenItems | None:
        """The seen-items table of a version (None = current) in memory, or None when the version has none."""
        version = self._resolve(version)
        keys = self.table_keys(version, SEEN)
        if keys is None:
            return None
        parts = [pq.read_table(pa.BufferReader(self.bucket.read_bytes(k))) for k in keys]
        if not parts:
            return SeenItems.empty()
        return SeenItems.from_table(pa.concat_tables(parts, promote_options="permissive"))

    def load_arrays(self, version: str | None = None) -> ModelArrays:
        """A stored version as numpy arrays, read with pyarrow through the bucket (no Spark; None = current)."""
        version, doc, keys = self.version_tables(version)
        rank = int(doc["rank"])
        sides = {side: read_side(self.bucket, keys[side], rank, side) for side in SIDES}
        return ModelArrays.from_sides(
            float(doc["mu"]), rank, sides["users"], sides["items"], doc, int(doc.get("n_ratings", 0))
        )

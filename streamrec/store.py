"""Versioned model store on a :class:`~streamrec.bucket.Bucket` (a local folder or ``s3://``).

Layout under the bucket root::

    models/versions/<version>/users/part-*.parquet    factor tables, schema.FACTOR_SCHEMA
    models/versions/<version>/items/part-*.parquet
    models/versions/<version>/manifest.json           written AFTER both tables
    models/CURRENT                                    {"version", "published_at", "previous"}: written last

Invariants:

* A version without ``manifest.json`` is incomplete and invisible: ``list_versions`` skips it, ``read_manifest``,
  ``load_*`` and ``publish`` refuse it. Rewriting an unpublished version first deletes its manifest, so a
  half-rewritten version is never visible either.
* The manifest lists the exact Parquet files of each table; readers read those files and nothing else.
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec import faults
from streamrec.bucket import Bucket, LocalBucket, S3Bucket, _is_not_found

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from streamrec.model import FactorModel

log = logging.getLogger(__name__)

MODELS = "models"
VERSIONS = f"{MODELS}/versions"
POINTER = f"{MODELS}/CURRENT"
MANIFEST = "manifest.json"
SIDES = ("users", "items")
MANIFEST_FORMAT = 1

CANDIDATE, PUBLISHED, REJECTED = "candidate", "published", "rejected"
STORE_FIELDS = frozenset(
    {"format", "version", "created_at", "rank", "mu", "n_ratings", "n_users", "n_items", "tables"}
)
"""Manifest fields owned by the store: filled by ``write_*``, refused by ``update_manifest``."""

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

ARROW_FACTOR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bias", pa.float64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("factors", pa.list_(pa.field("element", pa.float64(), nullable=False)), nullable=False),
    ]
)
"""``schema.FACTOR_SCHEMA`` as Arrow (the list layout Spark writes: ``list<element: double>``)."""


class StoreError(RuntimeError):
    """An operation the store refuses (overwriting a published version, publishing a rejected one ...)."""


class PointerMovedError(StoreError):
    """A compare-and-swap publish lost: the pointer no longer names the version it expected."""


ANY_CURRENT = object()
"""``ModelStore.publish``'s default ``expected_current``: publish whatever the pointer names now."""


class VersionNotFoundError(StoreError, LookupError):
    """No such version, or it has no manifest (incomplete), or there is no current version."""


# --------------------------------------------------------------------------------------------------------------
# numpy side
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ModelArrays:
    """A model version as numpy arrays, rows sorted by id (sorted on construction if needed).

    ``user_factors`` is ``(n_users, rank)`` float64 C-contiguous, likewise ``item_factors``. ``user_n`` /
    ``item_n`` are the per-entity rating counts (zeros when not given) and ``n`` the total ratings absorbed.
    Look ids up with :meth:`user_rows` / :meth:`item_rows` (binary search over the sorted ids, -1 when unknown).
    """

    mu: float
    rank: int
    user_ids: np.ndarray
    user_bias: np.ndarray
    user_factors: np.ndarray
    item_ids: np.ndarray
    item_bias: np.ndarray
    item_factors: np.ndarray
    manifest: dict = field(default_factory=dict)
    n: int = 0
    user_n: np.ndarray | None = None
    item_n: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.mu = float(self.mu)
        self.rank = int(self.rank)
        self.n = int(self.n)
        self.user_ids, self.user_bias, self.user_factors, self.user_n = _normalise_side(
            "user", self.rank, self.user_ids, self.user_bias, self.user_factors, self.user_n
        )
        self.item_ids, self.item_bias, self.item_factors, self.item_n = _normalise_side(
            "item", self.rank, self.item_ids, self.item_bias, self.item_factors, self.item_n
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def version(self) -> str | None:
        """The version id from the manifest (None for arrays not read from a store)."""
        return self.manifest.get("version")

    def user_rows(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Row index of each user id (int64 array, -1 for unknown ids)."""
        return _rows(self.user_ids, ids)

    def item_rows(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Row index of each item id (int64 array, -1 for unknown ids)."""
        return _rows(self.item_ids, ids)

    def user_row(self, user: int) -> int:
        """Row index of one user id, -1 when unknown."""
        return _row(self.user_ids, user)

    def item_row(self, item: int) -> int:
        """Row index of one item id, -1 when unknown."""
        return _row(self.item_ids, item)

    @classmethod
    def from_model(cls, model: FactorModel, manifest: dict | None = None) -> ModelArrays:
        """Collect a (small) Spark ``FactorModel`` to the driver as arrays."""
        users = _side_from_table(
            model.users.select("id", "bias", "n", "factors").toArrow(), model.rank, "users"
        )
        items = _side_from_table(
            model.items.select("id", "bias", "n", "factors").toArrow(), model.rank, "items"
        )
        return cls.from_sides(model.mu, model.rank, users, items, dict(manifest or {}), model.n)

    @classmethod
    def from_sides(
        cls,
        mu: float,
        rank: int,
        users: tuple[np.ndarray, ...],
        items: tuple[np.ndarray, ...],
        manifest: dict,
        n: int,
    ) -> ModelArrays:
        """From ``(ids, bias, n, factors)`` tuples of each side, as ``_side_from_table`` returns them."""
        return cls(
            mu=mu,
            rank=rank,
            user_ids=users[0],
            user_bias=users[1],
            user_factors=users[3],
            item_ids=items[0],
            item_bias=items[1],
            item_factors=items[3],
            manifest=manifest,
            n=n,
            user_n=users[2],
            item_n=items[2],
        )


def _normalise_side(
    side: str,
    rank: int,
    ids: Any,
    bias: Any,
    factors: Any,
    counts: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    factors = np.asarray(factors, dtype=np.float64)
    if factors.size == 0:
        factors = factors.reshape(len(ids), rank)
    counts = (
        np.zeros(len(ids), dtype=np.int64)
        if counts is None
        else np.asarray(counts, dtype=np.int64).reshape(-1)
    )
    if (
        factors.ndim != 2
        or factors.shape != (len(ids), rank)
        or len(bias) != len(ids)
        or len(counts) != len(ids)
    ):
        raise ValueError(
            f"{side} arrays disagree: {len(ids)} ids, {len(bias)} biases, {len(counts)} counts, "
            f"factors {factors.shape} (rank {rank})"
        )
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        ids, bias, factors, counts = ids[order], bias[order], factors[order], counts[order]
        dup = ids[1:] == ids[:-1]
        if dup.any():
            raise ValueError(
                f"duplicate {side} id {int(ids[1:][dup][0])}: factor tables hold one row per entity"
            )
    return ids, np.ascontiguousarray(bias), np.ascontiguousarray(factors), np.ascontiguousarray(counts)


def _rows(sorted_ids: np.ndarray, ids: Iterable[int] | np.ndarray) -> np.ndarray:
    query = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).reshape(-1)
    if len(sorted_ids) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, query)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos_c] == query, pos_c, -1).astype(np.int64)


def _row(sorted_ids: np.ndarray, key: int) -> int:
    pos = int(np.searchsorted(sorted_ids, key))
    return pos if pos < len(sorted_ids) and sorted_ids[pos] == key else -1


def _side_from_table(
    table: pa.Table, rank: int, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, bias, n, factors n×rank) from an Arrow factor table; every factor vector must have length ``rank``."""
    ids = _column(table, "id", np.int64)
    bias = _column(table, "bias", np.float64)
    counts = _column(table, "n", np.int64)
    lists = table.column("factors").combine_chunks()
    if isinstance(lists, pa.ChunkedArray):  # pyarrow < 17 returns a ChunkedArray for zero chunks
        lists = pa.concat_arrays(lists.chunks) if lists.num_chunks else pa.array([], lists.type)
    if lists.null_count:
        raise ValueError(f"{side}: null factor vectors")
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False) if len(lists) else np.empty(0, np.int64)
    if len(lengths) and not bool(np.all(lengths == rank)):
        bad = int(np.flatnonzero(lengths != rank)[0])
        raise ValueError(
            f"{side}: factor vector of id {int(ids[bad])} has length {int(lengths[bad])}, rank is {rank}"
        )
    values = lists.flatten()  # respects offsets/slices
    if values.null_count:
        raise ValueError(f"{side}: null factor values")
    flat = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return ids, bias, counts, flat.reshape(len(ids), rank)


def _column(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"null values in column {name!r}")
    return np.asarray(col.to_numpy(), dtype=dtype)


def _table_from_side(ids: np.ndarray, bias: np.ndarray, counts: np.ndarray, factors: np.ndarray) -> pa.Table:
    n, rank = factors.shape
    offsets = np.arange(n + 1, dtype=np.int64) * rank
    values = pa.array(np.ascontiguousarray(factors).reshape(-1), type=pa.float64())
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), type=pa.int32()), values)
    lists = lists.cast(ARROW_FACTOR_SCHEMA.field("factors").type)
    return pa.Table.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(bias, pa.float64()), pa.array(counts, pa.int64()), lists],
        schema=ARROW_FACTOR_SCHEMA,
    )


# --------------------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------------------
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
        """Spark location of a version's ``users`` or ``items`` table folder."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.bucket.spark_uri(self.version_key(version, side))

    def new_version_id(self) -> str:
        """A sortable, unique id: ``v<UTC yyyymmddThhmmss>-<6 hex>``, e.g. ``v20261126T183000-3f2a1c``."""
        ts = self.clock()
        ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
        return f"v{ts:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"

    # --- writing --------------------------------------------------------------------------------------------
    def write_version(self, model: FactorModel, manifest: dict, version: str | None = None) -> str:
        """Write ``model`` with Spark as a new candidate version and return its id.

        The tables are written in overwrite mode (a retried task rewrites cleanly), then ``manifest.json`` with
        status ``candidate`` and the store fields filled in. Refuses (``StoreError``) to overwrite a published
        version.
        """
        from pyspark.sql import functions as F

        from streamrec.schema import FACTOR_SCHEMA

        version = self._begin_write(version)
        counts: dict[str, int] = {}
        for side, df in (("users", model.users), ("items", model.items)):
            out = df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in FACTOR_SCHEMA.fields])
            if self.table_files:
                out = out.repartition(self.table_files)
            uri = self.table_uri(version, side)
            out.write.mode("overwrite").parquet(uri)
        files = self._table_files(version)
        spark = model.users.sparkSession
        for side in SIDES:
            uris = [self.bucket.spark_uri(self.version_key(version, f["key"])) for f in files[side]]
            counts[side] = spark.read.parquet(*uris).count() if uris else 0
        return self._finish_write(
            version, manifest, mu=model.mu, n=model.n, rank=model.rank, files=files, counts=counts
        )

    def write_arrays(self, arrays: ModelArrays, manifest: dict, version: str | None = None) -> str:
        """Write ``arrays`` with pyarrow through the bucket (no Spark) as a new candidate version.

        For tests, small models and buckets Spark cannot reach; same layout and guarantees as ``write_version``.
        """
        version = self._begin_write(version)
        sides = {
            "users": (arrays.user_ids, arrays.user_bias, arrays.user_n, arrays.user_factors),
            "items": (arrays.item_ids, arrays.item_bias, arrays.item_n, arrays.item_factors),
        }
        counts: dict[str, int] = {}
        for side, (ids, bias, n, factors) in sides.items():
            self.bucket.delete_prefix(self.version_key(version, side))
            table = _table_from_side(ids, bias, n, factors)
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="snappy")
            self.bucket.write_bytes(self.version_key(version, f"{side}/part-00000.parquet"), buf.getvalue())
            counts[side] = table.num_rows
        files = self._table_files(version)
        return self._finish_write(
            version, manifest, mu=arrays.mu, n=arrays.n, rank=arrays.rank, files=files, counts=counts
        )

    def _begin_write(self, version: str | None) -> str:
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

    def _table_files(self, version: str) -> dict[str, list[dict]]:
        """The Parquet data files of each table (Spark's ``_SUCCESS``, ``.crc`` and hidden files excluded)."""
        out: dict[str, list[dict]] = {}
        prefix = self.version_key(version)
        for side in SIDES:
            files = []
            for obj in self.bucket.list(f"{prefix}/{side}"):
                name = obj.key.rsplit("/", 1)[-1]
                if name.endswith(".parquet") and not name.startswith(("_", ".")):
                    files.append({"key": obj.key[len(prefix) + 1 :], "size": obj.size})
            out[side] = files
        return out

    def _finish_write(
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
            tables={side: {"files": files[side], "rows": int(counts[side])} for side in SIDES},
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
            if _is_not_found(exc):
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
        for side in SIDES:
            for f in doc.get("tables", {}).get(side, {}).get("files", []):
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
            return [self.version_key(version, f["key"]) for f in self._table_files(version)[side]]
        return [self.version_key(version, f["key"]) for f in tables[side]["files"]]

    def load_model(self, spark: SparkSession, version: str | None = None) -> FactorModel:
        """A stored version as a Spark ``FactorModel`` (None = the current version)."""
        from streamrec.model import FactorModel
        from streamrec.schema import FACTOR_SCHEMA

        version = self._resolve(version)
        doc = self.read_manifest(version)
        tables: dict[str, DataFrame] = {}
        for side in SIDES:
            uris = [self.bucket.spark_uri(k) for k in self._files(version, doc, side)]
            if uris:
                tables[side] = spark.read.schema(FACTOR_SCHEMA).parquet(*uris)
            else:
                tables[side] = spark.createDataFrame([], FACTOR_SCHEMA)
        return FactorModel(
            mu=float(doc["mu"]),
            n=int(doc["n_ratings"]),
            rank=int(doc["rank"]),
            users=tables["users"],
            items=tables["items"],
        )

    def load_arrays(self, version: str | None = None) -> ModelArrays:
        """A stored version as numpy arrays, read with pyarrow through the bucket (no Spark; None = current)."""
        version = self._resolve(version)
        doc = self.read_manifest(version)
        rank = int(doc["rank"])
        sides = {side: self._read_side(self._files(version, doc, side), rank, side) for side in SIDES}
        return ModelArrays.from_sides(
            float(doc["mu"]), rank, sides["users"], sides["items"], doc, int(doc.get("n_ratings", 0))
        )

    def _read_side(self, keys: list[str], rank: int, side: str) -> tuple[np.ndarray, ...]:
        columns = ["id", "bias", "n", "factors"]

        def read(key: str) -> pa.Table:
            return pq.read_table(pa.BufferReader(self.bucket.read_bytes(key)), columns=columns)

        if len(keys) > 1:
            with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
                parts = list(pool.map(read, keys))
        else:
            parts = [read(k) for k in keys]
        if not parts:
            return _side_from_table(ARROW_FACTOR_SCHEMA.empty_table(), rank, side)
        table = pa.concat_tables([p.select(columns) for p in parts], promote_options="permissive")
        return _side_from_table(table, rank, side)

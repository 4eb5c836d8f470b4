"""Finding dropped partitions under ``ratings/incoming/``: their ids, their files and the size limit of the check.

A *partition* is one direct child of the incoming prefix: a file (``p-00001.csv``), or a folder of files that
arrive together (``2026-11-26/part-*.csv``). Hidden names (:func:`streamrec.core.ratings_format.is_hidden`:
a leading ``.`` or ``_``, e.g. ``_SUCCESS``, ``.DS_Store``) are not partitions and not files of one. Keys
the bucket cannot address safely are refused (:data:`REFUSED_KEY`), never read.

**Unfinished uploads.** Many tools write under a temporary name and rename the file when it is complete. A name
matching one of the upload patterns is such a file: it is neither applied nor quarantined but *waiting*
(:func:`list_incoming` reports it in ``waiting``; ``pipeline.pending`` lists it as "waiting for its upload to
finish"), and so is a folder partition holding one; once renamed it is picked up like any drop. The patterns
are shell globs matched against each name (case-insensitive); the default
(:data:`DEFAULT_UPLOAD_TEMP_PATTERNS`)::

    *.tmp  *.part  *.partial  *.crdownload  *.filepart  *._COPYING_  .*.??????

(generic temporary files, curl/wget/Firefox/Chrome partial downloads, WinSCP, ``hdfs dfs -put``, and rsync's
hidden ``.name.XXXXXX``). ``STREAMREC_UPLOAD_TEMP_PATTERNS`` replaces the list: comma-separated globs (an empty
value: no name is an upload in progress). Other hidden names stay invisible, as before.

Partition ids are the file stem or folder name when that is already safe (``[A-Za-z0-9][A-Za-z0-9._-]*``);
any other name (spaces, unicode, ``..``, control characters, a leading ``-``) gets an ASCII-folded, escaped
form plus 8 hex digits of the name's SHA-256, e.g. ``"été 2026.csv"`` -> ``ete-2026-5c1f0b9e``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import posixpath
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from streamrec.core import layout
from streamrec.core.ratings_format import is_hidden, one_line
from streamrec.storage.bucket import Bucket, check_key

log = logging.getLogger(__name__)

INCOMING, QUARANTINE = layout.INCOMING, layout.QUARANTINE
DATADOCS, PARTITION_REPORTS = layout.DATADOCS, layout.PARTITION_REPORTS

PARTITION_SIZE = "partition_size"
"""The partition is no larger than :func:`max_partition_bytes` (the check holds a partition in memory)."""
MAX_PARTITION_BYTES = 64 << 20
"""Default of ``STREAMREC_MAX_PARTITION_BYTES``: 64 MiB of files, about 2.4 million MovieLens-style rows.

The check parses a partition in memory: its peak RSS is about 13 times the file size (bytes, decoded text,
line and field arrays, the frame, GX's metrics), measured on a 53 MB file: +710 MB. 64 MiB thus costs about
0.9 GB; a partition over the limit is quarantined *before a byte of it is read* (rule ``partition_size``), so a
huge drop can never take the worker down. The Spark update job itself has no such limit: a larger partition
is fine once the limit is raised (``STREAMREC_MAX_PARTITION_BYTES`` in the workers' environment) on a worker
with the memory for it, or split into several partitions (the usual answer: partitions are micro-batches)."""

REFUSED_WHY = (
    "not a key this bucket can address safely (an empty, '.' or '..' segment, a backslash or a NUL could reach "
    "outside the bucket); never read, never moved: rename it to apply it"
)
REFUSED_KEY = f"refused: {REFUSED_WHY}"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

UPLOAD_TEMP_PATTERNS_ENV = "STREAMREC_UPLOAD_TEMP_PATTERNS"
DEFAULT_UPLOAD_TEMP_PATTERNS = (
    "*.tmp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.filepart",
    "*._COPYING_",
    ".*.??????",
)
"""Names of files still being uploaded (see the module docstring); ``$STREAMREC_UPLOAD_TEMP_PATTERNS`` replaces it."""
WAITING_WHY = "waiting for its upload to finish"


def upload_temp_patterns() -> tuple[str, ...]:
    """The globs of names of unfinished uploads: ``$STREAMREC_UPLOAD_TEMP_PATTERNS`` (comma-separated; empty:
    none) or :data:`DEFAULT_UPLOAD_TEMP_PATTERNS`."""
    text = os.environ.get(UPLOAD_TEMP_PATTERNS_ENV)
    if text is None:
        return DEFAULT_UPLOAD_TEMP_PATTERNS
    return tuple(p.strip() for p in text.split(",") if p.strip())


def is_upload_temp(name: str, patterns: tuple[str, ...] | None = None) -> bool:
    """True when ``name`` (one file or folder name) is an unfinished upload's temporary name."""
    pats = upload_temp_patterns() if patterns is None else patterns
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in pats)


@dataclass(frozen=True)
class Partition:
    """One dropped partition: ``id`` (safe, see the module docstring), ``key`` (the file or folder key),
    ``files`` (its data file keys, sorted), ``size`` (bytes of those files), ``mtime`` (epoch seconds of the
    newest file: when the partition was complete)."""

    id: str
    key: str
    files: tuple[str, ...]
    size: int
    mtime: float

    @property
    def is_folder(self) -> bool:
        """True for a folder partition (its files are below ``key/``)."""
        return self.files != (self.key,)

    def as_dict(self) -> dict:
        """A JSON-able form (for XCom)."""
        return {**asdict(self), "files": list(self.files)}

    @classmethod
    def from_dict(cls, d: dict) -> Partition:
        """Inverse of :meth:`as_dict`."""
        return cls(d["id"], d["key"], tuple(d["files"]), int(d["size"]), float(d["mtime"]))


def _digest8(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def partition_id(name: str, is_file: bool = True) -> str:
    """The safe id of a partition named ``name`` (a file name: its stem; a folder name: itself).

    Safe names are kept; any other gets an ASCII-folded form with runs of other characters replaced by ``-``,
    plus ``-`` and 8 hex digits of the SHA-256 of the full name (so different names never share an id)."""
    stem = name
    if is_file:
        head, dot, ext = name.rpartition(".")
        if dot and head.strip(".") and ext:
            stem = head
    if _SAFE_ID.fullmatch(stem) and ".." not in stem:
        return stem
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", folded)
    safe = re.sub(r"\.{2,}", ".", safe).strip("-._")[:80] or "partition"
    return f"{safe}-{_digest8(name)}"


def max_partition_bytes() -> int:
    """The largest partition (bytes of its files) the check reads: ``$STREAMREC_MAX_PARTITION_BYTES`` or
    :data:`MAX_PARTITION_BYTES`. A value that is not a positive integer is a configuration error (raised)."""
    text = os.environ.get("STREAMREC_MAX_PARTITION_BYTES", "").strip()
    if not text:
        return MAX_PARTITION_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"STREAMREC_MAX_PARTITION_BYTES must be a positive integer (bytes), not {text!r}")
    return int(text)


def valid_key(key: str) -> bool:
    """True when the bucket can address ``key`` safely (see :func:`streamrec.storage.bucket.check_key`)."""
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def partition_files(bucket: Bucket, partition_key: str) -> list[str]:
    """The data files of a partition: ``[partition_key]`` for a file, else the keys of the folder's files
    (directly in it, sorted; hidden names skipped). Sub-folders are not listed (the check fails a folder that
    has one)."""
    key = partition_key.rstrip("/")
    if bucket.exists(key):
        return [key]
    return [
        o.key
        for o in bucket.list(key, recursive=False)
        if not o.is_folder and not is_hidden(posixpath.basename(o.key))
    ]


def list_incoming(
    bucket: Bucket,
    prefix: str = INCOMING,
    refused: list[str] | None = None,
    waiting: list[str] | None = None,
) -> list[Partition]:
    """The partitions under ``prefix``, in arrival order (newest file's mtime, then key).

    Each direct child of ``prefix`` is one partition: a file, or a folder (its files arrive together).
    Hidden names are skipped, so is a folder holding only hidden objects (an upload in progress). Keys the
    bucket cannot address (e.g. S3 keys with ``..`` segments) are not partitions: each is appended to
    ``refused`` (when given; :func:`refused_incoming`), logged, and listed by the index page. Unfinished
    uploads (:func:`is_upload_temp`) are not partitions yet: each such object key is appended to ``waiting``
    (when given; :func:`waiting_incoming`), and a folder holding one is left out as a whole until it is renamed.
    Ids are unique within one listing: when two names map to the same id (``p.csv`` and ``p.parquet``), the
    later arrival gets ``-<8 hex of its name's SHA-256>`` appended.
    """
    base = check_key(prefix, prefix=True)
    patterns = upload_temp_patterns()
    groups: dict[str, list[Any]] = {}
    unfinished: dict[str, list[str]] = {}
    for obj in bucket.list(base):
        rel = obj.key[len(base) + 1 :] if base else obj.key
        top, _, rest = rel.partition("/")
        if not valid_key(obj.key):  # before the hidden-name rule: ``..`` starts with a dot too
            log.warning("refusing %r: not a key this bucket can address", obj.key)
            if refused is not None:
                refused.append(obj.key)
            continue
        group = top + ("/" if rest else "")
        if any(is_upload_temp(seg, patterns) for seg in rel.split("/")) and not (
            is_hidden(top) and not is_upload_temp(top, patterns)
        ):
            unfinished.setdefault(group, []).append(obj.key)
            continue
        if is_hidden(top):
            continue
        if rest and any(is_hidden(seg) for seg in rest.split("/")):
            continue
        groups.setdefault(group, []).append(obj)
    for group, keys in sorted(unfinished.items()):
        groups.pop(group, None)
        log.info("waiting for the upload of %s to finish", ", ".join(keys))
        if waiting is not None:
            waiting.extend(sorted(keys))
    found = []
    for top, objs in groups.items():
        is_folder = top.endswith("/")
        name = top.rstrip("/")
        key = f"{base}/{name}" if base else name
        if is_folder:
            files = tuple(sorted(o.key for o in objs if "/" not in o.key[len(key) + 1 :]))
            direct = set(files)
            sized = [o for o in objs if o.key in direct] or objs
        else:
            files, sized = (key,), objs
        mtime = max(o.mtime or 0.0 for o in objs)
        found.append((mtime, key, name, not is_folder, files, sum(o.size for o in sized)))
    found.sort(key=lambda t: (t[0], t[1]))
    out: list[Partition] = []
    seen: set[str] = set()
    for mtime, key, name, is_file, files, size in found:
        pid = partition_id(name, is_file)
        if pid in seen:
            pid = f"{pid}-{_digest8(name)}"
        seen.add(pid)
        out.append(Partition(pid, key, files, size, mtime))
    return out


def refused_incoming(bucket: Bucket, prefix: str = INCOMING) -> list[str]:
    """The object keys under ``prefix`` that :func:`list_incoming` refuses (see :data:`REFUSED_KEY`)."""
    refused: list[str] = []
    list_incoming(bucket, prefix, refused)
    return refused


def waiting_incoming(bucket: Bucket, prefix: str = INCOMING) -> list[str]:
    """The object keys under ``prefix`` of unfinished uploads (see :func:`is_upload_temp`), sorted by partition."""
    waiting: list[str] = []
    list_incoming(bucket, prefix, waiting=waiting)
    return waiting


def as_partition(bucket: Bucket, partition: Partition | str) -> Partition:
    """``partition`` itself, or the :class:`Partition` at a partition key (listed now)."""
    if isinstance(partition, Partition):
        return partition
    key = check_key(partition.rstrip("/"))
    name = posixpath.basename(key)
    is_file = bucket.exists(key)
    files = tuple(partition_files(bucket, key))
    infos = {o.key: o for o in bucket.list(posixpath.dirname(key) if is_file else key)}
    size = sum(infos[f].size for f in files if f in infos)
    mtime = max((infos[f].mtime or 0.0 for f in files if f in infos), default=0.0)
    return Partition(partition_id(name, is_file), key, files, size, mtime)


def display_name(partition: Partition, key: str) -> str:
    """How a file is named in reasons: relative to the folder holding the partition (escaped, one line)."""
    parent = posixpath.dirname(partition.key)
    rel = key[len(parent) + 1 :] if parent and key.startswith(parent + "/") else key
    return one_line(rel)

"""The data contract of a dropped ratings partition: find partitions, check them, quarantine the bad ones.

A *partition* is what a user drops under ``ratings/incoming/``: one file (``p-00001.csv``) or one folder of files
that arrive together (``2026-11-26/part-*.csv``). :func:`list_incoming` finds them in arrival order,
:func:`check_partition` validates one against the contract and writes its report, :func:`quarantine` copies a
failed one aside. Every byte goes through a :class:`~streamrec.storage.bucket.Bucket`, so a local folder and ``s3://``
behave the same; the only local disk used is a temporary folder for Great Expectations' Data Docs build,
which is then uploaded through the bucket.

The check has two stages, so that one run reports *every* problem instead of the first one:

1. **File level** (the rules of :mod:`streamrec.spark.ratings` that make a file unreadable as ratings), checked here on
   the raw bytes: the partition is at most ``STREAMREC_MAX_PARTITION_BYTES`` (default 64 MiB; rule
   ``partition_size``, checked from the listing before anything is read: the check holds the partition in
   memory); the file is text (no NUL byte, valid UTF-8; gzip/zip/... are named as such) or Parquet; the header is a known one
   (``user,item,rating[,timestamp]``, MovieLens ``userId,movieId,rating,timestamp``; or tab-separated u.data
   with no header; Parquet columns ``user, item, rating[, timestamp|ts]``); no blank line before the last data
   line; no repeated header; every line has the format's field count. A failure here fails the check with a
   one-line reason naming the file, the line and the loader's rule (e.g. ``p.csv line 1: rule known_header:
   ...``) and the suite is not run. Nothing raises, except I/O errors of the bucket itself (a vanished object,
   S3 down): those are infrastructure trouble, not bad data, and must not quarantine a partition.
2. **Values**, with the Great Expectations suite ``expectations/ratings_partition.json``: the fields are
   parsed leniently (a literal that is not an integer / a finite decimal becomes null) into a pandas frame
   ``user Int64, item Int64, rating float64, ts Int64`` whose index is the row number; a side table maps each
   row back to its file and physical line, so every reason says where the first offender is, e.g.
   ``rating: 12 rows outside [0.5, 5] (first: p-00001.csv line 17: '3,5,7.0,964982703')``. A timestamp that
   is present but not an integer literal cannot be represented in the frame (a null ``ts`` is allowed), so the
   parser reports it itself (rule ``timestamp_integer``).

The contract is at least as strict as the loader: a partition that passes is read by
``streamrec.spark.ratings.read_ratings`` / ``read_ratings_pandas`` without error, into the same values. It is stricter
where the loader is lenient: timestamps must lie in [1995-01-01, now + 1 day] (the loader only wants >= 0),
ratings must equal a grid value exactly (after rounding the grid to 9 decimals; the loader allows 1e-9), and
(user, item, ts) must be unique.

Layout written (keys relative to the bucket root)::

    reports/partitions/<id>/report.json     the PartitionCheck + a summary of the GX result (always)
    reports/datadocs/<id>/index.html ...    GX Data Docs of the run (``build_docs=True``; ~1.1 s more per partition)
    quarantine/<id>/files/<name>            byte-identical copies of the raw files (``quarantine``)
    quarantine/<id>/reason.txt              the one-line reason
    quarantine/<id>/report.json             the report, plus the list of copied files

Partition ids are the file stem or folder name when that is already safe (``[A-Za-z0-9][A-Za-z0-9._-]*``);
any other name (spaces, unicode, ``..``, control characters, a leading ``-``) gets an ASCII-folded, escaped
form plus 8 hex digits of the name's SHA-256, e.g. ``"été 2026.csv"`` -> ``ete-2026-5c1f0b9e``. Names starting
with ``.`` or ``_`` are hidden (uploads in progress, ``_SUCCESS``, ``.DS_Store``) and are not partitions, as in
the loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamrec.core import layout
from streamrec.core.ratings_format import (
    BLANK_LINE,
    CSV_HEADER,
    CSV_HEADER_TS,
    FIELD_COUNT,
    HEADER_LAYOUTS,
    KNOWN_HEADER,
    MAX_ID,
    MOVIELENS_HEADER,
    PARQUET_TS_COLUMNS,
    REPEATED_HEADER,
    TIMESTAMP_INTEGER,
    TS_REQUIRED,
    RatingsFormatError,
)
from streamrec.core.ratings_format import (
    UDATA as UDATA_LAYOUT,
)
from streamrec.core.schema import ITEM, RATING, TS, USER, RatingScale
from streamrec.storage.bucket import Bucket, check_key

log = logging.getLogger(__name__)

__all__ = [
    "DATADOCS",
    "INCOMING",
    "PARTITION_REPORTS",
    "QUARANTINE",
    "SUITE_NAME",
    "TS_MIN",
    "ParsedPartition",
    "Partition",
    "PartitionCheck",
    "check_partition",
    "list_incoming",
    "max_partition_bytes",
    "load_suite",
    "parse_partition",
    "partition_files",
    "partition_id",
    "quarantine",
    "rating_grid",
    "suite_parameters",
]

INCOMING, QUARANTINE = layout.INCOMING, layout.QUARANTINE
DATADOCS, PARTITION_REPORTS = layout.DATADOCS, layout.PARTITION_REPORTS
SUITE_NAME = "ratings_partition"
SUITE_PATH = Path(__file__).resolve().parents[2] / "expectations" / f"{SUITE_NAME}.json"
"""The suite file in a source checkout; ``STREAMREC_EXPECTATIONS_DIR`` points elsewhere (e.g. in an image)."""

TS_MIN = 788918400
"""1995-01-01T00:00:00Z: no rating in any MovieLens release is older (the suite holds this constant too)."""
DAY = 86400
FILES_ONLY = "files_only"
"""A rule of the loader's folder handling (``a ratings folder holds files only``), named here for reports."""
NO_FILES = "no_files"
"""A folder partition with no data file (only sub-folders)."""
FILE_TYPE = "text_or_parquet"
"""The file is UTF-8 text without NUL bytes, or Parquet (binary garbage and compressed files fail this)."""
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
_COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
)
"""Magic bytes of the compressed formats a user is likely to drop (reported as such, not as "binary data")."""

_INT = r"[+-]?[0-9]+"
_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# Same literals as streamrec.spark.ratings (the loader is authoritative; tests/test_contract.py checks they agree).
_BOM = "\ufeff"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HIDDEN = (".", "_")


def _anchored(pattern: str) -> str:
    return rf"^(?:{pattern})\z"


# ----------------------------------------------------------------------------------------------------------------
# Partitions
# ----------------------------------------------------------------------------------------------------------------
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
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe}-{digest}"


def max_partition_bytes() -> int:
    """The largest partition (bytes of its files) the check reads: ``$STREAMREC_MAX_PARTITION_BYTES`` or
    :data:`MAX_PARTITION_BYTES`. A value that is not a positive integer is a configuration error (raised)."""
    text = os.environ.get("STREAMREC_MAX_PARTITION_BYTES", "").strip()
    if not text:
        return MAX_PARTITION_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"STREAMREC_MAX_PARTITION_BYTES must be a positive integer (bytes), not {text!r}")
    return int(text)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _hidden(name: str) -> bool:
    return name.startswith(_HIDDEN)


def _valid_key(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def partition_files(bucket: Bucket, partition_key: str) -> list[str]:
    """The data files of a partition: ``[partition_key]`` for a file, else the keys of the folder's files
    (directly in it, sorted; names starting with ``.`` or ``_`` skipped). Sub-folders are not listed (the
    check fails a folder that has one)."""
    key = partition_key.rstrip("/")
    if bucket.exists(key):
        return [key]
    return [
        o.key
        for o in bucket.list(key, recursive=False)
        if not o.is_folder and not _hidden(posixpath.basename(o.key))
    ]


REFUSED_WHY = (
    "not a key this bucket can address safely (an empty, '.' or '..' segment, a backslash or a NUL could reach "
    "outside the bucket); never read, never moved: rename it to apply it"
)
REFUSED_KEY = f"refused: {REFUSED_WHY}"


def list_incoming(
    bucket: Bucket, prefix: str = INCOMING, refused: list[str] | None = None
) -> list[Partition]:
    """The partitions under ``prefix``, in arrival order (newest file's mtime, then key).

    Each direct child of ``prefix`` is one partition: a file, or a folder (its files arrive together).
    Hidden names (``.``/``_`` first) are skipped, so is a folder holding only hidden objects (an upload in
    progress). Keys the bucket cannot address (e.g. S3 keys with ``..`` segments) are not partitions: each is
    appended to ``refused`` (when given; :func:`refused_incoming`), logged, and listed by the index page.
    Ids are unique within one listing: when two names map to the same id (``p.csv`` and ``p.parquet``), the
    later arrival gets ``-<8 hex of its name's SHA-256>`` appended.
    """
    base = check_key(prefix, prefix=True)
    groups: dict[str, list[Any]] = {}
    for obj in bucket.list(base):
        rel = obj.key[len(base) + 1 :] if base else obj.key
        top, _, rest = rel.partition("/")
        if not _valid_key(obj.key):  # before the hidden-name rule: ``..`` starts with a dot too
            log.warning("refusing %r: not a key this bucket can address", obj.key)
            if refused is not None:
                refused.append(obj.key)
            continue
        if _hidden(top):
            continue
        if rest and any(_hidden(seg) for seg in rest.split("/")):
            continue
        groups.setdefault(top + ("/" if rest else ""), []).append(obj)
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
        found.append(
            (
                max(o.mtime or 0.0 for o in objs),
                key,
                name,
                not is_folder,
                files,
                sum(o.size for o in sized),
            )
        )
    found.sort(key=lambda t: (t[0], t[1]))
    out: list[Partition] = []
    seen: set[str] = set()
    for mtime, key, name, is_file, files, size in found:
        pid = partition_id(name, is_file)
        if pid in seen:
            pid = f"{pid}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
        seen.add(pid)
        out.append(Partition(pid, key, files, size, mtime))
    return out


def refused_incoming(bucket: Bucket, prefix: str = INCOMING) -> list[str]:
    """The object keys under ``prefix`` that :func:`list_incoming` refuses (see :data:`REFUSED_KEY`)."""
    refused: list[str] = []
    list_incoming(bucket, prefix, refused)
    return refused


def _as_partition(bucket: Bucket, partition: Partition | str) -> Partition:
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


# ----------------------------------------------------------------------------------------------------------------
# Lenient parsing (file-level rules here; value rules in the GX suite)
# ----------------------------------------------------------------------------------------------------------------
# (the file layouts, HEADER_LAYOUTS and UDATA_LAYOUT, are the loader's: one definition of the formats)


class _FileProblem(Exception):
    """A file-level rule failed: the file cannot be read as ratings at all."""

    def __init__(self, name: str, line: int | None, rule: str, detail: str, unit: str = "line") -> None:
        self.err = RatingsFormatError(name, line, rule, detail, unit)
        self.name, self.line, self.rule = name, line, rule
        super().__init__(str(self.err))


@dataclass
class _Rows:
    """The parsed rows of one file: values (nullable), 1-based line/row numbers, and a way to show a row."""

    user: pa.Array
    item: pa.Array
    rating: pa.Array
    ts: pa.Array
    line: np.ndarray
    show: Callable[[int], str]
    unit: str = "line"
    ts_raw: pa.Array | None = None
    ts_bad: np.ndarray | None = None


@dataclass
class ParsedPartition:
    """A partition parsed leniently: ``frame`` (``user Int64, item Int64, rating float64, ts Int64``, index =
    row number 0..n-1), where each row came from (:meth:`where`), and the problems found before GX runs:
    ``fatal`` (file-level, the suite is not run) and ``problems`` (rows the frame cannot represent)."""

    frame: pd.DataFrame
    files: list[str]
    file_of_row: np.ndarray
    line_of_row: np.ndarray
    shows: list[Callable[[int], str]]
    units: list[str]
    fatal: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)

    def where(self, row: int) -> str:
        """``"p.csv line 17: '3,5,7.0,964982703'"`` for a row of :attr:`frame`."""
        f = int(self.file_of_row[row])
        line = int(self.line_of_row[row])
        return f"{self.files[f]} {self.units[f]} {line}: {self.shows[f](line)}"


def _short(text: str, n: int = 60) -> str:
    return _one_line(repr(text if len(text) <= n else text[:n] + "..."))


def _one_line(text: str) -> str:
    """``text`` with every control or line-breaking character escaped (reasons are one line)."""
    return re.sub(
        r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: m.group().encode("unicode_escape").decode(), text
    )


def _match(arr: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, _anchored(pattern)), False).to_numpy(
        zero_copy_only=False
    )


def _parse_ids(arr: pa.Array) -> pa.Array:
    """Integer literals in 1..2**63-1 or below (negatives parse: the suite reports them); others -> null."""
    ok = _match(arr, _INT)
    digits = pc.utf8_ltrim(pc.utf8_ltrim(arr, "+-"), "0")
    nd = pc.fill_null(pc.utf8_length(digits), 0).to_numpy(zero_copy_only=False)
    big = pc.fill_null(pc.greater(digits, pa.scalar(str(MAX_ID), digits.type)), False).to_numpy(
        zero_copy_only=False
    )
    ok &= ~((nd > 19) | ((nd == 19) & big))
    safe = pc.if_else(pa.array(ok), pc.utf8_ltrim(arr, "+"), pa.scalar(None, arr.type))
    return pc.cast(safe, pa.int64())


def _parse_ratings(arr: pa.Array) -> pa.Array:
    """Finite decimal literals -> float64; anything else (``nan``, ``inf``, ``1e400``, text) -> null."""
    ok = pa.array(_match(arr, _NUM))
    vals = pc.cast(pc.if_else(ok, arr, pa.scalar(None, arr.type)), pa.float64())
    return pc.if_else(pc.is_finite(vals), vals, pa.scalar(None, pa.float64()))


def _parse_ts(arr: pa.Array | None, n: int, required: bool) -> tuple[pa.Array, np.ndarray]:
    """(epoch seconds or null, mask of rows whose timestamp is present but not usable)."""
    if arr is None:
        return pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
    present = pc.fill_null(pc.not_equal(arr, pa.scalar("", arr.type)), False).to_numpy(zero_copy_only=False)
    vals = _parse_ids(arr)
    bad = present & ~pc.is_valid(vals).to_numpy(zero_copy_only=False)
    if required:
        bad |= ~present
    return vals, bad


def _header_hint(first: str) -> str:
    """Why a first line is not a known header, when it can be told (quotes, delimiter, order, missing
    columns)."""
    if '"' in first or "'" in first:
        return "; quoted fields are not supported: write the header and values without quotes"
    for sep, label in ((";", "';'"), ("|", "'|'"), (" ", "spaces")):
        if first.count(sep) >= 2 and "," not in first:
            return f"; wrong delimiter? fields are separated by {label}, the format wants ',' (or tabs for u.data)"
    cols = first.split(",")
    for header in (CSV_HEADER_TS, CSV_HEADER, MOVIELENS_HEADER):
        if sorted(cols) == sorted(header.split(",")):
            return f"; the columns are in another order: the header must be exactly {header!r}"
    for header, required in ((CSV_HEADER_TS, CSV_HEADER), (MOVIELENS_HEADER, MOVIELENS_HEADER)):
        if set(cols) <= set(header.split(",")):
            missing = [c for c in required.split(",") if c not in cols]
            if missing:
                return f"; missing column(s) {', '.join(missing)}"
    extra = [c for c in cols if c not in {*CSV_HEADER_TS.split(","), *MOVIELENS_HEADER.split(",")}]
    if extra and len(cols) > 1:
        return f"; unknown column(s) {', '.join(map(repr, extra[:4]))}"
    return ""


def _parse_text(name: str, data: bytes) -> _Rows:
    """Parse one text file (CSV with a known header, or tab-separated u.data); raise :class:`_FileProblem`."""
    if not data:
        raise _FileProblem(name, 1, KNOWN_HEADER, "the file is empty: no header")
    for magic, what in _COMPRESSED:
        if data.startswith(magic):
            raise _FileProblem(
                name,
                None,
                FILE_TYPE,
                f"{what}: compressed partitions are not supported; drop the uncompressed text or Parquet",
            )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _FileProblem(
            name,
            None,
            FILE_TYPE,
            f"binary data (a NUL byte at offset {nul}): not a text or Parquet ratings file",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _FileProblem(
            name,
            None,
            FILE_TYPE,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): binary data or another encoding",
        ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    first = lines[0].as_py().removeprefix(_BOM)
    layout = HEADER_LAYOUTS.get(first)
    if layout is None:
        if "\t" not in first:
            if not first.strip():
                raise _FileProblem(name, 1, KNOWN_HEADER, "line 1 is blank: no header")
            raise _FileProblem(
                name,
                1,
                KNOWN_HEADER,
                f"{_short(first)} is not a known header ({CSV_HEADER_TS!r}, {CSV_HEADER!r} or "
                f"{MOVIELENS_HEADER!r}) nor a tab-separated u.data line{_header_hint(first)}",
            )
        layout = UDATA_LAYOUT
        head = first.split("\t")[0]
        if not re.fullmatch(_INT, head):
            raise _FileProblem(
                name,
                1,
                KNOWN_HEADER,
                f"{_short(first)} is tab separated but not a u.data line (u.data has no header; a tab-separated "
                f"header is not supported: use {CSV_HEADER_TS!r})",
            )
    n = len(lines)
    line_no = np.arange(1, n + 1)
    blank = _match(lines, r"[ \t]*")
    nonblank = np.flatnonzero(~blank)
    last = int(nonblank[-1]) if nonblank.size else -1
    is_data = ~blank
    if layout.header is not None:
        is_data[0] = False
    found: list[tuple[int, str, str, int]] = []  # (line, rule, detail, how many lines break it)
    inner_blank = np.flatnonzero(blank[:last])
    if inner_blank.size:
        found.append(
            (
                int(inner_blank[0]) + 1,
                BLANK_LINE,
                "a blank line before more data (only trailing blank lines are allowed)",
                inner_blank.size,
            )
        )
    data_idx = np.flatnonzero(is_data)
    data_lines = lines.take(pa.array(data_idx, pa.int64()))
    if layout.header is not None:
        rep = pc.fill_null(
            pc.or_(
                pc.equal(data_lines, pa.scalar(layout.header, data_lines.type)),
                pc.equal(data_lines, pa.scalar(_BOM + layout.header, data_lines.type)),
            ),
            False,
        ).to_numpy(zero_copy_only=False)
        if rep.any():
            found.append(
                (
                    int(data_idx[rep][0]) + 1,
                    REPEATED_HEADER,
                    f"the header {layout.header!r} appears again (concatenated files?)",
                    int(rep.sum()),
                )
            )
    parts = pc.split_pattern(data_lines, layout.sep)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    wrong = counts != layout.n_fields
    if wrong.any():
        i = int(np.argmax(wrong))
        sep = "tab" if layout.sep == "\t" else repr(layout.sep)
        found.append(
            (
                int(data_idx[i]) + 1,
                FIELD_COUNT,
                f"expected {layout.n_fields} fields separated by {sep}, found {int(counts[i])} in "
                f"{_short(data_lines[i].as_py())}",
                int(wrong.sum()),
            )
        )
    if found:
        line, rule, detail, count = min(found)
        more = f" ({count} lines break this rule)" if count > 1 else ""
        raise _FileProblem(name, line, rule, detail + more)
    fields = [pc.list_element(parts, j) for j in range(layout.n_fields)] if len(data_idx) else []
    m = len(data_idx)
    if not m:
        empty_i, empty_f = pa.array([], pa.int64()), pa.array([], pa.float64())
        return _Rows(empty_i, empty_i, empty_f, empty_i, np.zeros(0, np.int64), lambda _: "")
    ts_raw = fields[3] if layout.n_fields == 4 else None
    ts, ts_bad = _parse_ts(ts_raw, m, layout.ts_mode == TS_REQUIRED)

    def show(line: int) -> str:
        return _short(lines[line - 1].as_py())

    return _Rows(
        _parse_ids(fields[0]),
        _parse_ids(fields[1]),
        _parse_ratings(fields[2]),
        ts,
        line_no[data_idx],
        show,
        ts_raw=ts_raw,
        ts_bad=ts_bad,
    )


def _arrow_strings(col: pa.ChunkedArray) -> pa.Array:
    """A Parquet column as strings, as the loader reads it (float32 widened to float64 first)."""
    arr = col.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_float32(arr.type) or pa.types.is_float16(arr.type):
        arr = pc.cast(arr, pa.float64())
    return pc.cast(arr, pa.large_string())


def _parse_parquet(name: str, data: bytes) -> _Rows:
    """Parse one Parquet file (columns user, item, rating[, timestamp|ts]); raise :class:`_FileProblem`."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise _FileProblem(
            name, None, FILE_TYPE, f"unreadable Parquet file ({type(exc).__name__}: {_short(str(exc), 120)})"
        ) from None
    cols = table.column_names
    ts_cols = [c for c in cols if c in PARQUET_TS_COLUMNS]
    if not (
        len(set(cols)) == len(cols)
        and {USER, ITEM, RATING} <= set(cols)
        and len(ts_cols) <= 1
        and len(cols) == 3 + len(ts_cols)
    ):
        missing = [c for c in (USER, ITEM, RATING) if c not in cols]
        hint = f"; missing column(s) {', '.join(missing)}" if missing else ""
        raise _FileProblem(
            name,
            None,
            KNOWN_HEADER,
            f"Parquet columns {_one_line(repr(cols[:8]))} are not user, item, rating[, timestamp|ts]{hint}",
        )
    try:
        strings = [_arrow_strings(table.column(c)) for c in (USER, ITEM, RATING, *ts_cols)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _FileProblem(
            name,
            None,
            KNOWN_HEADER,
            f"Parquet column types not readable as ratings ({_short(str(exc), 120)})",
        ) from None
    n = table.num_rows
    ts_raw = strings[3] if ts_cols else None
    ts, ts_bad = _parse_ts(ts_raw, n, False)

    def show(row: int) -> str:
        vals = [s[row - 1].as_py() for s in strings]
        names = (USER, ITEM, RATING, *ts_cols)
        return _one_line(", ".join(f"{k}={v!r}" for k, v in zip(names, vals, strict=True)))

    return _Rows(
        _parse_ids(strings[0]),
        _parse_ids(strings[1]),
        _parse_ratings(strings[2]),
        ts,
        np.arange(1, n + 1),
        show,
        unit="row",
        ts_raw=ts_raw,
        ts_bad=ts_bad,
    )


def _display_name(partition: Partition, key: str) -> str:
    """How a file is named in reasons: relative to the folder holding the partition (escaped, one line)."""
    parent = posixpath.dirname(partition.key)
    rel = key[len(parent) + 1 :] if parent and key.startswith(parent + "/") else key
    return _one_line(rel)


def _int_array(arr: pa.Array) -> pd.arrays.IntegerArray:
    arr = arr.cast(pa.int64())
    mask = ~pc.is_valid(arr).to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pd.arrays.IntegerArray(values, mask)


def _entry(
    rule: str,
    column: str | None,
    count: int,
    values: Sequence[Any],
    first: str | None,
    message: str,
) -> dict:
    return {
        "expectation_type": rule,
        "column": column,
        "unexpected_count": int(count),
        "unexpected_values": [_jsonable(v) for v in values],
        "first": first,
        "message": message,
    }


def parse_partition(bucket: Bucket, partition: Partition | str) -> ParsedPartition:
    """Read a partition's files through ``bucket`` and parse them leniently (see the module docstring).

    Never raises for bad content (it lands in ``fatal`` / ``problems``); bucket I/O errors propagate."""
    part = _as_partition(bucket, partition)
    files: list[str] = []
    parsed: list[_Rows] = []
    fatal: list[dict] = []
    if part.is_folder:
        nested = [
            o.key
            for o in bucket.list(part.key)
            if "/" in o.key[len(part.key) + 1 :] and not _hidden(o.key[len(part.key) + 1 :])
        ]
        if nested:
            sub = nested[0][len(part.key) + 1 :].split("/")[0]
            msg = (
                f"{_display_name(part, part.key)}: rule {FILES_ONLY}: the folder contains the sub-folder "
                f"{_short(sub)}: a ratings folder holds files only"
            )
            fatal.append(_entry(FILES_ONLY, None, len(nested), [], _display_name(part, part.key), msg))
        if not part.files:
            msg = f"{_display_name(part, part.key)}: rule {NO_FILES}: no rating files in the folder"
            fatal.append(_entry(NO_FILES, None, 0, [], _display_name(part, part.key), msg))
    limit = max_partition_bytes()
    if part.size > limit:
        where = _display_name(part, part.key)
        msg = (
            f"{where}: rule {PARTITION_SIZE}: partition too large to check: {_mib(part.size)} of files, the "
            f"contract reads at most {_mib(limit)} into memory (STREAMREC_MAX_PARTITION_BYTES); split it into "
            "smaller partitions, or raise the limit on workers with the memory for it"
        )
        fatal.append(_entry(PARTITION_SIZE, None, 1, [], where, msg))
    for key in part.files if part.size <= limit else ():
        name = _display_name(part, key)
        data = bucket.read_bytes(key)
        try:
            rows = _parse_parquet(name, data) if data[:4] == b"PAR1" else _parse_text(name, data)
        except _FileProblem as exc:
            where = name if exc.line is None else f"{name} {exc.err.unit} {exc.line}"
            fatal.append(_entry(exc.rule, None, 1, [], where, _one_line(str(exc))))
            continue
        files.append(name)
        parsed.append(rows)
    n_rows = [len(r.line) for r in parsed]
    if parsed:
        frame = pd.DataFrame(
            {
                USER: _int_array(pa.concat_arrays([r.user for r in parsed])),
                ITEM: _int_array(pa.concat_arrays([r.item for r in parsed])),
                RATING: pa.concat_arrays([r.rating for r in parsed])
                .to_numpy(zero_copy_only=False)
                .astype(np.float64),
                TS: _int_array(pa.concat_arrays([r.ts for r in parsed])),
            }
        )
    else:
        frame = pd.DataFrame(
            {
                USER: pd.array([], "Int64"),
                ITEM: pd.array([], "Int64"),
                RATING: np.zeros(0, np.float64),
                TS: pd.array([], "Int64"),
            }
        )
    out = ParsedPartition(
        frame=frame,
        files=files,
        file_of_row=np.repeat(np.arange(len(parsed)), n_rows).astype(np.int64),
        line_of_row=np.concatenate([r.line for r in parsed]) if parsed else np.zeros(0, np.int64),
        shows=[r.show for r in parsed],
        units=[r.unit for r in parsed],
        fatal=fatal,
    )
    # Timestamps present but not integer literals (or missing where the format requires them): the frame
    # holds them as null, which the suite allows, so they are reported here.
    bad_ts: list[int] = []
    raws: list[Any] = []
    offset = 0
    for rows, n in zip(parsed, n_rows, strict=True):
        if rows.ts_bad is not None and rows.ts_bad.any():
            pos = np.flatnonzero(rows.ts_bad)
            bad_ts.extend((offset + pos).tolist())
            if rows.ts_raw is not None and len(raws) < 5:
                raws.extend(rows.ts_raw[int(i)].as_py() for i in pos[: 5 - len(raws)])
        offset += n
    if bad_ts:
        first = bad_ts[0]
        msg = (
            f"ts: {_rows(len(bad_ts))} with a timestamp that is not an integer (epoch seconds) "
            f"(first: {out.where(first)})"
        )
        out.problems.append(_entry(TIMESTAMP_INTEGER, TS, len(bad_ts), raws, _first_loc(out, first), msg))
    return out


def _first_loc(parsed: ParsedPartition, row: int) -> str:
    f = int(parsed.file_of_row[row])
    return f"{parsed.files[f]} {parsed.units[f]} {int(parsed.line_of_row[row])}"


# ----------------------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------------------
def _suite_file(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("STREAMREC_EXPECTATIONS_DIR")
    return Path(env) / f"{SUITE_NAME}.json" if env else SUITE_PATH


@cache
def _suite_json(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_suite(path: str | os.PathLike[str] | None = None) -> dict:
    """The suite as a dict (GX's JSON form: ``name``, ``expectations`` [{``type``, ``kwargs``, ``meta``}] ...)."""
    return json.loads(_suite_json(str(_suite_file(path))))


def rating_grid(scale: RatingScale) -> list[float]:
    """Every rating on ``scale``: ``low, low + step, ... <= high`` (rounded to 9 decimals: 0.1 * 3 == 0.3)."""
    k = int(np.floor((scale.high - scale.low) / scale.step + 1e-9))
    return [round(scale.low + i * scale.step, 9) for i in range(k + 1)]


def suite_parameters(scale: RatingScale, now_ts: float) -> dict:
    """The run-time values of the suite's ``$PARAMETER`` s."""
    return {
        "rating_low": float(scale.low),
        "rating_high": float(scale.high),
        "rating_grid": rating_grid(scale),
        "ts_max": int(now_ts) + DAY,
    }


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _iso_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _gx_message(
    etype: str, column: str | None, count: int, result: dict, scale: RatingScale, now_ts: float
) -> str:
    """The human sentence for a failed expectation (without the location)."""
    if etype == "expect_table_row_count_to_be_between":
        return "the partition has no data rows (at least 1 required)"
    if etype == "expect_table_columns_to_match_set":
        return f"columns {result.get('observed_value')} are not user, item, rating, ts"
    if etype == "expect_column_values_to_be_of_type":
        return f"{column}: type {result.get('observed_value')} is not the contract's type"
    if etype == "expect_column_values_to_not_be_null":
        what = "a finite decimal number" if column == RATING else "an integer in 1..2^63-1"
        return f"{column}: {_rows(count)} empty or not {what}"
    if etype == "expect_column_values_to_be_between":
        if column == RATING:
            return f"{column}: {_rows(count)} outside [{scale.low:g}, {scale.high:g}]"
        if column == TS:
            msg = f"ts: {_rows(count)} outside [1995-01-01, now + 1 day = {_iso_day(now_ts + DAY)}]"
            seen = [v for v in result.get("partial_unexpected_list") or [] if isinstance(v, int | np.integer)]
            if seen and all(TS_MIN <= v // 1000 <= now_ts + DAY for v in seen):
                msg += "; they look like milliseconds: timestamps are epoch seconds"
            return msg
        return f"{column}: {_rows(count)} below 1 (ids are positive)"
    if etype == "expect_column_values_to_be_in_set":
        return f"{column}: {_rows(count)} not on the {scale.step:g} steps of [{scale.low:g}, {scale.high:g}]"
    if etype == "expect_compound_columns_to_be_unique":
        return f"(user, item, ts): {_rows(count)} share their (user, item, ts) with another row"
    return f"{column or 'table'}: {etype} failed ({_rows(count)})"


def _jsonable(v: Any) -> Any:
    """A strict-JSON value (NaN/NA -> None, numpy scalars -> Python, containers recursively, else str)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _docs_site(docs_dir: str) -> dict:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _run_suite(
    frame: pd.DataFrame,
    asset_name: str,
    params: dict,
    run_time: datetime,
    docs_dir: str | None,
    suite_path: str | os.PathLike[str] | None = None,
) -> tuple[Any, list[str]]:
    """Validate ``frame`` with the suite in a fresh ephemeral context; build Data Docs into ``docs_dir``.

    Returns (the ExpectationSuiteValidationResult, the suite's expectation ids in file order)."""
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={"streamrec": _docs_site(docs_dir)} if docs_dir else {},
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_def = (
        context.data_sources.add_pandas("streamrec")
        .add_dataframe_asset(asset_name)
        .add_batch_definition_whole_dataframe("partition")
    )
    suite = context.suites.add(ExpectationSuite(**load_suite(suite_path)))
    order = [e.id for e in suite.expectations]
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}:{asset_name}", data=batch_def, suite=suite)
    )
    result = vd.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=params,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        run_id=RunIdentifier(run_name=asset_name, run_time=run_time),
    )
    if docs_dir:
        context.build_data_docs(site_names=["streamrec"])
    return result, order


def _summarise(
    result: Any, order: list[str], parsed: ParsedPartition, scale: RatingScale, now_ts: float
) -> tuple[list[dict], dict]:
    """(failed entries in suite order, a JSON summary of every expectation's outcome)."""
    rank = {eid: i for i, eid in enumerate(order)}
    outcomes = []
    failed = []
    for r in sorted(result.results, key=lambda r: rank.get(r.expectation_config.id, len(rank))):
        cfg = r.expectation_config
        etype = cfg.type
        kwargs = cfg.kwargs
        column = kwargs.get("column")
        res = dict(r.result or {})
        exc = (r.exception_info or {}).get("exception_message") if r.exception_info else None
        outcomes.append(
            {
                "expectation_type": etype,
                "column": column,
                "kwargs": _jsonable({k: v for k, v in kwargs.items() if k != "value_set"}),
                "success": bool(r.success),
                "unexpected_count": _jsonable(res.get("unexpected_count")),
                "observed_value": _jsonable(res.get("observed_value")),
                "exception": exc,
            }
        )
        if r.success:
            continue
        count = int(res.get("unexpected_count") or 0)
        idx = [
            int(i) for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int | np.integer)
        ]
        values = res.get("partial_unexpected_list") or []
        first_row = min(idx) if idx else None
        msg = _gx_message(etype, column, count, res, scale, now_ts)
        if exc:
            msg = f"{column or 'table'}: {etype} could not be evaluated ({_short(str(exc), 120)})"
        first = None
        if first_row is not None and first_row < len(parsed.frame):
            first = _first_loc(parsed, first_row)
            msg += f" (first: {parsed.where(first_row)})"
        elif etype == "expect_table_row_count_to_be_between" and parsed.files:
            first = f"{', '.join(parsed.files[:3])}{' ...' if len(parsed.files) > 3 else ''}"
            msg += f" in {first}"
        failed.append(_entry(etype, column, count, values[:5], first, _one_line(msg)))
    summary = {
        "success": bool(result.success),
        "statistics": _jsonable(dict(result.statistics)),
        "expectations": outcomes,
    }
    return failed, summary


# ----------------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionCheck:
    """The outcome of checking one partition against the contract.

    ``reason`` is one human-readable line (``"passed"`` when ``ok``); ``failed`` lists every problem found
    (``expectation_type`` (a GX expectation or a loader rule), ``column``, ``unexpected_count``,
    ``unexpected_values`` (a few), ``first`` (file and line of the first offender), ``message``);
    ``docs_key``/``report_key`` are bucket keys of the Data Docs index (None when not built) and report.json.
    """

    partition_id: str
    ok: bool
    reason: str
    n_rows: int
    failed: list[dict]
    docs_key: str | None
    report_key: str

    def as_dict(self) -> dict:
        """A JSON-able form (for XCom and report.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PartitionCheck:
        """Inverse of :meth:`as_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _reason(failed: list[dict]) -> str:
    if not failed:
        return "passed"
    more = len(failed) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return _one_line(failed[0]["message"] + tail)


def _upload_docs(bucket: Bucket, docs_dir: str, prefix: str) -> list[str]:
    """Upload the Data Docs pages (and the static files they reference) under ``prefix``; return the keys.

    GX writes ~4 MB of fonts and GIFs into ``static/`` that its pages do not use (styling comes from CDNs);
    only referenced static files are uploaded (today: the favicon)."""
    root = Path(docs_dir)
    pages = sorted(
        p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).as_posix().startswith("static/")
    )
    referenced = set()
    for page in pages:
        if page.suffix == ".html":
            for ref in re.findall(
                r"""(?:\.\./|\./)*(static/[^"'()\s?#]+)""", page.read_text("utf-8", "replace")
            ):
                referenced.add(ref)
    keys = []
    for path in [*pages, *(root / r for r in sorted(referenced))]:
        if not path.is_file():
            continue
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        bucket.write_bytes(key, path.read_bytes())
        keys.append(key)
    return keys


def _sync_prefix(bucket: Bucket, prefix: str, keep: Sequence[str]) -> None:
    """Delete the objects under ``prefix`` not in ``keep`` (stale Data Docs of an earlier check)."""
    wanted = set(keep)
    for obj in bucket.list(prefix):
        if obj.key not in wanted:
            bucket.delete(obj.key)


def check_partition(
    bucket: Bucket,
    partition: Partition | str,
    scale: RatingScale,
    now_ts: float | datetime,
    build_docs: bool = True,
    suite_path: str | os.PathLike[str] | None = None,
) -> PartitionCheck:
    """Check one partition against the contract and write its report (and Data Docs); never raises for bad data.

    ``partition`` is a :class:`Partition` (from :func:`list_incoming`) or a partition key. ``now_ts`` (epoch
    seconds or an aware datetime, given by the caller, e.g. the run's logical date; never read from a clock)
    bounds the timestamps (``<= now_ts + 1 day``) and names the GX run, so a rerun with the same inputs writes
    the same keys. Writes ``reports/partitions/<id>/report.json`` and, with ``build_docs``,
    ``reports/datadocs/<id>/`` (stale pages of earlier checks of this id are removed; without docs, none are
    kept). Cost on a 10,000-row partition (2 loaded cores): ~0.9 s without Data Docs, ~2 s with; the first
    call in a process also pays ~15 s of CPU for importing great_expectations.
    """
    if isinstance(now_ts, datetime):
        now_ts = now_ts.timestamp()
    part = _as_partition(bucket, partition)
    t0 = time.perf_counter()
    parsed = parse_partition(bucket, part)
    report_key = f"{PARTITION_REPORTS}/{part.id}/report.json"
    docs_prefix = f"{DATADOCS}/{part.id}"
    docs_key = None
    gx_summary: dict | None = None
    n_rows = len(parsed.frame)
    uploaded: list[str] = []
    if parsed.fatal:
        failed = list(parsed.fatal)
    else:
        run_time = datetime.fromtimestamp(now_ts, UTC)
        params = suite_parameters(scale, now_ts)
        with tempfile.TemporaryDirectory(prefix="streamrec-datadocs-") as tmp:
            result, order = _run_suite(
                parsed.frame, part.id, params, run_time, tmp if build_docs else None, suite_path
            )
            if build_docs:
                uploaded = _upload_docs(bucket, tmp, docs_prefix)
                docs_key = f"{docs_prefix}/index.html"
        gx_failed, gx_summary = _summarise(result, order, parsed, scale, now_ts)
        failed = gx_failed + parsed.problems
    _sync_prefix(bucket, docs_prefix, uploaded)
    check = PartitionCheck(
        partition_id=part.id,
        ok=not failed,
        reason=_reason(failed),
        n_rows=n_rows,
        failed=failed,
        docs_key=docs_key,
        report_key=report_key,
    )
    report = {
        "check": check.as_dict(),
        "partition": part.as_dict(),
        "files": parsed.files,
        "scale": str(scale),
        "now_ts": now_ts,
        "suite": SUITE_NAME,
        "gx": gx_summary,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    bucket.write_json(report_key, _jsonable(report))
    log.info("partition %s: %s (%d rows)", part.id, check.reason, n_rows)
    return check


def quarantine(bucket: Bucket, partition: Partition | str, check: PartitionCheck) -> str:
    """Copy a failed partition aside and return its quarantine prefix ``quarantine/<id>``.

    Copies (never moves, deletes or rewrites) every object of the partition to ``quarantine/<id>/files/<name>``
    (``<name>``: the key relative to the folder holding the partition, e.g. ``2026-11-26/part-1.csv``), then
    writes ``reason.txt`` (one line) and ``report.json`` (the check and the copied files). Idempotent: a
    second call writes the same objects again. Nothing is ever deleted, also not from ``quarantine/``.
    """
    part = _as_partition(bucket, partition)
    if check.partition_id != part.id:
        raise ValueError(f"check is for partition {check.partition_id!r}, not {part.id!r}")
    prefix = f"{QUARANTINE}/{part.id}"
    keys = [part.key]
    if part.is_folder:
        keys = [o.key for o in bucket.list(part.key) if _valid_key(o.key)]
    parent = posixpath.dirname(part.key)
    copied = []
    for key in keys:
        rel = key[len(parent) + 1 :] if parent else key
        dst = f"{prefix}/files/{rel}"
        bucket.copy(key, dst)
        copied.append({"source": key, "key": dst})
    sizes = {o.key: o.size for o in bucket.list(f"{prefix}/files")}
    for c in copied:
        c["size"] = sizes.get(c["key"])
    bucket.write_text(f"{prefix}/reason.txt", _one_line(check.reason) + "\n")
    bucket.write_json(
        f"{prefix}/report.json",
        _jsonable({"check": check.as_dict(), "partition": part.as_dict(), "copied": copied}),
    )
    log.warning("quarantined partition %s to %s: %s", part.id, prefix, check.reason)
    return prefix

"""The one ratings loader: MovieLens ``ratings.csv``, MovieLens 100k ``u.data``, plain CSV and Parquet.

Every reader returns ``schema.RATINGS_SCHEMA`` (``user long, item long, rating double, ts long`` nullable, epoch
seconds), whatever the input format, or raises :class:`RatingsFormatError` naming the file, the 1-based physical
line (the header is line 1; "row N" for Parquet), the rule and what was wrong. Nothing is guessed silently and
no row is dropped silently.

Formats (``fmt="auto"`` detects each file from its first bytes; or name one):

``movielens``  ``ratings.csv`` of MovieLens latest/25M: header ``userId,movieId,rating,timestamp``.
``udata``      MovieLens 100k ``u.data``: tab separated, no header: user, item, rating, timestamp.
``csv``        header ``user,item,rating`` or ``user,item,rating,timestamp``; an empty timestamp is null.
``parquet``    columns ``user, item, rating`` and optionally ``timestamp`` (or ``ts``); a null timestamp is null.

Auto detection: the Parquet magic ``PAR1`` means Parquet; a first line equal to one of the headers above means
that format; a first line containing a tab means ``udata``; anything else is an error (rule ``known_header``).
A leading UTF-8 byte order mark is ignored. A folder stands for its files (not sub-folders; names starting with
``.`` or ``_`` such as ``_SUCCESS`` are skipped); the files of one call may mix formats.

Lines end with LF, CRLF or a lone CR (the same three terminators as Spark's text reader), so no ``\\r`` ever
reaches a value. Fields are split on the separator only: no quoting, no trimming of spaces.

Rules, checked in this order for each line/row (the first failing rule is reported):

``known_header``     line 1 is the header the format requires (Parquet: the column names are the known ones).
``repeated_header``  the header appears again after line 1 (e.g. concatenated CSV files).
``blank_line``       a blank line (only spaces/tabs) is followed by more lines; trailing blank lines are fine.
``field_count``      the line has exactly the format's number of fields.
``id_integer``       user and item are integer literals (``[+-]?[0-9]+``), not null.
``id_range``         user and item are in 1 .. 2**63-1 (no 0, no negatives, no 64-bit overflow).
``rating_finite``    rating is not NaN or infinite (also a literal that overflows a double).
``rating_number``    rating is a decimal literal (``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)``), not null.
``rating_on_scale``  ``low - 1e-9 <= rating <= high + 1e-9`` for the configured :class:`RatingScale`.
``rating_on_step``   ``|(rating - low) - rint((rating - low) / step) * step| <= 1e-9``.
``timestamp_integer``  the timestamp is an integer literal (required for movielens/udata; csv/parquet may leave
                     it empty/null, which gives a null ``ts``).
``timestamp_range``  the timestamp is in 0 .. 2**63-1 (epoch seconds, non-negative).

The same rules are implemented three times, kept in step by the tests: a scalar Python check that produces the
rule and the message (authoritative), a vectorised pyarrow check (:func:`read_ratings_pandas`) and a Spark column
expression (:func:`read_ratings`).

How the Spark reader stays fast and still reports exact lines: files are read with ``spark.read.text``; one
regex per line checks the literals and the field count, ``substring_index`` cuts the fields and ``try_cast``
plus arithmetic check the ranges, all as SQL expressions in the JVM. One aggregation (hash aggregate, fixed-width
values only), grouped by file and file split (``_metadata.file_path``, ``_metadata.file_block_start``), counts
lines, bad, blank and header lines and keeps, per split, the ``monotonically_increasing_id`` of its first line,
first bad, first blank, first/last header and last non-blank line. Lines of a split are read in order and are
contiguous in that id, so a line number is ``lines in earlier splits of the file + (id - first id of the
split) + 1``: the first bad line of each file comes out of that one pass. Only when a file is bad, one more
filtered job reads back the text of that one line (for the message); a header repeated three or more times
inside the first split needs one more. Nothing is read in Python but the first bytes of each file (and Parquet
footers), through the Hadoop file system of the path, so ``s3a://`` works the same. The returned DataFrame
re-reads the files lazily and carries the check as a guard: a row that no longer passes (a file changed after
validation) fails the job with ``raise_error`` instead of slipping through.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamrec.schema import HALF_STAR, ITEM, RATING, RATINGS_SCHEMA, TS, USER, RatingScale

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "FORMATS",
    "RULES",
    "RatingsFormatError",
    "detect_format",
    "list_rating_files",
    "read_ratings",
    "read_ratings_pandas",
]

MAX_ID = 2**63 - 1
TOLERANCE = 1e-9
FORMATS = ("movielens", "udata", "csv", "parquet")

MOVIELENS_HEADER = "userId,movieId,rating,timestamp"
CSV_HEADER_TS = "user,item,rating,timestamp"
CSV_HEADER = "user,item,rating"
PARQUET_TS_COLUMNS = ("timestamp", "ts")

KNOWN_HEADER = "known_header"
REPEATED_HEADER = "repeated_header"
BLANK_LINE = "blank_line"
FIELD_COUNT = "field_count"
ID_INTEGER = "id_integer"
ID_RANGE = "id_range"
RATING_FINITE = "rating_finite"
RATING_NUMBER = "rating_number"
RATING_ON_SCALE = "rating_on_scale"
RATING_ON_STEP = "rating_on_step"
TIMESTAMP_INTEGER = "timestamp_integer"
TIMESTAMP_RANGE = "timestamp_range"
RULES = (
    KNOWN_HEADER,
    REPEATED_HEADER,
    BLANK_LINE,
    FIELD_COUNT,
    ID_INTEGER,
    ID_RANGE,
    RATING_FINITE,
    RATING_NUMBER,
    RATING_ON_SCALE,
    RATING_ON_STEP,
    TIMESTAMP_INTEGER,
    TIMESTAMP_RANGE,
)

# The lexical rules, written once. Python uses re.fullmatch; Java (Spark rlike) and RE2 (pyarrow) use the
# anchored form, with \z so that no trailing line terminator is tolerated.
_INT = r"[+-]?[0-9]+"
_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NONFINITE = r"[+-]?(?:[nN][aA][nN]|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
_BLANK = r"[ \t]*"
_INT_RE, _NUM_RE, _NONFINITE_RE, _BLANK_RE = (re.compile(p) for p in (_INT, _NUM, _NONFINITE, _BLANK))


def _anchored(pattern: str) -> str:
    return rf"^(?:{pattern})\z"


_BOM = "\ufeff"
_HEAD_BYTES = 8192
_MAX_HEAD_BYTES = 1 << 20
_CHUNK_BYTES = 32 << 20
_TS_REQUIRED, _TS_OPTIONAL, _TS_ABSENT = "required", "optional", "absent"


class RatingsFormatError(ValueError):
    """A ratings file breaks a rule: ``path``, ``line`` (1-based; a row number for Parquet; ``None`` when the
    problem is the file as a whole), ``rule`` (one of :data:`RULES`) and ``detail``.

    ``str(err)`` reads like ``ratings.csv line 17: rule rating_on_scale: rating 7.0 is outside [0.5, 5]``.
    """

    def __init__(self, path: str, line: int | None, rule: str, detail: str, unit: str = "line") -> None:
        self.path, self.line, self.rule, self.detail, self.unit = path, line, rule, detail, unit
        where = f"{path} {unit} {line}" if line is not None else str(path)
        super().__init__(f"{where}: rule {rule}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.rule, self.detail, self.unit))


# ----------------------------------------------------------------------------------------------------------
# Layouts (what a file looks like) and format detection
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How to read one file: ``fmt``; for text, separator and header; for Parquet, the source columns."""

    fmt: str
    sep: str = ","
    header: str | None = None
    n_fields: int = 4
    ts_mode: str = _TS_REQUIRED
    columns: tuple[str, ...] = ()  # parquet: user, item, rating[, timestamp] column names in the file
    schema_key: str = ""  # parquet: files are read together only when their schemas are identical
    ddl: str | None = None  # parquet: the Spark schema, when the types map simply (saves an inference job)

    @property
    def is_text(self) -> bool:
        return self.fmt != "parquet"


_MOVIELENS = _Layout("movielens", ",", MOVIELENS_HEADER, 4, _TS_REQUIRED)
_UDATA = _Layout("udata", "\t", None, 4, _TS_REQUIRED)
_CSV_TS = _Layout("csv", ",", CSV_HEADER_TS, 4, _TS_OPTIONAL)
_CSV = _Layout("csv", ",", CSV_HEADER, 3, _TS_ABSENT)
_HEADER_LAYOUTS = {MOVIELENS_HEADER: _MOVIELENS, CSV_HEADER_TS: _CSV_TS, CSV_HEADER: _CSV}
# The same table for the data contract's lenient parser (streamrec.contract): one definition of the formats.
HEADER_LAYOUTS, UDATA_LAYOUT, TS_REQUIRED = _HEADER_LAYOUTS, _UDATA, _TS_REQUIRED


def _first_line(head: bytes, complete: bool) -> str | None:
    """The first line of ``head`` (BOM removed), ``None`` for an empty file; ``complete``: head is the file."""
    m = re.search(rb"\r\n|\r|\n", head)
    if m is None and not complete:
        raise ValueError("first line too long")
    raw = head[: m.start()] if m else head
    if not raw and not m:
        return None
    return raw.decode("utf-8", "replace").removeprefix(_BOM)


def _layout_from_head(path: str, head: bytes, complete: bool, fmt: str) -> _Layout:
    """Decide the layout of one file from its first bytes, or raise ``known_header``."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown ratings format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if head[:4] == b"PAR1" and fmt in ("auto", "parquet"):
        return _Layout("parquet")
    if fmt == "parquet":
        raise RatingsFormatError(path, None, KNOWN_HEADER, "not a Parquet file (no PAR1 magic bytes)")
    try:
        line = _first_line(head, complete)
    except ValueError:
        raise RatingsFormatError(
            path, 1, KNOWN_HEADER, f"line 1 is longer than {len(head)} bytes: not a ratings file"
        ) from None
    if line is None:
        if fmt == "udata":
            return _UDATA
        raise RatingsFormatError(path, 1, KNOWN_HEADER, "the file is empty: no header")
    known = _HEADER_LAYOUTS.get(line)
    if fmt == "auto":
        if known is not None:
            return known
        if "\t" in line:
            return _UDATA
        raise RatingsFormatError(
            path,
            1,
            KNOWN_HEADER,
            f"{_short(line)} is not a known header ({MOVIELENS_HEADER!r}, {CSV_HEADER_TS!r} or "
            f"{CSV_HEADER!r}) nor a tab-separated u.data line",
        )
    if fmt == "udata":
        return _UDATA
    if fmt == "movielens":
        if known is _MOVIELENS:
            return known
        raise RatingsFormatError(
            path, 1, KNOWN_HEADER, f"format movielens needs header {MOVIELENS_HEADER!r}, found {_short(line)}"
        )
    if known is _CSV_TS or known is _CSV:
        return known
    raise RatingsFormatError(
        path,
        1,
        KNOWN_HEADER,
        f"format csv needs header {CSV_HEADER_TS!r} or {CSV_HEADER!r}, found {_short(line)}",
    )


def _parquet_layout(path: str, names: Sequence[str], schema_key: str = "", ddl: str | None = None) -> _Layout:
    """Map Parquet column names to user, item, rating[, ts], or raise ``known_header``."""
    cols = list(names)
    ts_cols = [c for c in cols if c in PARQUET_TS_COLUMNS]
    ok = (
        len(set(cols)) == len(cols)
        and {USER, ITEM, RATING} <= set(cols)
        and len(ts_cols) <= 1
        and len(cols) == 3 + len(ts_cols)
    )
    if not ok:
        raise RatingsFormatError(
            path, None, KNOWN_HEADER, f"Parquet columns {cols} are not user, item, rating[, timestamp|ts]"
        )
    ts = tuple(ts_cols)
    return _Layout(
        "parquet",
        n_fields=3 + len(ts),
        ts_mode=_TS_OPTIONAL if ts else _TS_ABSENT,
        columns=(USER, ITEM, RATING, *ts),
        schema_key=schema_key,
        ddl=ddl,
    )


_SPARK_TYPES = {
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "STRING",
    pa.large_string(): "STRING",
    pa.bool_(): "BOOLEAN",
}


def _spark_ddl(schema: pa.Schema) -> str | None:
    """The Spark DDL for a Parquet file's Arrow schema when every type maps one to one, else ``None``."""
    parts = []
    for f in schema:
        t = _SPARK_TYPES.get(f.type)
        if t is None or "`" in f.name:
            return None
        parts.append(f"`{f.name}` {t}")
    return ", ".join(parts)


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


# ----------------------------------------------------------------------------------------------------------
# The rules, scalar (authoritative: produces the rule and the message)
# ----------------------------------------------------------------------------------------------------------


def _check_id(name: str, s: str | None) -> tuple[str, str] | None:
    if s is None:
        return ID_INTEGER, f"{name} is null"
    if not _INT_RE.fullmatch(s):
        return ID_INTEGER, f"{name} {_short(s)} is not an integer"
    if not 1 <= int(s) <= MAX_ID:
        return ID_RANGE, f"{name} {s} is not in 1..{MAX_ID}"
    return None


def _check_rating(s: str | None, scale: RatingScale) -> tuple[str, str] | None:
    if s is None:
        return RATING_NUMBER, "rating is null"
    if _NONFINITE_RE.fullmatch(s):
        return RATING_FINITE, f"rating {s} is not a finite number"
    if not _NUM_RE.fullmatch(s):
        return RATING_NUMBER, f"rating {_short(s)} is not a number"
    r = float(s)
    if not math.isfinite(r):
        return RATING_FINITE, f"rating {s} is not a finite number"
    if not (scale.low - TOLERANCE <= r <= scale.high + TOLERANCE):
        return RATING_ON_SCALE, f"rating {s} is outside [{scale.low:g}, {scale.high:g}]"
    if abs((r - scale.low) - round((r - scale.low) / scale.step) * scale.step) > TOLERANCE:
        return RATING_ON_STEP, f"rating {s} is not on the scale's {scale.step:g} steps from {scale.low:g}"
    return None


def _check_ts(s: str | None, ts_mode: str) -> tuple[str, str] | None:
    if ts_mode == _TS_ABSENT or (ts_mode == _TS_OPTIONAL and (s is None or s == "")):
        return None
    if s is None:
        return TIMESTAMP_INTEGER, "timestamp is null"
    if not _INT_RE.fullmatch(s):
        return TIMESTAMP_INTEGER, f"timestamp {_short(s)} is not an integer (epoch seconds)"
    v = int(s)
    if v < 0:
        return TIMESTAMP_RANGE, f"timestamp {s} is negative"
    if v > MAX_ID:
        return TIMESTAMP_RANGE, f"timestamp {s} overflows a 64-bit integer"
    return None


def _check_fields(
    fields: Sequence[str | None], layout: _Layout, scale: RatingScale
) -> tuple[str, str] | None:
    """The first rule broken by one row's fields (strings, ``None`` for null), or ``None`` when it is valid."""
    ts = fields[3] if len(fields) > 3 else None
    return (
        _check_id("user", fields[0])
        or _check_id("item", fields[1])
        or _check_rating(fields[2], scale)
        or _check_ts(ts, layout.ts_mode)
    )


def _check_line(line: str, layout: _Layout, scale: RatingScale) -> tuple[str, str] | None:
    """The first rule broken by one data line of a text layout (not the header), or ``None``."""
    if _BLANK_RE.fullmatch(line):
        return BLANK_LINE, "blank line followed by more lines (only trailing blank lines are allowed)"
    if layout.header is not None and line.removeprefix(_BOM) == layout.header:
        return REPEATED_HEADER, f"the header {layout.header!r} appears again after line 1"
    fields = line.split(layout.sep)
    if len(fields) != layout.n_fields:
        sep = "tab" if layout.sep == "\t" else repr(layout.sep)
        return (
            FIELD_COUNT,
            f"expected {layout.n_fields} fields separated by {sep}, found {len(fields)} in {_short(line)}",
        )
    return _check_fields(fields, layout, scale)


# ----------------------------------------------------------------------------------------------------------
# File systems: pyarrow (pandas reader, detect_format, list_rating_files) and Hadoop through the JVM (Spark)
# ----------------------------------------------------------------------------------------------------------


class _FS(Protocol):
    def kind(self, path: str) -> str | None: ...  # "file", "dir" or None (missing)

    def children(self, path: str) -> list[tuple[str, bool]]: ...  # (base name, is_dir)

    def head(self, path: str, n: int) -> tuple[bytes, bool]: ...  # (first n bytes, whole file read)

    def tail(self, path: str, n: int) -> bytes: ...  # the last n bytes (fewer for a shorter file)


class _ArrowFS:
    """Local paths, ``file://`` and (when pyarrow has S3 support) ``s3://`` / ``s3a://`` through pyarrow."""

    @staticmethod
    def resolve(path: str) -> tuple[pafs.FileSystem, str]:
        if path.startswith("file:"):
            return pafs.LocalFileSystem(), urlparse(path).path
        if "://" in path:
            return pafs.FileSystem.from_uri(re.sub(r"^s3[an]://", "s3://", path))
        return pafs.LocalFileSystem(), os.path.abspath(path)

    def kind(self, path: str) -> str | None:
        fs, p = self.resolve(path)
        t = fs.get_file_info(p).type
        return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(t)

    def children(self, path: str) -> list[tuple[str, bool]]:
        fs, p = self.resolve(path)
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=False))
        return [(i.base_name, i.type == pafs.FileType.Directory) for i in infos]

    def head(self, path: str, n: int) -> tuple[bytes, bool]:
        fs, p = self.resolve(path)
        with fs.open_input_stream(p) as f:
            data = f.read(n + 1)
        return data[:n], len(data) <= n

    def tail(self, path: str, n: int) -> bytes:
        fs, p = self.resolve(path)
        with fs.open_input_file(p) as f:
            size = f.size()
            f.seek(max(0, size - n))
            return f.read()

    def chunks(self, path: str, size: int = _CHUNK_BYTES) -> Iterator[bytes]:
        fs, p = self.resolve(path)
        with fs.open_input_stream(p) as f:
            while buf := f.read(size):
                yield buf

    def read_parquet(self, path: str) -> pa.Table:
        fs, p = self.resolve(path)
        return pq.read_table(p, filesystem=fs)


class _HadoopFS:
    """Any Hadoop file system Spark can read (``file:``, ``s3a://``, ``hdfs://``), through the driver JVM."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm = spark._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        jp = self._jvm.org.apache.hadoop.fs.Path(path)
        return jp.getFileSystem(self._conf), jp

    def kind(self, path: str) -> str | None:
        fs, jp = self._fs(path)
        if not fs.exists(jp):
            return None
        return "dir" if fs.getFileStatus(jp).isDirectory() else "file"

    def children(self, path: str) -> list[tuple[str, bool]]:
        fs, jp = self._fs(path)
        return [(s.getPath().getName(), bool(s.isDirectory())) for s in fs.listStatus(jp)]

    def head(self, path: str, n: int) -> tuple[bytes, bool]:
        fs, jp = self._fs(path)
        size = int(fs.getFileStatus(jp).getLen())
        k = min(n, size)
        stream = fs.open(jp)
        try:
            data = bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, k)) if k else b""
        finally:
            stream.close()
        return data, size <= n

    def tail(self, path: str, n: int) -> bytes:
        fs, jp = self._fs(path)
        size = int(fs.getFileStatus(jp).getLen())
        k = min(n, size)
        stream = fs.open(jp)
        try:
            stream.seek(size - k)
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, k)) if k else b""
        finally:
            stream.close()

    def qualified(self, path: str) -> str:
        fs, jp = self._fs(path)
        return str(fs.makeQualified(jp).toUri().toString())


def _parquet_schema(fs: _FS, path: str) -> pa.Schema:
    """The Arrow schema of a Parquet file from its footer only (two small reads, any file system)."""
    end = fs.tail(path, 8)
    if len(end) < 8 or end[4:] != b"PAR1":
        raise RatingsFormatError(
            path, None, KNOWN_HEADER, "not a Parquet file (no PAR1 magic bytes at the end)"
        )
    size = int.from_bytes(end[:4], "little")
    footer = fs.tail(path, size + 8)
    return pq.read_schema(pa.BufferReader(b"PAR1" + footer))


def _list_files(fs: _FS, path: str) -> list[str]:
    kind = fs.kind(path)
    if kind is None:
        raise FileNotFoundError(f"no such ratings file or folder: {path}")
    if kind == "file":
        return [path]
    files = []
    for name, is_dir in sorted(fs.children(path)):
        if name.startswith((".", "_")):
            continue
        if is_dir:
            raise ValueError(f"{path} contains the sub-folder {name!r}: a ratings folder holds files only")
        files.append(path.rstrip("/") + "/" + name)
    if not files:
        raise FileNotFoundError(f"no rating files in folder {path}")
    return files


def _expand(fs: _FS, paths: str | Sequence[str]) -> list[str]:
    return list(_expand_entries(fs, paths))


def _expand_entries(fs: _FS, paths: str | Sequence[str]) -> dict[str, int]:
    """The files ``paths`` stand for, in order, each mapped to the position of the entry it came from."""
    items = [paths] if isinstance(paths, str) else list(paths)
    if not items:
        raise ValueError("no ratings paths given")
    files = [(f, k) for k, p in enumerate(items) for f in _list_files(fs, p)]
    out = dict(files)
    if len(out) != len(files):
        names = [f for f, _ in files]
        dup = sorted({f for f in names if names.count(f) > 1})
        raise ValueError(f"ratings file(s) listed more than once: {dup}")
    return out


def _head_layout(fs: _FS, path: str, fmt: str) -> _Layout:
    head, complete = fs.head(path, _HEAD_BYTES)
    if not complete and re.search(rb"\r|\n", head) is None and head[:4] != b"PAR1":
        head, complete = fs.head(path, _MAX_HEAD_BYTES)
    return _layout_from_head(path, head, complete, fmt)


def list_rating_files(path: str) -> list[str]:
    """The rating files ``path`` stands for: ``[path]`` for a file; for a folder its files sorted by name,
    skipping names that start with ``.`` or ``_`` (``_SUCCESS``, ``.crc``). A sub-folder is an error (no silent
    recursion); so is a missing path or a folder with no rating files."""
    return _list_files(_ArrowFS(), path)


def detect_format(path: str) -> str:
    """The format (one of :data:`FORMATS`) of a file, or of a folder's files (which must all agree).

    Raises :class:`RatingsFormatError` (rule ``known_header``) when a file is none of the known formats.
    """
    fs = _ArrowFS()
    fmts = {f: _head_layout(fs, f, "auto").fmt for f in _list_files(fs, path)}
    found = sorted(set(fmts.values()))
    if len(found) != 1:
        raise ValueError(f"{path} mixes ratings formats: {fmts}")
    return found[0]


# ----------------------------------------------------------------------------------------------------------
# pandas reader: pyarrow, vectorised
# ----------------------------------------------------------------------------------------------------------


def _pa_match(arr: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, _anchored(pattern)), False).to_numpy(
        zero_copy_only=False
    )


def _pa_digits(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(negative sign, number of significant digits, overflows 2**63-1) for integer literals."""
    neg = pc.fill_null(pc.starts_with(arr, "-"), False).to_numpy(zero_copy_only=False)
    digits = pc.utf8_ltrim(pc.utf8_ltrim(arr, "+-"), "0")
    nd = pc.fill_null(pc.utf8_length(digits), 0).to_numpy(zero_copy_only=False)
    big = pc.fill_null(pc.greater(digits, pa.scalar(str(MAX_ID), digits.type)), False)
    over = (nd > 19) | ((nd == 19) & big.to_numpy(zero_copy_only=False))
    return neg, nd, over


def _pa_int(arr: pa.Array) -> pa.Array:
    return pc.cast(pc.utf8_ltrim(arr, "+"), pa.int64())


def _pa_ok_and_values(
    fields: Sequence[pa.Array], layout: _Layout, scale: RatingScale
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Vectorised rules for rows of fields (string arrays, nullable): the ok mask; when every row is ok, the
    parsed columns too."""
    ok = np.ones(len(fields[0]), dtype=bool)
    for col in fields[:2]:
        neg, nd, over = _pa_digits(col)
        ok &= _pa_match(col, _INT) & ~neg & (nd >= 1) & ~over
    r = fields[2]
    num = _pa_match(r, _NUM) & ~_pa_match(r, _NONFINITE)
    rv = pc.cast(pc.if_else(pa.array(num), r, pa.scalar("nan", r.type)), pa.float64()).to_numpy(
        zero_copy_only=False
    )
    with np.errstate(invalid="ignore"):
        d = rv - scale.low
        ok &= (
            num
            & np.isfinite(rv)
            & (rv >= scale.low - TOLERANCE)
            & (rv <= scale.high + TOLERANCE)
            & (np.abs(d - np.rint(d / scale.step) * scale.step) <= TOLERANCE)
        )
    ts_present = None
    if layout.ts_mode != _TS_ABSENT:
        t = fields[3]
        neg, nd, over = _pa_digits(t)
        valid = _pa_match(t, _INT) & (~neg | (nd == 0)) & ~over
        if layout.ts_mode == _TS_OPTIONAL:
            ts_present = pc.fill_null(pc.not_equal(t, pa.scalar("", t.type)), False).to_numpy(
                zero_copy_only=False
            )
            ok &= valid | ~ts_present
        else:
            ts_present = np.ones(len(t), dtype=bool)
            ok &= valid
    if not ok.all():
        return ok, None
    values = {
        USER: _pa_int(fields[0]).to_numpy(zero_copy_only=False),
        ITEM: _pa_int(fields[1]).to_numpy(zero_copy_only=False),
        RATING: rv,
    }
    if ts_present is not None:
        t = fields[3]
        tv = np.zeros(len(t), dtype=np.int64)
        if ts_present.any():
            tv[ts_present] = _pa_int(t.filter(pa.array(ts_present))).to_numpy(zero_copy_only=False)
        values[TS] = tv
        values["_ts_valid"] = ts_present
    return ok, values


def _split_lines(data: bytes) -> pa.Array:
    """Lines of a byte block that ends at a line terminator (or at the end of the file)."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))


def _iter_line_blocks(chunks: Iterator[bytes]) -> Iterator[pa.Array]:
    """Blocks of complete lines, cut after a LF so that no CRLF pair is split."""
    carry = b""
    for buf in chunks:
        data = carry + buf
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        yield _split_lines(data[: cut + 1])
    if carry:
        yield _split_lines(carry)


@dataclass
class _Columns:
    """Parsed columns accumulated over chunks and files."""

    users: list[np.ndarray]
    items: list[np.ndarray]
    ratings: list[np.ndarray]
    ts: list[np.ndarray]
    ts_valid: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Columns:
        return cls([], [], [], [], [])

    def add(self, values: dict[str, np.ndarray], n: int) -> None:
        self.users.append(values[USER])
        self.items.append(values[ITEM])
        self.ratings.append(values[RATING])
        self.ts.append(values.get(TS, np.zeros(n, dtype=np.int64)))
        self.ts_valid.append(values.get("_ts_valid", np.zeros(n, dtype=bool)))

    def frame(self) -> pd.DataFrame:
        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

        ts = cat(self.ts, np.int64)
        valid = cat(self.ts_valid, bool)
        return pd.DataFrame(
            {
                USER: cat(self.users, np.int64),
                ITEM: cat(self.items, np.int64),
                RATING: cat(self.ratings, np.float64),
                TS: pd.arrays.IntegerArray(ts, ~valid),
            }
        )


def _read_text_pandas(fs: _ArrowFS, path: str, layout: _Layout, scale: RatingScale, out: _Columns) -> None:
    """Validate and parse one text file chunk by chunk; raise at its first bad line."""
    line_no = 0  # lines before the current block
    pending_blank: int | None = None  # first blank line with no non-blank line after it (yet)
    for lines in _iter_line_blocks(fs.chunks(path)):
        n = len(lines)
        blank = _pa_match(lines, _BLANK)
        nonblank_idx = np.flatnonzero(~blank)
        if pending_blank is not None and nonblank_idx.size:
            raise RatingsFormatError(path, pending_blank, *_check_line("", layout, scale))
        is_data = ~blank
        if line_no == 0 and layout.header is not None:
            first = lines[0].as_py().removeprefix(_BOM)
            if first != layout.header:  # the file changed since its head was read
                raise RatingsFormatError(
                    path, 1, KNOWN_HEADER, f"expected {layout.header!r}, found {_short(first)}"
                )
            is_data[0] = False
        candidates = []
        if nonblank_idx.size:
            middle_blank = np.flatnonzero(blank[: nonblank_idx[-1]])
            if middle_blank.size:
                candidates.append(int(middle_blank[0]))
        data_idx = np.flatnonzero(is_data)
        data = lines.take(pa.array(data_idx))
        parts = pc.split_pattern(data, layout.sep)
        good = pc.equal(pc.list_value_length(parts), layout.n_fields).to_numpy(zero_copy_only=False)
        if layout.header is not None:
            body = pc.replace_substring_regex(data, "^" + _BOM, "")
            good &= ~pc.equal(body, pa.scalar(layout.header, body.type)).to_numpy(zero_copy_only=False)
        if not good.all():
            candidates.append(int(data_idx[np.argmin(good)]))
        values = None
        if data_idx.size and good.all():
            fields = [pc.list_element(parts, j) for j in range(layout.n_fields)]
            ok, values = _pa_ok_and_values(fields, layout, scale)
            if values is None:
                candidates.append(int(data_idx[np.argmin(ok)]))
        if candidates:
            i = min(candidates)
            text = lines[i].as_py()
            found = _check_line(text, layout, scale)
            if found is None:
                raise RuntimeError(
                    f"internal: vectorised and scalar rules disagree on {path} line {line_no + i + 1}"
                )
            raise RatingsFormatError(path, line_no + i + 1, *found)
        if values is not None:
            out.add(values, len(data_idx))
        if pending_blank is None and blank.any():
            trailing = np.flatnonzero(blank[nonblank_idx[-1] + 1 :] if nonblank_idx.size else blank)
            if trailing.size:
                start = nonblank_idx[-1] + 1 if nonblank_idx.size else 0
                pending_blank = line_no + start + int(trailing[0]) + 1
        line_no += n


def _arrow_strings(col: pa.ChunkedArray) -> pa.Array:
    """A Parquet column as strings, the form the rules are written for (float32 widened to float64 first)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_float32(arr.type) or pa.types.is_float16(arr.type):
        arr = pc.cast(arr, pa.float64())
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.large_string())


def _read_parquet_pandas(fs: _ArrowFS, path: str, scale: RatingScale, out: _Columns) -> None:
    table = fs.read_parquet(path)
    layout = _parquet_layout(path, table.column_names, "")
    fields = [_arrow_strings(table.column(c)) for c in layout.columns]
    if table.num_rows == 0:
        return
    ok, values = _pa_ok_and_values(fields, layout, scale)
    if values is None:
        i = int(np.argmin(ok))
        row = [f[i].as_py() for f in fields]
        found = _check_fields(row, layout, scale)
        if found is None:
            raise RuntimeError(f"internal: vectorised and scalar rules disagree on {path} row {i + 1}")
        raise RatingsFormatError(path, i + 1, *found, unit="row")
    out.add(values, table.num_rows)


def read_ratings_pandas(
    paths: str | Sequence[str], scale: RatingScale = HALF_STAR, fmt: str = "auto"
) -> pd.DataFrame:
    """Read and validate ratings without Spark: columns ``user int64, item int64, rating float64, ts Int64``.

    Same formats, rules and errors as :func:`read_ratings`; the first bad line of the first bad file (in the
    order given, a folder's files by name) is reported. Text is read in chunks with pyarrow and checked
    vectorised; the result is held in memory.
    """
    fs = _ArrowFS()
    out = _Columns.empty()
    for path in _expand(fs, paths):
        layout = _head_layout(fs, path, fmt)
        if layout.is_text:
            _read_text_pandas(fs, path, layout, scale, out)
        else:
            _read_parquet_pandas(fs, path, scale, out)
    return out.frame()


# ----------------------------------------------------------------------------------------------------------
# Spark reader: column expressions in the JVM, one validating aggregation
# ----------------------------------------------------------------------------------------------------------


def _sql_str(text: str) -> str:
    """A Spark SQL raw string literal (the patterns and headers used here contain no quote)."""
    assert "'" not in text
    return f"r'{text}'"


def _sql_double(x: float) -> str:
    return f"CAST('{x!r}' AS DOUBLE)"


def _rlike(col: str, pattern: str) -> str:
    return f"({col} RLIKE {_sql_str(_anchored(pattern))})"


def _value_items(layout: _Layout, scale: RatingScale, lexical: str) -> list[str]:
    """Select items (Spark SQL, using lateral column aliases so that each value is computed once) that turn
    the string fields ``_f0.._f3`` into ``_u, _i, _r, _t`` and ``_ok``: the Spark form of the rules.

    ``lexical`` is a condition that already checks the literals (integer/decimal syntax, field count); what is
    left are the ranges: ids >= 1 (``try_cast`` gives null on 64-bit overflow), the scale and its steps (an
    overflowing literal parses as infinity and fails the range), timestamps >= 0. ``_ok`` is never null.
    """
    lo, hi = _sql_double(scale.low - TOLERANCE), _sql_double(scale.high + TOLERANCE)
    low, step, tol = _sql_double(scale.low), _sql_double(scale.step), _sql_double(TOLERANCE)
    items = [
        "try_cast(_f0 AS BIGINT) AS _u",
        "try_cast(_f1 AS BIGINT) AS _i",
        "try_cast(_f2 AS DOUBLE) AS _r",
    ]
    conds = [
        lexical,
        "_u >= 1",
        "_i >= 1",
        f"_r >= {lo}",
        f"_r <= {hi}",
        f"abs((_r - {low}) - rint((_r - {low}) / {step}) * {step}) <= {tol}",
    ]
    if layout.ts_mode == _TS_ABSENT:
        items.append("CAST(NULL AS BIGINT) AS _t")
    elif layout.ts_mode == _TS_REQUIRED:
        items.append("try_cast(_f3 AS BIGINT) AS _t")
        conds.append("_t >= 0")
    else:
        items.append("CASE WHEN _f3 = '' THEN CAST(NULL AS BIGINT) ELSE try_cast(_f3 AS BIGINT) END AS _t")
        conds.append("(_f3 IS NULL OR _f3 = '' OR _t >= 0)")
    items.append(f"coalesce({' AND '.join(f'({c})' for c in conds)}, false) AS _ok")
    return items


def _line_pattern(layout: _Layout) -> str:
    """One regex for a whole data line: the field literals joined by the separator (so also the field count)."""
    sep = r"\t" if layout.sep == "\t" else re.escape(layout.sep)
    fields = [_INT, _INT, _NUM]
    if layout.ts_mode == _TS_REQUIRED:
        fields.append(_INT)
    elif layout.ts_mode == _TS_OPTIONAL:
        fields.append(f"(?:{_INT})?")
    return sep.join(f"(?:{f})" for f in fields)


def _text_fields(layout: _Layout) -> list[str]:
    """SQL extracting the fields of a line that matched :func:`_line_pattern` (byte-level, no regex split)."""
    sep = "'\\t'" if layout.sep == "\t" else f"'{layout.sep}'"
    first = f"substring_index(value, {sep}, 1)"
    second = f"substring_index(substring_index(value, {sep}, 2), {sep}, -1)"
    last = f"substring_index(value, {sep}, -1)"
    if layout.n_fields == 3:
        return [first, second, last]
    third = f"substring_index(substring_index(value, {sep}, -2), {sep}, 1)"
    return [first, second, third, last]


_GUARD = (
    "raise_error('ratings changed after validation: a row read now no longer passes the rules of "
    "streamrec.loader')"
)
_OUTPUT = [
    f"coalesce(CASE WHEN _ok THEN _u ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {USER}",
    f"coalesce(CASE WHEN _ok THEN _i ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {ITEM}",
    f"coalesce(CASE WHEN _ok THEN _r ELSE {_GUARD} END, CAST(0 AS DOUBLE)) AS {RATING}",
    f"CAST(CASE WHEN _ok THEN _t ELSE {_GUARD} END AS BIGINT) AS {TS}",
]


@dataclass
class _Group:
    """One Spark read of files sharing a layout: per-file(/split) aggregates, annotated rows, guarded output."""

    layout: _Layout
    files: list[str]
    stats: DataFrame
    annotated: DataFrame
    data: DataFrame


def _spark_escape(path: str) -> str:
    """Escape Hadoop glob characters so a path is read literally."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def _text_group(spark: SparkSession, layout: _Layout, files: list[str], scale: RatingScale) -> _Group:
    from pyspark.sql import functions as F

    raw = spark.read.text([_spark_escape(f) for f in files])
    hdr = "false"
    if layout.header is not None:
        hdr = f"(value = {_sql_str(layout.header)} OR value = {_sql_str(_BOM + layout.header)})"
    lines = [
        "value",
        f"{_rlike('value', _line_pattern(layout))} AS _lex",
        f"(NOT _lex AND {_rlike('value', _BLANK)}) AS _blank",
        f"(NOT _lex AND {hdr}) AS _hdr",
        *[f"{x} AS _f{j}" for j, x in enumerate(_text_fields(layout))],
        *_value_items(layout, scale, "_lex"),
    ]
    meta = [
        "_metadata.file_path AS _file",
        "_metadata.file_block_start AS _block",
        "monotonically_increasing_id() AS _m",
    ]
    annotated = raw.selectExpr(*meta, *lines)
    bad = "(NOT _blank AND NOT _hdr AND NOT _ok)"
    stats = annotated.groupBy("_file", "_block").agg(
        *[
            F.expr(e)
            for e in (
                "count(1) AS n",
                "min(_m) AS m0",
                "max(CASE WHEN NOT _blank THEN _m END) AS last_nonblank",
                "min(CASE WHEN _blank THEN _m END) AS first_blank",
                "sum(CAST(_hdr AS BIGINT)) AS n_hdr",
                "min(CASE WHEN _hdr THEN _m END) AS hdr_min",
                "max(CASE WHEN _hdr THEN _m END) AS hdr_max",
                f"sum(CAST({bad} AS BIGINT)) AS n_bad",
                f"min(CASE WHEN {bad} THEN _m END) AS bad_m",
            )
        ]
    )
    data = annotated.where("NOT _blank AND NOT _hdr").selectExpr(*_OUTPUT, "_file")
    return _Group(layout, files, stats, annotated, data)


def _parquet_group(spark: SparkSession, layout: _Layout, files: list[str], scale: RatingScale) -> _Group:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    reader = spark.read if layout.ddl is None else spark.read.schema(layout.ddl)
    raw = reader.parquet(*[_spark_escape(f) for f in files])
    types = {f.name: f.dataType for f in raw.schema.fields}

    def as_string(name: str) -> str:
        c = f"`{name}`"
        if isinstance(types[name], T.FloatType):
            c = f"CAST({c} AS DOUBLE)"
        return f"CAST({c} AS STRING)"

    fields = [f"{as_string(c)} AS _f{j}" for j, c in enumerate(layout.columns)]
    lexical = [_rlike("_f0", _INT), _rlike("_f1", _INT), _rlike("_f2", _NUM)]
    if layout.ts_mode == _TS_OPTIONAL:
        lexical.append(f"(_f3 IS NULL OR _f3 = '' OR {_rlike('_f3', _INT)})")
    items = [*fields, *_value_items(layout, scale, " AND ".join(lexical))]
    annotated = raw.selectExpr("_metadata.file_path AS _file", "_metadata.row_index AS _row", *items)
    stats = annotated.groupBy("_file").agg(
        F.expr("sum(CAST(NOT _ok AS BIGINT)) AS n_bad"),
        F.expr("min(CASE WHEN NOT _ok THEN _row END) AS bad_row"),
    )
    data = annotated.selectExpr(*_OUTPUT, "_file")
    return _Group(layout, files, stats, annotated, data)


def _norm_uri(uri: str) -> str:
    return re.sub(r"^file:/+", "/", uri)


def _text_error(
    group: _Group, path: str, spark_file: str, blocks: list[Any], scale: RatingScale
) -> RatingsFormatError | None:
    """The first bad line of one text file from its per-split aggregates (see the module docstring)."""
    from pyspark.sql import functions as F

    layout = group.layout
    blocks = sorted(blocks, key=lambda b: b["_block"])
    first_line, seen = {}, 0
    for b in blocks:
        first_line[b["_block"]] = seen + 1
        seen += b["n"]

    def line(b: Any, m: int) -> int:
        return first_line[b["_block"]] + (m - b["m0"])

    # candidates: (line, kind, split, id)
    candidates: list[tuple[int, str, Any, int]] = []
    for b in blocks:
        if b["n_bad"]:
            candidates.append((line(b, b["bad_m"]), "row", b, b["bad_m"]))
    nonblank = [line(b, b["last_nonblank"]) for b in blocks if b["last_nonblank"] is not None]
    blanks = [(line(b, b["first_blank"]), b) for b in blocks if b["first_blank"] is not None]
    if blanks and nonblank:
        n_blank, b_blank = min(blanks, key=lambda x: x[0])
        if n_blank < max(nonblank):
            candidates.append((n_blank, BLANK_LINE, b_blank, 0))
    if layout.header is not None:
        b0 = blocks[0]
        if b0["_block"] != 0 or b0["hdr_min"] != b0["m0"]:
            return RatingsFormatError(path, 1, KNOWN_HEADER, f"line 1 is not the header {layout.header!r}")
        for b in blocks[1:]:
            if b["n_hdr"]:
                candidates.append((line(b, b["hdr_min"]), REPEATED_HEADER, b, 0))
        if b0["n_hdr"] == 2:
            candidates.append((line(b0, b0["hdr_max"]), REPEATED_HEADER, b0, 0))
        elif b0["n_hdr"] > 2:  # the second header of the first split: one filtered job
            second = (
                group.annotated.where(
                    (F.col("_file") == spark_file)
                    & (F.col("_block") == 0)
                    & F.col("_hdr")
                    & (F.col("_m") > b0["hdr_min"])
                )
                .agg(F.min("_m"))
                .first()[0]
            )
            candidates.append((line(b0, second), REPEATED_HEADER, b0, 0))
    if not candidates:
        return None
    n, kind, b, m = min(candidates, key=lambda c: c[0])
    if kind == BLANK_LINE:
        text = ""
    elif kind == REPEATED_HEADER:
        text = layout.header or ""
    else:  # the bad line's text: one filtered job (only when a file is bad)
        found_rows = (
            group.annotated.where(
                (F.col("_file") == spark_file) & (F.col("_block") == b["_block"]) & (F.col("_m") == m)
            )
            .select("value")
            .collect()
        )
        if len(found_rows) != 1:
            raise RuntimeError(f"internal: could not read back {path} line {n} (did the file change?)")
        text = found_rows[0][0]
    found = _check_line(text, layout, scale)
    if found is None:
        raise RuntimeError(f"internal: Spark and scalar rules disagree on {path} line {n}: {text!r}")
    return RatingsFormatError(path, n, *found)


def _parquet_error(
    group: _Group, path: str, spark_file: str, stats: Any, scale: RatingScale
) -> RatingsFormatError | None:
    from pyspark.sql import functions as F

    if not stats["n_bad"]:
        return None
    row = stats["bad_row"]
    k = group.layout.n_fields
    got = (
        group.annotated.where((F.col("_file") == spark_file) & (F.col("_row") == row))
        .select(*[f"_f{j}" for j in range(k)])
        .collect()
    )
    if len(got) != 1:
        raise RuntimeError(f"internal: could not read back {path} row {row + 1} (did the file change?)")
    found = _check_fields(list(got[0]), group.layout, scale)
    if found is None:
        raise RuntimeError(f"internal: Spark and scalar rules disagree on {path} row {row + 1}: {got[0]}")
    return RatingsFormatError(path, row + 1, *found, unit="row")


def read_ratings(
    spark: SparkSession,
    paths: str | Sequence[str],
    scale: RatingScale = HALF_STAR,
    fmt: str = "auto",
    source: str | None = None,
) -> DataFrame:
    """Read and validate ratings with Spark; returns a lazy DataFrame with ``schema.RATINGS_SCHEMA``.

    ``paths``: files and/or folders (a folder = its rating files, see :func:`list_rating_files`), local,
    ``file://`` or any Hadoop file system Spark is configured for (``s3a://``). Validation runs now, as one
    Spark aggregation per layout (usually one); on a broken rule :class:`RatingsFormatError` names the first bad
    line of the first bad file (in the order given). The returned DataFrame re-reads the files when used (cache
    it if it is used more than once) and fails loudly if a row no longer passes the rules.

    ``source``: the name of an extra ``int`` column giving, for each row, the position in ``paths`` of the entry
    it was read from (a batch of partitions read and validated in one job, then told apart).
    """
    fs: _FS = _HadoopFS(spark) if getattr(spark, "_jvm", None) is not None else _ArrowFS()
    entries = _expand_entries(fs, paths)
    files = list(entries)
    layouts: dict[str, _Layout] = {}
    for f in files:
        layout = _head_layout(fs, f, fmt)
        if not layout.is_text:
            sch = _parquet_schema(fs, f)
            layout = _parquet_layout(f, sch.names, sch.to_string(show_schema_metadata=False), _spark_ddl(sch))
        layouts[f] = layout
    by_layout: dict[_Layout, list[str]] = {}
    for f in files:
        by_layout.setdefault(layouts[f], []).append(f)
    groups = [
        (_text_group if layout.is_text else _parquet_group)(spark, layout, group_files, scale)
        for layout, group_files in by_layout.items()
    ]
    if isinstance(fs, _HadoopFS):
        names = {_norm_uri(fs.qualified(f)): f for f in files}
    else:
        names = {_norm_uri(_ArrowFS.resolve(f)[1]): f for f in files}

    # one aggregation job for all groups; then, in file order, the first file with a problem (extra jobs only then)
    found: dict[str, tuple[_Group, str, list[Any]]] = {}
    if groups:
        stats = reduce(
            lambda a, b: a.unionByName(b, allowMissingColumns=True),
            [g.stats.selectExpr(f"{k} AS _group", "*") for k, g in enumerate(groups)],
        )
        for row in stats.collect():
            path = names.get(_norm_uri(row["_file"]), row["_file"])
            found.setdefault(path, (groups[row["_group"]], row["_file"], []))[2].append(row)
    for f in files:
        if f not in found:
            continue
        group, spark_file, rows = found[f]
        if group.layout.is_text:
            err = _text_error(group, f, spark_file, rows, scale)
        else:
            err = _parquet_error(group, f, spark_file, rows[0], scale)
        if err is not None:
            raise err
    from pyspark.sql import functions as F

    if not groups:
        empty = spark.createDataFrame([], RATINGS_SCHEMA)
        return empty if source is None else empty.withColumn(source, F.lit(None).cast("int"))
    data = reduce(lambda a, b: a.unionByName(b), [g.data for g in groups])
    if source is not None:
        # Spark's name of each file (as its _metadata reports it) -> the entry of ``paths`` it came from
        seen = {spark_file: path for path, (_, spark_file, _) in found.items() if path in entries}
        if len(seen) != len(found):
            raise RuntimeError(
                f"internal: Spark read files not asked for: {sorted(set(found) - set(entries))}"
            )
        origin = [x for spark_file, f in seen.items() for x in (F.lit(spark_file), F.lit(entries[f]))]
        data = data.withColumn(source, F.create_map(*origin)[F.col("_file")].cast("int"))
    return data.drop("_file")

"""The rules of a ratings file, in one place: MovieLens ``ratings.csv``, MovieLens 100k ``u.data``, plain CSV and Parquet.

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

The rules are written here once (names, headers, literals, ranges, the scalar check that produces the rule and the
message); the readers apply them: a vectorised pyarrow check (``storage.ratings.read_ratings_pandas``), a Spark
column expression (``spark.ratings.read_ratings``) and the data contract's line-numbered parser
(``pipeline.contract``), kept in step by the tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from streamrec.core.schema import ITEM, RATING, USER, RatingScale

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
INT = r"[+-]?[0-9]+"
NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NONFINITE = r"[+-]?(?:[nN][aA][nN]|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
BLANK = r"[ \t]*"
INT_RE, NUM_RE, NONFINITE_RE, BLANK_RE = (re.compile(p) for p in (INT, NUM, NONFINITE, BLANK))


def anchored(pattern: str) -> str:
    return rf"^(?:{pattern})\z"


BOM = "\ufeff"
HIDDEN_PREFIXES = (".", "_")
"""A file or folder whose name starts with one of these is not data (``_SUCCESS``, ``.crc``, ``.DS_Store``, Spark's
``_temporary/``): a folder's hidden files are skipped, a hidden name in ``ratings/incoming/`` is not a partition."""
FILE_TYPE = "text_or_parquet"
"""The data contract's file-level rule: UTF-8 text without NUL bytes, or Parquet (binary garbage and the
compressed formats below fail it)."""
COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
)
"""Magic bytes of the compressed formats a user is likely to drop (named as such, not as "binary data")."""
HEAD_BYTES = 8192
MAX_HEAD_BYTES = 1 << 20
TS_REQUIRED, TS_OPTIONAL, TS_ABSENT = "required", "optional", "absent"


def is_hidden(name: str) -> bool:
    """True for a hidden file or folder name (see :data:`HIDDEN_PREFIXES`)."""
    return name.startswith(HIDDEN_PREFIXES)


def compressed_as(data: bytes) -> str | None:
    """What compressed format ``data`` (a file's first bytes) is, by its magic bytes, or ``None``."""
    for magic, what in COMPRESSED_MAGIC:
        if data.startswith(magic):
            return what
    return None


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
class Layout:
    """How to read one file: ``fmt``; for text, separator and header; for Parquet, the source columns."""

    fmt: str
    sep: str = ","
    header: str | None = None
    n_fields: int = 4
    ts_mode: str = TS_REQUIRED
    columns: tuple[str, ...] = ()  # parquet: user, item, rating[, timestamp] column names in the file
    schema_key: str = ""  # parquet: files are read together only when their schemas are identical
    ddl: str | None = None  # parquet: the Spark schema, when the types map simply (saves an inference job)

    @property
    def is_text(self) -> bool:
        return self.fmt != "parquet"


MOVIELENS = Layout("movielens", ",", MOVIELENS_HEADER, 4, TS_REQUIRED)
UDATA = Layout("udata", "\t", None, 4, TS_REQUIRED)
CSV_TS = Layout("csv", ",", CSV_HEADER_TS, 4, TS_OPTIONAL)
CSV = Layout("csv", ",", CSV_HEADER, 3, TS_ABSENT)
HEADER_LAYOUTS = {MOVIELENS_HEADER: MOVIELENS, CSV_HEADER_TS: CSV_TS, CSV_HEADER: CSV}


def first_line(head: bytes, complete: bool) -> str | None:
    """The first line of ``head`` (BOM removed), ``None`` for an empty file; ``complete``: head is the file."""
    m = re.search(rb"\r\n|\r|\n", head)
    if m is None and not complete:
        raise ValueError("first line too long")
    raw = head[: m.start()] if m else head
    if not raw and not m:
        return None
    return raw.decode("utf-8", "replace").removeprefix(BOM)


def header_hint(first: str) -> str:
    """Why a first line is not a known header, when it can be told (quotes, delimiter, order, missing
    columns); ``""`` otherwise."""
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


def layout_from_head(path: str, head: bytes, complete: bool, fmt: str) -> Layout:
    """Decide the layout of one file from its first bytes, or raise ``known_header``."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown ratings format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if head[:4] == b"PAR1" and fmt in ("auto", "parquet"):
        return Layout("parquet")
    if fmt == "parquet":
        raise RatingsFormatError(path, None, KNOWN_HEADER, "not a Parquet file (no PAR1 magic bytes)")
    try:
        line = first_line(head, complete)
    except ValueError:
        raise RatingsFormatError(
            path, 1, KNOWN_HEADER, f"line 1 is longer than {len(head)} bytes: not a ratings file"
        ) from None
    if line is None:
        if fmt == "udata":
            return UDATA
        raise RatingsFormatError(path, 1, KNOWN_HEADER, "the file is empty: no header")
    known = HEADER_LAYOUTS.get(line)
    if fmt == "auto":
        if known is not None:
            return known
        if "\t" in line:
            if not INT_RE.fullmatch(line.split("\t")[0]):
                raise RatingsFormatError(
                    path,
                    1,
                    KNOWN_HEADER,
                    f"{short(line)} is tab separated but not a u.data line (u.data has no header; a "
                    f"tab-separated header is not supported: use {CSV_HEADER_TS!r})",
                )
            return UDATA
        if not line.strip():
            raise RatingsFormatError(path, 1, KNOWN_HEADER, "line 1 is blank: no header")
        raise RatingsFormatError(
            path,
            1,
            KNOWN_HEADER,
            f"{short(line)} is not a known header ({CSV_HEADER_TS!r}, {CSV_HEADER!r} or {MOVIELENS_HEADER!r}) "
            f"nor a tab-separated u.data line{header_hint(line)}",
        )
    if fmt == "udata":
        return UDATA
    if fmt == "movielens":
        if known is MOVIELENS:
            return known
        raise RatingsFormatError(
            path, 1, KNOWN_HEADER, f"format movielens needs header {MOVIELENS_HEADER!r}, found {short(line)}"
        )
    if known is CSV_TS or known is CSV:
        return known
    raise RatingsFormatError(
        path,
        1,
        KNOWN_HEADER,
        f"format csv needs header {CSV_HEADER_TS!r} or {CSV_HEADER!r}, found {short(line)}",
    )


def parquet_layout(path: str, names: Sequence[str], schema_key: str = "", ddl: str | None = None) -> Layout:
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
        missing = [c for c in (USER, ITEM, RATING) if c not in cols]
        hint = f"; missing column(s) {', '.join(missing)}" if missing else ""
        raise RatingsFormatError(
            path,
            None,
            KNOWN_HEADER,
            f"Parquet columns {one_line(repr(cols[:8]))} are not user, item, rating[, timestamp|ts]{hint}",
        )
    ts = tuple(ts_cols)
    return Layout(
        "parquet",
        n_fields=3 + len(ts),
        ts_mode=TS_OPTIONAL if ts else TS_ABSENT,
        columns=(USER, ITEM, RATING, *ts),
        schema_key=schema_key,
        ddl=ddl,
    )


SPARK_TYPES = {
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


def spark_ddl(schema: pa.Schema) -> str | None:
    """The Spark DDL for a Parquet file's Arrow schema when every type maps one to one, else ``None``."""
    parts = []
    for f in schema:
        t = SPARK_TYPES.get(f.type)
        if t is None or "`" in f.name:
            return None
        parts.append(f"`{f.name}` {t}")
    return ", ".join(parts)


def short(text: str, n: int = 60) -> str:
    """``repr`` of ``text``, cut after ``n`` characters, on one line."""
    return one_line(repr(text if len(text) <= n else text[:n] + "..."))


def one_line(text: str) -> str:
    """``text`` with every control or line-breaking character escaped (messages are one line)."""
    return re.sub(
        r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: m.group().encode("unicode_escape").decode(), text
    )


# ----------------------------------------------------------------------------------------------------------
# The rules, scalar (authoritative: produces the rule and the message)
# ----------------------------------------------------------------------------------------------------------


def check_id(name: str, s: str | None) -> tuple[str, str] | None:
    if s is None:
        return ID_INTEGER, f"{name} is null"
    if not INT_RE.fullmatch(s):
        return ID_INTEGER, f"{name} {short(s)} is not an integer"
    if not 1 <= int(s) <= MAX_ID:
        return ID_RANGE, f"{name} {s} is not in 1..{MAX_ID}"
    return None


def check_rating(s: str | None, scale: RatingScale) -> tuple[str, str] | None:
    if s is None:
        return RATING_NUMBER, "rating is null"
    if NONFINITE_RE.fullmatch(s):
        return RATING_FINITE, f"rating {s} is not a finite number"
    if not NUM_RE.fullmatch(s):
        return RATING_NUMBER, f"rating {short(s)} is not a number"
    r = float(s)
    if not math.isfinite(r):
        return RATING_FINITE, f"rating {s} is not a finite number"
    if not (scale.low - TOLERANCE <= r <= scale.high + TOLERANCE):
        return RATING_ON_SCALE, f"rating {s} is outside [{scale.low:g}, {scale.high:g}]"
    if abs((r - scale.low) - round((r - scale.low) / scale.step) * scale.step) > TOLERANCE:
        return RATING_ON_STEP, f"rating {s} is not on the scale's {scale.step:g} steps from {scale.low:g}"
    return None


def check_ts(s: str | None, ts_mode: str) -> tuple[str, str] | None:
    if ts_mode == TS_ABSENT or (ts_mode == TS_OPTIONAL and (s is None or s == "")):
        return None
    if s is None:
        return TIMESTAMP_INTEGER, "timestamp is null"
    if not INT_RE.fullmatch(s):
        return TIMESTAMP_INTEGER, f"timestamp {short(s)} is not an integer (epoch seconds)"
    v = int(s)
    if v < 0:
        return TIMESTAMP_RANGE, f"timestamp {s} is negative"
    if v > MAX_ID:
        return TIMESTAMP_RANGE, f"timestamp {s} overflows a 64-bit integer"
    return None


def check_fields(fields: Sequence[str | None], layout: Layout, scale: RatingScale) -> tuple[str, str] | None:
    """The first rule broken by one row's fields (strings, ``None`` for null), or ``None`` when it is valid."""
    ts = fields[3] if len(fields) > 3 else None
    return (
        check_id("user", fields[0])
        or check_id("item", fields[1])
        or check_rating(fields[2], scale)
        or check_ts(ts, layout.ts_mode)
    )


def field_count_detail(layout: Layout, found: int, line: str) -> str:
    sep = "tab" if layout.sep == "\t" else repr(layout.sep)
    return f"expected {layout.n_fields} fields separated by {sep}, found {found} in {short(line)}"


def check_line(line: str, layout: Layout, scale: RatingScale) -> tuple[str, str] | None:
    """The first rule broken by one data line of a text layout (not the header), or ``None``."""
    if BLANK_RE.fullmatch(line):
        return BLANK_LINE, "blank line followed by more lines (only trailing blank lines are allowed)"
    if layout.header is not None and line.removeprefix(BOM) == layout.header:
        return REPEATED_HEADER, f"the header {layout.header!r} appears again after line 1"
    fields = line.split(layout.sep)
    if len(fields) != layout.n_fields:
        return FIELD_COUNT, field_count_detail(layout, len(fields), line)
    return check_fields(fields, layout, scale)

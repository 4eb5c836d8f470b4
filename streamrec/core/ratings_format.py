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

A header may name its columns in any order (``item,user,rating``: the values are read by name); the two
vocabularies are not mixed. Auto detection: the Parquet magic ``PAR1`` means Parquet; a first line naming one
of the headers above means that format; a first line containing a tab and starting with an integer means
``udata``; anything else is an error (rule ``known_header``). A leading UTF-8 byte order mark is ignored. A
folder stands for its files (not sub-folders; hidden names, :data:`HIDDEN_PREFIXES`, such as ``_SUCCESS`` are
skipped); the files of one call may mix formats.

Compression: a text file that starts with the gzip or bzip2 magic bytes (:mod:`streamrec.core.compression`) is
read decompressed, whatever its name; other compressed formats (ZIP, xz, zstd) and compressed Parquet are refused
(rule ``text_or_parquet``).

Lines end with LF, CRLF or a lone CR (the same three terminators as Spark's text reader), so no ``\\r`` ever
reaches a value. Blank lines (only spaces and tabs) are skipped wherever they are, also before the header (the
header is the first non-blank line), as pandas and Spark skip them; they keep their line numbers. Fields are
split on the separator with RFC 4180 quoting: a field may be enclosed in double quotes (``"4.5"``, as
``csv.QUOTE_ALL`` writes), a double quote inside a quoted field is doubled (``""``); a quoted field never spans
lines. No trimming of spaces.

Rules, checked in this order for each line/row (the first failing rule is reported):

``known_header``     line 1 is the header the format requires (Parquet: the column names are the known ones).
``repeated_header``  the header appears again after line 1 (e.g. concatenated CSV files).
``csv_quoting``      the double quotes of the line follow RFC 4180 (no quote inside an unquoted field, nothing
                     after a closing quote but the separator, every quoted field closed on its line).
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

The rules are written here once (names, headers, literals, quoting, ranges, hidden names, the scalar check that
produces the rule and the message); the readers apply them: a vectorised pyarrow check
(:mod:`streamrec.core.ratings_arrow`, used by ``storage.ratings.read_ratings_pandas`` and by the data contract's
line-numbered parser ``pipeline.contract.parse``) and a Spark column expression (``spark.ratings.read_ratings``),
kept in step by the tests.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from streamrec.core.compression import (
    Damaged,
    codec_of,
    compressed_parquet,
    decompress_head,
    unsupported_compression,
)
from streamrec.core.schema import ITEM, RATING, USER, RatingScale

MAX_ID = 2**63 - 1
TOLERANCE = 1e-9
FORMATS = ("movielens", "udata", "csv", "parquet")

MOVIELENS_NAMES = ("userId", "movieId", "rating", "timestamp")
CSV_NAMES_TS = (USER, ITEM, RATING, "timestamp")
CSV_NAMES = (USER, ITEM, RATING)
MOVIELENS_HEADER, CSV_HEADER_TS, CSV_HEADER = (
    ",".join(n) for n in (MOVIELENS_NAMES, CSV_NAMES_TS, CSV_NAMES)
)
PARQUET_TS_COLUMNS = ("timestamp", "ts")

KNOWN_HEADER = "known_header"
REPEATED_HEADER = "repeated_header"
CSV_QUOTING = "csv_quoting"
FIELD_COUNT = "field_count"
ID_INTEGER = "id_integer"
ID_RANGE = "id_range"
RATING_FINITE = "rating_finite"
RATING_NUMBER = "rating_number"
RATING_ON_SCALE = "rating_on_scale"
RATING_ON_STEP = "rating_on_step"
TIMESTAMP_INTEGER = "timestamp_integer"
TIMESTAMP_RANGE = "timestamp_range"
RULES = (KNOWN_HEADER, REPEATED_HEADER, CSV_QUOTING, FIELD_COUNT, ID_INTEGER, ID_RANGE, RATING_FINITE)
RULES += (RATING_NUMBER, RATING_ON_SCALE, RATING_ON_STEP, TIMESTAMP_INTEGER, TIMESTAMP_RANGE)
FILE_TYPE = "text_or_parquet"
"""The file is UTF-8 text without NUL bytes (possibly gzip/bzip2-compressed), or Parquet. The readers raise it
for the other compressed formats and damaged compressed streams; the data contract also for binary data."""

# The lexical rules, written once. Python uses re.fullmatch; Java (Spark rlike) and RE2 (pyarrow) use the
# anchored form, with \z so that no trailing line terminator is tolerated.
INT = r"[+-]?[0-9]+"
NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NONFINITE = r"[+-]?(?:[nN][aA][nN]|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
BLANK = "\ufeff?" + r"[ \t]*"  # spaces and tabs; a stray BOM (files concatenated) leaves a blank line too
INT_RE, NUM_RE, NONFINITE_RE, BLANK_RE = (re.compile(p) for p in (INT, NUM, NONFINITE, BLANK))
SEPARATORS = {",": ",", "\t": r"\t"}
"""The separators of the text formats and how a regex (Python, Java, RE2 alike) writes them."""


def anchored(pattern: str) -> str:
    return rf"^(?:{pattern})\z"


def field_pattern(sep: str) -> str:
    """One RFC 4180 field: quoted (inner quotes doubled) or unquoted (no quote, no separator)."""
    return rf'"(?:[^"]|"")*"|[^"{SEPARATORS[sep]}]*'


def quoting_pattern(sep: str, simple: bool = False) -> str:
    """A line whose quoting follows RFC 4180. ``simple``: and no quoted field holds a separator or a quote."""
    s = SEPARATORS[sep]
    f = rf'"[^"{s}]*"|[^"{s}]*' if simple else field_pattern(sep)
    return rf"(?:{f})(?:{s}(?:{f}))*"


def quoted(pattern: str) -> str:
    """A literal written bare or in double quotes (a valid literal never contains a quote or a separator)."""
    return rf'(?:{pattern})|"(?:{pattern})"'


BOM = "\ufeff"
HIDDEN_PREFIXES = (".", "_")
"""A file or folder whose name starts with one of these is not data (``_SUCCESS``, ``.crc``, ``.DS_Store``, Spark's
``_temporary/``): a folder's hidden files are skipped, a hidden name in ``ratings/incoming/`` is not a partition."""
HEAD_BYTES = 8192
MAX_HEAD_BYTES = 1 << 20
TS_REQUIRED, TS_OPTIONAL, TS_ABSENT = "required", "optional", "absent"


def is_hidden(name: str) -> bool:
    """True for a hidden file or folder name (see :data:`HIDDEN_PREFIXES`)."""
    return name.startswith(HIDDEN_PREFIXES)


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
    """How to read one file: ``fmt``; for text, separator, header (its column names in the file's order, joined
    by the separator, quotes removed), ``order`` (for user, item, rating[, timestamp]: the field index in a
    line; empty = in that order) and ``compression`` (``gzip``/``bzip2``, decompressed first); for Parquet, the
    source columns."""

    fmt: str
    sep: str = ","
    header: str | None = None
    n_fields: int = 4
    ts_mode: str = TS_REQUIRED
    columns: tuple[str, ...] = ()  # parquet: user, item, rating[, timestamp] column names in the file
    schema_key: str = ""  # parquet: files are read together only when their schemas are identical
    ddl: str | None = None  # parquet: the Spark schema, when the types map simply (saves an inference job)
    order: tuple[int, ...] = ()
    compression: str | None = None

    @property
    def is_text(self) -> bool:
        return self.fmt != "parquet"

    @property
    def names(self) -> tuple[str, ...]:
        """The header's column names in the file's order (``()`` without a header)."""
        return tuple(self.header.split(self.sep)) if self.header is not None else ()

    @property
    def positions(self) -> tuple[int, ...]:
        """For user, item, rating[, timestamp], the index of its field in a line."""
        return self.order or tuple(range(self.n_fields))


MOVIELENS = Layout("movielens", ",", MOVIELENS_HEADER, 4, TS_REQUIRED)
UDATA = Layout("udata", "\t", None, 4, TS_REQUIRED)
CSV_TS = Layout("csv", ",", CSV_HEADER_TS, 4, TS_OPTIONAL)
CSV = Layout("csv", ",", CSV_HEADER, 3, TS_ABSENT)
VOCABULARIES = ((MOVIELENS_NAMES, MOVIELENS), (CSV_NAMES_TS, CSV_TS), (CSV_NAMES, CSV))


def header_layout(fields: Sequence[str]) -> Layout | None:
    """The layout a header names (its fields, quotes removed: one vocabulary, any order), or ``None``."""
    for names, base in VOCABULARIES:
        if len(fields) == len(names) and sorted(fields) == sorted(names):
            order = tuple(list(fields).index(n) for n in names)
            if order == tuple(range(len(names))):
                return base
            return dataclasses.replace(base, header=",".join(fields), order=order)
    return None


def first_line(head: bytes, complete: bool) -> tuple[int, str] | None:
    """(number, text) of the first non-blank line of ``head`` (the header, or u.data's first row), BOM removed;
    ``None`` when there is none (an empty or blank file). ``complete``: ``head`` is the whole file."""
    text = head.decode("utf-8", "replace").removeprefix(BOM)
    pos, n = 0, 1
    for m in re.finditer(r"\r\n|\r|\n", text):
        if not BLANK_RE.fullmatch(text[pos : m.start()]):
            return n, text[pos : m.start()]
        pos, n = m.end(), n + 1
    if not complete:
        raise ValueError("first line too long")
    return (n, text[pos:]) if not BLANK_RE.fullmatch(text[pos:]) else None


def header_hint(first: str) -> str:
    """Why a first line is not a known header, when it can be told (quotes, delimiter, missing or unknown
    columns); ``""`` otherwise."""
    cols = split_fields(first, ",")
    if cols is None:
        return "; " + quoting_detail(first)
    if "'" in first:
        return "; single quotes are not CSV quoting: write the header without quotes or with double quotes"
    for sep, label in ((";", "';'"), ("|", "'|'"), (" ", "spaces")):
        if first.count(sep) >= 2 and "," not in first:
            return f"; wrong delimiter? fields are separated by {label}, the format wants ',' (or tabs for u.data)"
    for names, required in ((CSV_NAMES_TS, CSV_NAMES), (MOVIELENS_NAMES, MOVIELENS_NAMES)):
        if set(cols) <= set(names):
            missing = [c for c in required if c not in cols]
            if missing:
                return f"; missing column(s) {', '.join(missing)}"
    extra = [c for c in cols if c not in {*CSV_NAMES_TS, *MOVIELENS_NAMES}]
    if extra and len(cols) > 1:
        return f"; unknown column(s) {', '.join(map(repr, extra[:4]))}"
    return ""


def layout_from_head(path: str, head: bytes, complete: bool, fmt: str) -> Layout:
    """Decide the layout of one file from its first bytes, or raise ``known_header`` / ``text_or_parquet``."""
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"unknown ratings format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if head[:4] == b"PAR1" and fmt in ("auto", "parquet"):
        return Layout("parquet")
    if fmt == "parquet":
        raise RatingsFormatError(path, None, KNOWN_HEADER, "not a Parquet file (no PAR1 magic bytes)")
    codec = codec_of(head)
    if codec is None:
        if unsupported := unsupported_compression(head):
            raise RatingsFormatError(path, None, FILE_TYPE, unsupported)
        return _text_layout(path, head, complete, fmt)
    try:
        text, complete = decompress_head(head, codec, MAX_HEAD_BYTES, complete)
    except Damaged as exc:
        raise RatingsFormatError(path, None, FILE_TYPE, str(exc)) from None
    if text[:4] == b"PAR1":
        raise RatingsFormatError(path, None, FILE_TYPE, compressed_parquet(codec))
    return dataclasses.replace(_text_layout(path, text, complete, fmt), compression=codec)


def _text_layout(path: str, head: bytes, complete: bool, fmt: str) -> Layout:
    try:
        found = first_line(head, complete)
    except ValueError:
        raise RatingsFormatError(
            path, 1, KNOWN_HEADER, f"no line end in the first {len(head)} bytes: not a ratings file"
        ) from None
    if found is None:
        if fmt == "udata":
            return UDATA
        what = "the file is empty" if not head else "the file has only blank lines"
        raise RatingsFormatError(path, 1, KNOWN_HEADER, f"{what}: no header")
    at, line = found
    fields = split_fields(line, ",")
    known = header_layout(fields) if fields is not None else None
    if fmt == "auto":
        if known is not None:
            return known
        if "\t" in line:
            first = (split_fields(line, "\t") or [""])[0]
            if not INT_RE.fullmatch(first):
                raise RatingsFormatError(
                    path,
                    at,
                    KNOWN_HEADER,
                    f"{short(line)} is tab separated but not a u.data line (u.data has no header; a "
                    f"tab-separated header is not supported: use {CSV_HEADER_TS!r})",
                )
            return UDATA
        raise RatingsFormatError(
            path,
            at,
            KNOWN_HEADER,
            f"{short(line)} is not a known header ({CSV_HEADER_TS!r}, {CSV_HEADER!r} or {MOVIELENS_HEADER!r}) "
            f"nor a tab-separated u.data line{header_hint(line)}",
        )
    if fmt == "udata":
        return UDATA
    if fmt == "movielens":
        if known is not None and known.fmt == "movielens":
            return known
        raise RatingsFormatError(
            path, at, KNOWN_HEADER, f"format movielens needs header {MOVIELENS_HEADER!r}, found {short(line)}"
        )
    if known is not None and known.fmt == "csv":
        return known
    raise RatingsFormatError(
        path,
        at,
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


@cache
def _quoting_res(sep: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return re.compile(quoting_pattern(sep)), re.compile(field_pattern(sep))


def split_fields(line: str, sep: str) -> list[str] | None:
    """The RFC 4180 fields of one line (quotes removed, ``""`` -> ``"``), or ``None`` when its quoting is
    broken (rule ``csv_quoting``)."""
    if '"' not in line:
        return line.split(sep)
    whole, one = _quoting_res(sep)
    if not whole.fullmatch(line):
        return None
    out, pos = [], 0
    while True:
        m = one.match(line, pos)
        assert m is not None
        f = m.group()
        out.append(f[1:-1].replace('""', '"') if f.startswith('"') else f)
        pos = m.end()
        if pos >= len(line):
            return out
        pos += len(sep)


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
    """The first rule broken by one row's fields (user, item, rating[, timestamp]: strings, ``None`` for
    null), or ``None`` when it is valid."""
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


def quoting_detail(line: str) -> str:
    return (
        f'misplaced double quote in {short(line)}: RFC 4180 quotes a whole field ("4.5"), doubles a quote '
        "inside it and closes it on the same line"
    )


def is_repeated_header(line: str, layout: Layout) -> bool:
    """``line`` is the header again (its fields, BOM and quotes removed, are the header's names)."""
    return layout.header is not None and split_fields(line.removeprefix(BOM), layout.sep) == list(
        layout.names
    )


def check_line(line: str, layout: Layout, scale: RatingScale) -> tuple[str, str] | None:
    """The first rule broken by one data line of a text layout (not the header), or ``None``. A blank line
    breaks no rule: it is skipped."""
    if BLANK_RE.fullmatch(line):
        return None
    if is_repeated_header(line, layout):
        return REPEATED_HEADER, f"the header {layout.header!r} appears again after line 1"
    fields = split_fields(line, layout.sep)
    if fields is None:
        return CSV_QUOTING, quoting_detail(line)
    if len(fields) != layout.n_fields:
        return FIELD_COUNT, field_count_detail(layout, len(fields), line)
    return check_fields([fields[i] for i in layout.positions], layout, scale)

"""Parsing a partition's bytes leniently, with line numbers: the file-level rules here, the values for GX.

File-level rules (the rules of :mod:`streamrec.core.ratings_format` that make a file unreadable as ratings) are
checked on the raw bytes and land in ``fatal`` (the suite is then not run); every other line is parsed
leniently (a literal that is not an integer / a finite decimal becomes null) into a pandas frame ``user Int64,
item Int64, rating float64, ts Int64`` whose index is the row number; a side table maps each row back to its
file and physical line, so every reason can say where its first offender is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamrec.core.ratings_arrow import arrow_strings, lenient_ints, lenient_ratings, pa_match, split_text
from streamrec.core.ratings_format import (
    BLANK,
    BLANK_LINE,
    BOM,
    FIELD_COUNT,
    FILE_TYPE,
    KNOWN_HEADER,
    REPEATED_HEADER,
    TIMESTAMP_INTEGER,
    TS_REQUIRED,
    RatingsFormatError,
    compressed_as,
    field_count_detail,
    is_hidden,
    layout_from_head,
    one_line,
    parquet_layout,
    short,
)
from streamrec.core.schema import ITEM, RATING, TS, USER
from streamrec.pipeline.contract.incoming import (
    PARTITION_SIZE,
    Partition,
    as_partition,
    display_name,
    max_partition_bytes,
)
from streamrec.pipeline.contract.messages import entry, mib, n_rows
from streamrec.storage.bucket import Bucket

FILES_ONLY = "files_only"
"""A rule of the loader's folder handling (``a ratings folder holds files only``), named here for reports."""
NO_FILES = "no_files"
"""A folder partition with no data file (only sub-folders)."""


class FileProblem(Exception):
    """A file-level rule failed: the file cannot be read as ratings at all."""

    def __init__(self, name: str, line: int | None, rule: str, detail: str, unit: str = "line") -> None:
        self.err = RatingsFormatError(name, line, rule, detail, unit)
        self.name, self.line, self.rule = name, line, rule
        super().__init__(str(self.err))

    @classmethod
    def of(cls, err: RatingsFormatError) -> FileProblem:
        return cls(err.path, err.line, err.rule, err.detail, err.unit)


@dataclass
class Rows:
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
        return f"{self.first_loc(row)}: {self.shows[int(self.file_of_row[row])](int(self.line_of_row[row]))}"

    def first_loc(self, row: int) -> str:
        """``"p.csv line 17"`` for a row of :attr:`frame`."""
        f = int(self.file_of_row[row])
        return f"{self.files[f]} {self.units[f]} {int(self.line_of_row[row])}"


def _parse_ts(arr: pa.Array | None, n: int, required: bool) -> tuple[pa.Array, np.ndarray]:
    """(epoch seconds or null, mask of rows whose timestamp is present but not usable)."""
    if arr is None:
        return pa.nulls(n, pa.int64()), np.zeros(n, dtype=bool)
    present = pc.fill_null(pc.not_equal(arr, pa.scalar("", arr.type)), False).to_numpy(zero_copy_only=False)
    vals = lenient_ints(arr)
    bad = present & ~pc.is_valid(vals).to_numpy(zero_copy_only=False)
    if required:
        bad |= ~present
    return vals, bad


def parse_text(name: str, data: bytes) -> Rows:
    """Parse one text file (CSV with a known header, or tab-separated u.data); raise :class:`FileProblem`."""
    if not data:
        raise FileProblem(name, 1, KNOWN_HEADER, "the file is empty: no header")
    what = compressed_as(data)
    if what:
        raise FileProblem(
            name,
            None,
            FILE_TYPE,
            f"{what}: compressed partitions are not supported; drop the uncompressed text or Parquet",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise FileProblem(
            name,
            None,
            FILE_TYPE,
            f"binary data (a NUL byte at offset {nul}): not a text or Parquet ratings file",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(
            name,
            None,
            FILE_TYPE,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): binary data or another encoding",
        ) from None
    try:
        layout = layout_from_head(name, data, True, "auto")
    except RatingsFormatError as err:
        raise FileProblem.of(err) from None
    lines = split_text(text)
    n = len(lines)
    line_no = np.arange(1, n + 1)
    blank = pa_match(lines, BLANK)
    nonblank = np.flatnonzero(~blank)
    last = int(nonblank[-1]) if nonblank.size else -1
    is_data = ~blank
    if layout.header is not None:
        is_data[0] = False
    found: list[tuple[int, str, str, int]] = []  # (line, rule, detail, how many lines break it)
    inner_blank = np.flatnonzero(blank[:last])
    if inner_blank.size:
        detail = "a blank line before more data (only trailing blank lines are allowed)"
        found.append((int(inner_blank[0]) + 1, BLANK_LINE, detail, inner_blank.size))
    data_idx = np.flatnonzero(is_data)
    data_lines = lines.take(pa.array(data_idx, pa.int64()))
    if layout.header is not None:
        rep = pc.fill_null(
            pc.or_(
                pc.equal(data_lines, pa.scalar(layout.header, data_lines.type)),
                pc.equal(data_lines, pa.scalar(BOM + layout.header, data_lines.type)),
            ),
            False,
        ).to_numpy(zero_copy_only=False)
        if rep.any():
            detail = f"the header {layout.header!r} appears again (concatenated files?)"
            found.append((int(data_idx[rep][0]) + 1, REPEATED_HEADER, detail, int(rep.sum())))
    parts = pc.split_pattern(data_lines, layout.sep)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    wrong = counts != layout.n_fields
    if wrong.any():
        i = int(np.argmax(wrong))
        detail = field_count_detail(layout, int(counts[i]), data_lines[i].as_py())
        found.append((int(data_idx[i]) + 1, FIELD_COUNT, detail, int(wrong.sum())))
    if found:
        line, rule, detail, count = min(found)
        more = f" ({count} lines break this rule)" if count > 1 else ""
        raise FileProblem(name, line, rule, detail + more)
    fields = [pc.list_element(parts, j) for j in range(layout.n_fields)] if len(data_idx) else []
    m = len(data_idx)
    if not m:
        empty_i, empty_f = pa.array([], pa.int64()), pa.array([], pa.float64())
        return Rows(empty_i, empty_i, empty_f, empty_i, np.zeros(0, np.int64), lambda _: "")
    ts_raw = fields[3] if layout.n_fields == 4 else None
    ts, ts_bad = _parse_ts(ts_raw, m, layout.ts_mode == TS_REQUIRED)

    def show(line: int) -> str:
        return short(lines[line - 1].as_py())

    return Rows(
        lenient_ints(fields[0]),
        lenient_ints(fields[1]),
        lenient_ratings(fields[2]),
        ts,
        line_no[data_idx],
        show,
        ts_raw=ts_raw,
        ts_bad=ts_bad,
    )


def parse_parquet(name: str, data: bytes) -> Rows:
    """Parse one Parquet file (columns user, item, rating[, timestamp|ts]); raise :class:`FileProblem`."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise FileProblem(
            name, None, FILE_TYPE, f"unreadable Parquet file ({type(exc).__name__}: {short(str(exc), 120)})"
        ) from None
    try:
        layout = parquet_layout(name, table.column_names)
    except RatingsFormatError as err:
        raise FileProblem.of(err) from None
    names = layout.columns
    try:
        strings = [arrow_strings(table.column(c)) for c in names]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FileProblem(
            name, None, KNOWN_HEADER, f"Parquet column types not readable as ratings ({short(str(exc), 120)})"
        ) from None
    n = table.num_rows
    ts_raw = strings[3] if len(names) == 4 else None
    ts, ts_bad = _parse_ts(ts_raw, n, False)

    def show(row: int) -> str:
        vals = [s[row - 1].as_py() for s in strings]
        return one_line(", ".join(f"{k}={v!r}" for k, v in zip(names, vals, strict=True)))

    return Rows(
        lenient_ints(strings[0]),
        lenient_ints(strings[1]),
        lenient_ratings(strings[2]),
        ts,
        np.arange(1, n + 1),
        show,
        unit="row",
        ts_raw=ts_raw,
        ts_bad=ts_bad,
    )


def _int_array(arr: pa.Array) -> pd.arrays.IntegerArray:
    arr = arr.cast(pa.int64())
    mask = ~pc.is_valid(arr).to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pd.arrays.IntegerArray(values, mask)


def _folder_problems(bucket: Bucket, part: Partition) -> list[dict]:
    """A folder partition with a sub-folder, or with no data file."""
    fatal = []
    where = display_name(part, part.key)
    nested = [
        o.key
        for o in bucket.list(part.key)
        if "/" in o.key[len(part.key) + 1 :] and not is_hidden(o.key[len(part.key) + 1 :])
    ]
    if nested:
        sub = nested[0][len(part.key) + 1 :].split("/")[0]
        msg = (
            f"{where}: rule {FILES_ONLY}: the folder contains the sub-folder {short(sub)}: a ratings folder "
            "holds files only"
        )
        fatal.append(entry(FILES_ONLY, None, len(nested), [], where, msg))
    if not part.files:
        msg = f"{where}: rule {NO_FILES}: no rating files in the folder"
        fatal.append(entry(NO_FILES, None, 0, [], where, msg))
    return fatal


def parse_partition(bucket: Bucket, partition: Partition | str) -> ParsedPartition:
    """Read a partition's files through ``bucket`` and parse them leniently (see the module docstring).

    Never raises for bad content (it lands in ``fatal`` / ``problems``); bucket I/O errors propagate."""
    part = as_partition(bucket, partition)
    files: list[str] = []
    parsed: list[Rows] = []
    fatal: list[dict] = _folder_problems(bucket, part) if part.is_folder else []
    limit = max_partition_bytes()
    if part.size > limit:
        where = display_name(part, part.key)
        msg = (
            f"{where}: rule {PARTITION_SIZE}: partition too large to check: {mib(part.size)} of files, the "
            f"contract reads at most {mib(limit)} into memory (STREAMREC_MAX_PARTITION_BYTES); split it into "
            "smaller partitions, or raise the limit on workers with the memory for it"
        )
        fatal.append(entry(PARTITION_SIZE, None, 1, [], where, msg))
    for key in part.files if part.size <= limit else ():
        name = display_name(part, key)
        data = bucket.read_bytes(key)
        try:
            rows = parse_parquet(name, data) if data[:4] == b"PAR1" else parse_text(name, data)
        except FileProblem as exc:
            where = name if exc.line is None else f"{name} {exc.err.unit} {exc.line}"
            fatal.append(entry(exc.rule, None, 1, [], where, one_line(str(exc))))
            continue
        files.append(name)
        parsed.append(rows)
    return _assemble(parsed, files, fatal)


def _assemble(parsed: list[Rows], files: list[str], fatal: list[dict]) -> ParsedPartition:
    """The partition's frame from its files' rows, and the timestamps the frame cannot represent."""
    counts = [len(r.line) for r in parsed]
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
        file_of_row=np.repeat(np.arange(len(parsed)), counts).astype(np.int64),
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
    for rows, n in zip(parsed, counts, strict=True):
        if rows.ts_bad is not None and rows.ts_bad.any():
            pos = np.flatnonzero(rows.ts_bad)
            bad_ts.extend((offset + pos).tolist())
            if rows.ts_raw is not None and len(raws) < 5:
                raws.extend(rows.ts_raw[int(i)].as_py() for i in pos[: 5 - len(raws)])
        offset += n
    if bad_ts:
        first = bad_ts[0]
        msg = (
            f"ts: {n_rows(len(bad_ts))} with a timestamp that is not an integer (epoch seconds) "
            f"(first: {out.where(first)})"
        )
        out.problems.append(entry(TIMESTAMP_INTEGER, TS, len(bad_ts), raws, out.first_loc(first), msg))
    return out

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

from streamrec.core.compression import (
    Damaged,
    TooLarge,
    codec_of,
    compressed_parquet,
    decompress,
    unsupported_compression,
)
from streamrec.core.ratings_arrow import (
    arrow_strings,
    lenient_ints,
    lenient_ratings,
    pa_match,
    repeated_headers,
    split_fields_arrow,
    split_text,
)
from streamrec.core.ratings_format import (
    BLANK,
    CSV_QUOTING,
    FIELD_COUNT,
    FILE_TYPE,
    KNOWN_HEADER,
    MAX_HEAD_BYTES,
    REPEATED_HEADER,
    TIMESTAMP_INTEGER,
    TS_REQUIRED,
    Layout,
    RatingsFormatError,
    field_count_detail,
    is_hidden,
    layout_from_head,
    one_line,
    parquet_layout,
    quoting_detail,
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
from streamrec.pipeline.contract.messages import entry, mib, n_rows, size_text
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
    notes: list[str] = field(default_factory=list)


@dataclass
class ParsedPartition:
    """A partition parsed leniently: ``frame`` (``user Int64, item Int64, rating float64, ts Int64``, index =
    row number 0..n-1), where each row came from (:meth:`where`), and the problems found before GX runs:
    ``fatal`` (file-level, the suite is not run) and ``problems`` (rows the frame cannot represent); and
    ``normalised``: what was normalised to read it, one ``"<file>: <what>"`` each (e.g. ``"p.csv: RFC 4180
    quoting removed"``, ``"p.csv.gz: gzip-compressed; 1.2 MiB uncompressed"``)."""

    frame: pd.DataFrame
    files: list[str]
    file_of_row: np.ndarray
    line_of_row: np.ndarray
    shows: list[Callable[[int], str]]
    units: list[str]
    fatal: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    normalised: list[str] = field(default_factory=list)

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
    """Parse one text file (CSV with a known header, or tab-separated u.data; already decompressed); raise
    :class:`FileProblem`. ``Rows.notes`` says what was normalised (quoting, column order, blank lines)."""
    if not data:
        raise FileProblem(name, 1, KNOWN_HEADER, "the file is empty: no header")
    if unsupported := unsupported_compression(data):
        raise FileProblem(name, None, FILE_TYPE, unsupported)
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
        layout = layout_from_head(name, data[:MAX_HEAD_BYTES], len(data) <= MAX_HEAD_BYTES, "auto")
    except RatingsFormatError as err:
        raise FileProblem.of(err) from None
    lines = split_text(text)
    blank = pa_match(lines, BLANK)
    is_data = ~blank
    header = int(np.argmax(is_data)) if layout.header is not None else None
    if header is not None:
        is_data[header] = False
    data_idx = np.flatnonzero(is_data)
    data_lines = lines.take(pa.array(data_idx, pa.int64()))
    fields = split_fields_arrow(data_lines, layout.sep)
    found: list[tuple[int, str, str, int]] = []  # (line, rule, detail, how many lines break it)

    def first(mask: np.ndarray, rule: str, detail: Callable[[int], str]) -> None:
        if mask.any():
            i = int(np.argmax(mask))
            found.append((int(data_idx[i]) + 1, rule, detail(i), int(mask.sum())))

    rep = (
        repeated_headers(data_lines, fields, layout)
        if layout.header is not None
        else np.zeros(len(data_idx), bool)
    )
    first(rep, REPEATED_HEADER, lambda _: f"the header {layout.header!r} appears again (concatenated files?)")
    first(fields.bad_quoting & ~rep, CSV_QUOTING, lambda i: quoting_detail(data_lines[i].as_py()))
    counts = fields.counts()
    first(
        (counts != layout.n_fields) & ~fields.bad_quoting & ~rep,
        FIELD_COUNT,
        lambda i: field_count_detail(layout, int(counts[i]), data_lines[i].as_py()),
    )
    if found:
        line, rule, detail, count = min(found)
        more = f" ({count} lines break this rule)" if count > 1 else ""
        raise FileProblem(name, line, rule, detail + more)
    quoted = fields.quoted or (header is not None and '"' in lines[header].as_py())
    notes = _notes(layout, quoted, int(blank.sum()))
    m = len(data_idx)
    if not m:
        empty_i, empty_f = pa.array([], pa.int64()), pa.array([], pa.float64())
        return Rows(empty_i, empty_i, empty_f, empty_i, np.zeros(0, np.int64), lambda _: "", notes=notes)
    cols = fields.columns(layout)
    ts_raw = cols[3] if layout.n_fields == 4 else None
    ts, ts_bad = _parse_ts(ts_raw, m, layout.ts_mode == TS_REQUIRED)

    def show(line: int) -> str:
        return short(lines[line - 1].as_py())

    return Rows(
        lenient_ints(cols[0]),
        lenient_ints(cols[1]),
        lenient_ratings(cols[2]),
        ts,
        data_idx + 1,
        show,
        ts_raw=ts_raw,
        ts_bad=ts_bad,
        notes=notes,
    )


def _notes(layout: Layout, quoted: bool, blank: int) -> list[str]:
    """The normalisations of a text file that passed its file-level rules, as the report states them."""
    notes = []
    if quoted:
        notes.append("RFC 4180 quoting removed")
    if layout.order:
        notes.append(f"columns reordered from header {layout.header!r}")
    if blank:
        notes.append(f"{blank} blank line{'s' if blank > 1 else ''} skipped")
    return notes


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


def _uncompressed(name: str, raw: bytes, budget: int) -> tuple[bytes, str | None]:
    """A file's bytes, decompressed when they are gzip or bzip2 (at most ``budget`` bytes: else
    :class:`~streamrec.core.compression.TooLarge`), and the note saying so."""
    codec = codec_of(raw)
    if codec is None:
        return raw, None
    try:
        data = decompress(raw, codec, limit=budget)
    except Damaged as exc:
        raise FileProblem(name, None, FILE_TYPE, str(exc)) from None
    if data[:4] == b"PAR1":
        raise FileProblem(name, None, FILE_TYPE, compressed_parquet(codec))
    return data, f"{codec}-compressed; {size_text(len(data))} uncompressed"


def parse_partition(bucket: Bucket, partition: Partition | str) -> ParsedPartition:
    """Read a partition's files through ``bucket`` and parse them leniently (see the module docstring).

    The size limit (:func:`~streamrec.pipeline.contract.incoming.max_partition_bytes`) holds for the bytes as
    parsed: a partition whose listing is larger is not read at all; a compressed file is decompressed as a
    stream that stops as soon as the partition passes the limit (a compression bomb costs at most the limit).
    Never raises for bad content (it lands in ``fatal`` / ``problems``); bucket I/O errors propagate."""
    part = as_partition(bucket, partition)
    files: list[str] = []
    parsed: list[Rows] = []
    normalised: list[str] = []
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
    used = 0
    for key in part.files if part.size <= limit else ():
        name = display_name(part, key)
        try:
            data, note = _uncompressed(name, bucket.read_bytes(key), limit - used)
            used += len(data)
            rows = parse_parquet(name, data) if data[:4] == b"PAR1" else parse_text(name, data)
        except TooLarge:
            msg = (
                f"{name}: rule {PARTITION_SIZE}: partition too large to check: {name} is compressed and expands "
                f"past {mib(limit)} (decompression stopped there), the contract reads at most {mib(limit)} into "
                "memory (STREAMREC_MAX_PARTITION_BYTES); split it into smaller partitions, or raise the limit on "
                "workers with the memory for it"
            )
            fatal.append(entry(PARTITION_SIZE, None, 1, [], name, msg))
            break
        except FileProblem as exc:
            where = name if exc.line is None else f"{name} {exc.err.unit} {exc.line}"
            fatal.append(entry(exc.rule, None, 1, [], where, one_line(str(exc))))
            continue
        files.append(name)
        parsed.append(rows)
        normalised += [f"{name}: {n}" for n in ([note] if note else []) + rows.notes]
    out = _assemble(parsed, files, fatal)
    out.normalised = normalised
    return out


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

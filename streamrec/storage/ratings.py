"""Ratings files in with pyarrow and pandas: the file-system layer (local paths and ``s3://`` through pyarrow),
format detection, and :func:`read_ratings_pandas`. The rules it applies are :mod:`streamrec.core.ratings_format`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamrec.core.compression import Damaged, codec_of, decompress_chunks
from streamrec.core.ratings_arrow import (
    arrow_strings,
    pa_match,
    pa_ok_and_values,
    repeated_headers,
    split_fields_arrow,
    split_lines,
)
from streamrec.core.ratings_format import (
    BLANK,
    BOM,
    FILE_TYPE,
    HEAD_BYTES,
    KNOWN_HEADER,
    MAX_HEAD_BYTES,
    Layout,
    RatingsFormatError,
    check_fields,
    check_line,
    is_hidden,
    layout_from_head,
    parquet_layout,
    short,
    split_fields,
)
from streamrec.core.schema import HALF_STAR, ITEM, RATING, TS, USER, RatingScale

__all__ = [
    "ArrowFS",
    "FileSystem",
    "detect_format",
    "expand",
    "expand_entries",
    "head_layout",
    "list_rating_files",
    "pa_ok_and_values",
    "parquet_schema",
    "read_ratings_pandas",
]

_CHUNK_BYTES = 32 << 20

# ----------------------------------------------------------------------------------------------------------
# File systems: pyarrow (pandas reader, detect_format, list_rating_files) and Hadoop through the JVM (Spark)
# ----------------------------------------------------------------------------------------------------------


class FileSystem(Protocol):
    def kind(self, path: str) -> str | None: ...  # "file", "dir" or None (missing)

    def children(self, path: str) -> list[tuple[str, bool]]: ...  # (base name, is_dir)

    def head(self, path: str, n: int) -> tuple[bytes, bool]: ...  # (first n bytes, whole file read)

    def tail(self, path: str, n: int) -> bytes: ...  # the last n bytes (fewer for a shorter file)

    def read(self, path: str) -> bytes: ...  # the whole file, as stored


class ArrowFS:
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
        with fs.open_input_stream(p, compression=None) as f:
            data = f.read(n + 1)
        return data[:n], len(data) <= n

    def tail(self, path: str, n: int) -> bytes:
        fs, p = self.resolve(path)
        with fs.open_input_file(p) as f:
            size = f.size()
            f.seek(max(0, size - n))
            return f.read()

    def read(self, path: str) -> bytes:
        """The whole file, as stored (no decompression by name)."""
        return b"".join(self.chunks(path))

    def chunks(self, path: str, size: int = _CHUNK_BYTES) -> Iterator[bytes]:
        fs, p = self.resolve(path)
        with fs.open_input_stream(p, compression=None) as f:
            while buf := f.read(size):
                yield buf

    def read_parquet(self, path: str) -> pa.Table:
        fs, p = self.resolve(path)
        return pq.read_table(p, filesystem=fs)


def parquet_schema(fs: FileSystem, path: str) -> pa.Schema:
    """The Arrow schema of a Parquet file from its footer only (two small reads, any file system)."""
    end = fs.tail(path, 8)
    if len(end) < 8 or end[4:] != b"PAR1":
        raise RatingsFormatError(
            path, None, KNOWN_HEADER, "not a Parquet file (no PAR1 magic bytes at the end)"
        )
    size = int.from_bytes(end[:4], "little")
    footer = fs.tail(path, size + 8)
    return pq.read_schema(pa.BufferReader(b"PAR1" + footer))


def list_files(fs: FileSystem, path: str) -> list[str]:
    kind = fs.kind(path)
    if kind is None:
        raise FileNotFoundError(f"no such ratings file or folder: {path}")
    if kind == "file":
        return [path]
    files = []
    for name, is_dir in sorted(fs.children(path)):
        if is_hidden(name):
            continue
        if is_dir:
            raise ValueError(f"{path} contains the sub-folder {name!r}: a ratings folder holds files only")
        files.append(path.rstrip("/") + "/" + name)
    if not files:
        raise FileNotFoundError(f"no rating files in folder {path}")
    return files


def expand(fs: FileSystem, paths: str | Sequence[str]) -> list[str]:
    return list(expand_entries(fs, paths))


def expand_entries(fs: FileSystem, paths: str | Sequence[str]) -> dict[str, int]:
    """The files ``paths`` stand for, in order, each mapped to the position of the entry it came from."""
    items = [paths] if isinstance(paths, str) else list(paths)
    if not items:
        raise ValueError("no ratings paths given")
    files = [(f, k) for k, p in enumerate(items) for f in list_files(fs, p)]
    out = dict(files)
    if len(out) != len(files):
        names = [f for f, _ in files]
        dup = sorted({f for f in names if names.count(f) > 1})
        raise ValueError(f"ratings file(s) listed more than once: {dup}")
    return out


def head_layout(fs: FileSystem, path: str, fmt: str) -> Layout:
    """The layout of one file from its first bytes (a compressed file: from its first MiB)."""
    head, complete = fs.head(path, HEAD_BYTES)
    if not complete and (codec_of(head) or (re.search(rb"\r|\n", head) is None and head[:4] != b"PAR1")):
        head, complete = fs.head(path, MAX_HEAD_BYTES)
    return layout_from_head(path, head, complete, fmt)


def list_rating_files(path: str) -> list[str]:
    """The rating files ``path`` stands for: ``[path]`` for a file; for a folder its files sorted by name,
    skipping names that start with ``.`` or ``_`` (``_SUCCESS``, ``.crc``). A sub-folder is an error (no silent
    recursion); so is a missing path or a folder with no rating files."""
    return list_files(ArrowFS(), path)


def detect_format(path: str) -> str:
    """The format (one of :data:`FORMATS`) of a file, or of a folder's files (which must all agree).

    Raises :class:`RatingsFormatError` (rule ``known_header``) when a file is none of the known formats.
    """
    fs = ArrowFS()
    fmts = {f: head_layout(fs, f, "auto").fmt for f in list_files(fs, path)}
    found = sorted(set(fmts.values()))
    if len(found) != 1:
        raise ValueError(f"{path} mixes ratings formats: {fmts}")
    return found[0]


# ----------------------------------------------------------------------------------------------------------
# pandas reader: pyarrow, vectorised
# ----------------------------------------------------------------------------------------------------------


def iter_line_blocks(chunks: Iterator[bytes]) -> Iterator[pa.Array]:
    """Blocks of complete lines, cut after a LF so that no CRLF pair is split."""
    carry = b""
    for buf in chunks:
        data = carry + buf
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        yield split_lines(data[: cut + 1])
    if carry:
        yield split_lines(carry)


@dataclass
class Columns:
    """Parsed columns accumulated over chunks and files."""

    users: list[np.ndarray]
    items: list[np.ndarray]
    ratings: list[np.ndarray]
    ts: list[np.ndarray]
    ts_valid: list[np.ndarray]

    @classmethod
    def empty(cls) -> Columns:
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


def _data_chunks(fs: ArrowFS, path: str, layout: Layout) -> Iterator[bytes]:
    chunks = fs.chunks(path, _CHUNK_BYTES)
    if layout.compression is None:
        return chunks
    return decompress_chunks(chunks, layout.compression, piece=_CHUNK_BYTES)


def _read_text_pandas(fs: ArrowFS, path: str, layout: Layout, scale: RatingScale, out: Columns) -> None:
    """Validate and parse one text file chunk by chunk (decompressed first when compressed); raise at its
    first bad line. Blank lines are skipped."""
    line_no = 0  # lines before the current block
    need_header = layout.header is not None
    try:
        for lines in iter_line_blocks(_data_chunks(fs, path, layout)):
            need_header = _check_block(path, lines, line_no, layout, scale, out, need_header)
            line_no += len(lines)
    except Damaged as exc:
        raise RatingsFormatError(path, None, FILE_TYPE, str(exc)) from None


def _check_block(
    path: str,
    lines: pa.Array,
    line_no: int,
    layout: Layout,
    scale: RatingScale,
    out: Columns,
    need_header: bool,
) -> bool:
    """Check and parse one block of lines (``line_no`` lines before it); ``need_header``: the header (the first
    non-blank line) is not seen yet. Returns whether it still is not."""
    is_data = ~pa_match(lines, BLANK)
    if need_header and is_data.any():
        h = int(np.argmax(is_data))
        first = lines[h].as_py().removeprefix(BOM)
        if split_fields(first, layout.sep) != list(layout.names):  # the file changed since its head was read
            raise RatingsFormatError(
                path, line_no + h + 1, KNOWN_HEADER, f"expected {layout.header!r}, found {short(first)}"
            )
        is_data[h] = False
        need_header = False
    data_idx = np.flatnonzero(is_data)
    data = lines.take(pa.array(data_idx))
    fields = split_fields_arrow(data, layout.sep)
    good = (fields.counts() == layout.n_fields) & ~fields.bad_quoting
    if layout.header is not None:
        good &= ~repeated_headers(data, fields, layout)
    bad = None if good.all() else int(np.argmin(good))
    if bad is None and data_idx.size:
        ok, values = pa_ok_and_values(fields.columns(layout), layout, scale)
        if values is None:
            bad = int(np.argmin(ok))
        else:
            out.add(values, len(data_idx))
    if bad is not None:
        i = int(data_idx[bad])
        text = lines[i].as_py()
        found = check_line(text, layout, scale)
        if found is None:
            raise RuntimeError(
                f"internal: vectorised and scalar rules disagree on {path} line {line_no + i + 1}"
            )
        raise RatingsFormatError(path, line_no + i + 1, *found)
    return need_header


def _read_parquet_pandas(fs: ArrowFS, path: str, scale: RatingScale, out: Columns) -> None:
    table = fs.read_parquet(path)
    layout = parquet_layout(path, table.column_names, "")
    fields = [arrow_strings(table.column(c)) for c in layout.columns]
    if table.num_rows == 0:
        return
    ok, values = pa_ok_and_values(fields, layout, scale)
    if values is None:
        i = int(np.argmin(ok))
        row = [f[i].as_py() for f in fields]
        found = check_fields(row, layout, scale)
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
    fs = ArrowFS()
    out = Columns.empty()
    for path in expand(fs, paths):
        layout = head_layout(fs, path, fmt)
        if layout.is_text:
            _read_text_pandas(fs, path, layout, scale, out)
        else:
            _read_parquet_pandas(fs, path, scale, out)
    return out.frame()

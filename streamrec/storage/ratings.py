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
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streamrec.core.ratings_arrow import arrow_strings, pa_match, pa_ok_and_values, split_lines
from streamrec.core.ratings_format import (
    BLANK,
    BOM,
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
    head, complete = fs.head(path, HEAD_BYTES)
    if not complete and re.search(rb"\r|\n", head) is None and head[:4] != b"PAR1":
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


def _read_text_pandas(fs: ArrowFS, path: str, layout: Layout, scale: RatingScale, out: Columns) -> None:
    """Validate and parse one text file chunk by chunk; raise at its first bad line."""
    line_no = 0  # lines before the current block
    pending_blank: int | None = None  # first blank line with no non-blank line after it (yet)
    for lines in iter_line_blocks(fs.chunks(path)):
        n = len(lines)
        blank = pa_match(lines, BLANK)
        nonblank_idx = np.flatnonzero(~blank)
        if pending_blank is not None and nonblank_idx.size:
            raise RatingsFormatError(path, pending_blank, *check_line("", layout, scale))
        is_data = ~blank
        if line_no == 0 and layout.header is not None:
            first = lines[0].as_py().removeprefix(BOM)
            if first != layout.header:  # the file changed since its head was read
                raise RatingsFormatError(
                    path, 1, KNOWN_HEADER, f"expected {layout.header!r}, found {short(first)}"
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
            body = pc.replace_substring_regex(data, "^" + BOM, "")
            good &= ~pc.equal(body, pa.scalar(layout.header, body.type)).to_numpy(zero_copy_only=False)
        if not good.all():
            candidates.append(int(data_idx[np.argmin(good)]))
        values = None
        if data_idx.size and good.all():
            fields = [pc.list_element(parts, j) for j in range(layout.n_fields)]
            ok, values = pa_ok_and_values(fields, layout, scale)
            if values is None:
                candidates.append(int(data_idx[np.argmin(ok)]))
        if candidates:
            i = min(candidates)
            text = lines[i].as_py()
            found = check_line(text, layout, scale)
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

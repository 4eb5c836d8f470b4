"""The rules of :mod:`streamrec.core.ratings_format` applied to pyarrow arrays (vectorised).

Shared by the pandas reader (``storage.ratings.read_ratings_pandas``, strict: the ok mask and the values) and
the data contract's parser (``pipeline.contract.parse``, lenient: a literal that breaks a rule becomes null and
the Great Expectations suite reports it). No regex literal, header or BOM is written here: they are
:mod:`~streamrec.core.ratings_format`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamrec.core.ratings_format import (
    BOM,
    INT,
    MAX_ID,
    NONFINITE,
    NUM,
    TOLERANCE,
    TS_ABSENT,
    TS_OPTIONAL,
    Layout,
    anchored,
    quoting_pattern,
    split_fields,
)
from streamrec.core.schema import ITEM, RATING, TS, USER, RatingScale


def pa_match(arr: pa.Array, pattern: str) -> np.ndarray:
    """The rows of a string array that match ``pattern`` as a whole (null -> False), as a numpy mask."""
    return pc.fill_null(pc.match_substring_regex(arr, anchored(pattern)), False).to_numpy(
        zero_copy_only=False
    )


def pa_digits(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(negative sign, number of significant digits, overflows 2**63-1) for integer literals."""
    neg = pc.fill_null(pc.starts_with(arr, "-"), False).to_numpy(zero_copy_only=False)
    digits = pc.utf8_ltrim(pc.utf8_ltrim(arr, "+-"), "0")
    nd = pc.fill_null(pc.utf8_length(digits), 0).to_numpy(zero_copy_only=False)
    big = pc.fill_null(pc.greater(digits, pa.scalar(str(MAX_ID), digits.type)), False)
    over = (nd > 19) | ((nd == 19) & big.to_numpy(zero_copy_only=False))
    return neg, nd, over


def pa_int(arr: pa.Array) -> pa.Array:
    """Integer literals (already checked) as int64."""
    return pc.cast(pc.utf8_ltrim(arr, "+"), pa.int64())


def lenient_ints(arr: pa.Array) -> pa.Array:
    """Integer literals that fit a signed 64-bit integer -> int64 (negatives too); anything else -> null."""
    _, _, over = pa_digits(arr)
    ok = pa_match(arr, INT) & ~over
    safe = pc.if_else(pa.array(ok), pc.utf8_ltrim(arr, "+"), pa.scalar(None, arr.type))
    return pc.cast(safe, pa.int64())


def lenient_ratings(arr: pa.Array) -> pa.Array:
    """Finite decimal literals -> float64; anything else (``nan``, ``inf``, ``1e400``, text) -> null."""
    ok = pa.array(pa_match(arr, NUM))
    vals = pc.cast(pc.if_else(ok, arr, pa.scalar(None, arr.type)), pa.float64())
    return pc.if_else(pc.is_finite(vals), vals, pa.scalar(None, pa.float64()))


def pa_ok_and_values(
    fields: Sequence[pa.Array], layout: Layout, scale: RatingScale
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Vectorised rules for rows of fields (string arrays, nullable): the ok mask; when every row is ok, the
    parsed columns too."""
    ok = np.ones(len(fields[0]), dtype=bool)
    for col in fields[:2]:
        neg, nd, over = pa_digits(col)
        ok &= pa_match(col, INT) & ~neg & (nd >= 1) & ~over
    r = fields[2]
    num = pa_match(r, NUM) & ~pa_match(r, NONFINITE)
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
    if layout.ts_mode != TS_ABSENT:
        t = fields[3]
        neg, nd, over = pa_digits(t)
        valid = pa_match(t, INT) & (~neg | (nd == 0)) & ~over
        if layout.ts_mode == TS_OPTIONAL:
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
        USER: pa_int(fields[0]).to_numpy(zero_copy_only=False),
        ITEM: pa_int(fields[1]).to_numpy(zero_copy_only=False),
        RATING: rv,
    }
    if ts_present is not None:
        t = fields[3]
        tv = np.zeros(len(t), dtype=np.int64)
        if ts_present.any():
            tv[ts_present] = pa_int(t.filter(pa.array(ts_present))).to_numpy(zero_copy_only=False)
        values[TS] = tv
        values["_ts_valid"] = ts_present
    return ok, values


def split_text(text: str) -> pa.Array:
    """The lines of ``text`` (LF, CRLF or a lone CR end a line; a final line end adds no empty line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))


def split_lines(data: bytes) -> pa.Array:
    """Lines of a byte block that ends at a line terminator (or at the end of the file)."""
    return split_text(data.decode("utf-8", "replace"))


@dataclass
class Fields:
    """The fields of some lines: ``parts`` (a list array, quotes removed), ``bad_quoting`` (lines whose quoting
    breaks RFC 4180: their parts are meaningless) and whether any field was quoted."""

    parts: pa.ListArray
    bad_quoting: np.ndarray
    quoted: bool

    def counts(self) -> np.ndarray:
        return pc.list_value_length(self.parts).to_numpy(zero_copy_only=False)

    def columns(self, layout: Layout) -> list[pa.Array]:
        """user, item, rating[, timestamp] as string arrays (every line must have the layout's field count)."""
        return [pc.list_element(self.parts, j) for j in layout.positions]

    def is_header(self, layout: Layout) -> np.ndarray:
        """Lines whose fields are the header's names (BOM-prefixed lines: see :func:`repeated_headers`)."""
        names = layout.names
        hit = self.counts() == len(names)
        if not names or not hit.any():
            return np.zeros(len(self.parts), dtype=bool)
        idx = np.flatnonzero(hit)
        sub = self.parts.take(pa.array(idx))
        same = np.ones(len(idx), dtype=bool)
        for j, name in enumerate(names):
            col = pc.list_element(sub, j)
            same &= pc.fill_null(pc.equal(col, pa.scalar(name, col.type)), False).to_numpy(
                zero_copy_only=False
            )
        hit[idx] = same
        return hit & ~self.bad_quoting


def split_fields_arrow(lines: pa.Array, sep: str) -> Fields:
    """:func:`~streamrec.core.ratings_format.split_fields` for an array of lines, vectorised.

    Lines without a double quote are split on ``sep``; lines whose quoted fields hold no separator and no
    doubled quote are split and unquoted vectorised; the rare rest (``"3,5"``, ``"a""b"``) line by line."""
    parts = pc.split_pattern(lines, sep)
    n = len(lines)
    has_q = pc.fill_null(pc.match_substring(lines, '"'), False).to_numpy(zero_copy_only=False)
    if not has_q.any():
        return Fields(parts, np.zeros(n, dtype=bool), False)
    bad = has_q & ~pa_match(lines, quoting_pattern(sep))
    tricky = np.flatnonzero(has_q & ~bad & ~pa_match(lines, quoting_pattern(sep, simple=True)))
    flat = pc.list_flatten(parts)
    strip = pa.array(pa_match(flat, r'"[^"]*"'))
    flat = pc.if_else(strip, pc.utf8_slice_codeunits(flat, 1, -1), flat)
    parts = pa.ListArray.from_arrays(parts.offsets, flat)
    if tricky.size:
        keep = np.flatnonzero(~np.isin(np.arange(n), tricky))
        exact = pa.array([split_fields(lines[int(i)].as_py(), sep) for i in tricky], parts.type)
        perm = np.empty(n, dtype=np.int64)
        perm[keep] = np.arange(keep.size)
        perm[tricky] = keep.size + np.arange(tricky.size)
        parts = pa.concat_arrays([parts.take(pa.array(keep)), exact]).take(pa.array(perm))
    return Fields(parts, bad, bool((has_q & ~bad).any()))


def repeated_headers(lines: pa.Array, fields: Fields, layout: Layout) -> np.ndarray:
    """Lines that are the header again (:func:`~streamrec.core.ratings_format.is_repeated_header`)."""
    rep = fields.is_header(layout)
    bom = pc.fill_null(pc.starts_with(lines, BOM), False).to_numpy(zero_copy_only=False)
    if bom.any():
        idx = np.flatnonzero(bom)
        stripped = pc.utf8_slice_codeunits(lines.take(pa.array(idx)), 1)
        rep[idx] = split_fields_arrow(stripped, layout.sep).is_header(layout)
    return rep


def arrow_strings(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A Parquet column as strings, the form the rules are written for (dictionaries decoded, float32/16
    widened to float64 first so that ``0.1f`` reads as ``0.10000000149011612`` like Spark's cast)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_float32(arr.type) or pa.types.is_float16(arr.type):
        arr = pc.cast(arr, pa.float64())
    return pc.cast(arr, pa.large_string())

"""The rules of :mod:`streamrec.core.ratings_format` applied to pyarrow arrays (vectorised).

Shared by the pandas reader (``storage.ratings.read_ratings_pandas``, strict: the ok mask and the values) and
the data contract's parser (``pipeline.contract.parse``, lenient: a literal that breaks a rule becomes null and
the Great Expectations suite reports it). No regex literal, header or BOM is written here: they are
:mod:`~streamrec.core.ratings_format`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamrec.core.ratings_format import (
    INT,
    MAX_ID,
    NONFINITE,
    NUM,
    TOLERANCE,
    TS_ABSENT,
    TS_OPTIONAL,
    Layout,
    anchored,
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


def arrow_strings(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A Parquet column as strings, the form the rules are written for (dictionaries decoded, float32/16
    widened to float64 first so that ``0.1f`` reads as ``0.10000000149011612`` like Spark's cast)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_float32(arr.type) or pa.types.is_float16(arr.type):
        arr = pc.cast(arr, pa.float64())
    return pc.cast(arr, pa.large_string())

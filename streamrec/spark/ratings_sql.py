"""The Spark SQL form of the ratings-file rules (:mod:`streamrec.core.ratings_format`): one read per group of
files sharing a layout, every line/row annotated with its parsed values and ``_ok``, one aggregation per group.

Text is read with ``spark.read.text`` when Spark reads the file as it is: plain text under a name without a
compression suffix, or gzip/bzip2 under the suffix Hadoop picks that codec by (``.gz``, ``.bz2``). Any other
file (gzip content named ``.csv``, plain text named ``.gz``) is read on the driver, decompressed and split into
lines there and handed to Spark as a local relation with the same columns: that file is held in the driver's
memory (partitions are small; a bootstrap history is best dropped under its proper suffix).

Quoting (RFC 4180) and the column order of the header need no extra pass: a valid field literal contains no
quote and no separator, so a line is valid exactly when each of its fields is a literal written bare or in
double quotes (one regex per line), and the fields are cut positionally and unquoted by one expression each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from streamrec.core.compression import HADOOP_SUFFIXES, SUFFIXES, decompress
from streamrec.core.ratings_arrow import split_lines
from streamrec.core.ratings_format import (
    BLANK,
    BOM,
    INT,
    NUM,
    SEPARATORS,
    TOLERANCE,
    TS_ABSENT,
    TS_OPTIONAL,
    TS_REQUIRED,
    Layout,
    anchored,
    quoted,
)
from streamrec.core.schema import ITEM, RATING, TS, USER, RatingScale


def _sql_str(text: str) -> str:
    """A Spark SQL raw string literal (the patterns and headers used here contain no single quote)."""
    assert "'" not in text
    return f"r'{text}'"


def _sql_double(x: float) -> str:
    return f"CAST('{x!r}' AS DOUBLE)"


def _rlike(col: str, pattern: str) -> str:
    return f"({col} RLIKE {_sql_str(anchored(pattern))})"


def value_items(layout: Layout, scale: RatingScale, lexical: str) -> list[str]:
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
    if layout.ts_mode == TS_ABSENT:
        items.append("CAST(NULL AS BIGINT) AS _t")
    elif layout.ts_mode == TS_REQUIRED:
        items.append("try_cast(_f3 AS BIGINT) AS _t")
        conds.append("_t >= 0")
    else:
        items.append("CASE WHEN _f3 = '' THEN CAST(NULL AS BIGINT) ELSE try_cast(_f3 AS BIGINT) END AS _t")
        conds.append("(_f3 IS NULL OR _f3 = '' OR _t >= 0)")
    items.append(f"coalesce({' AND '.join(f'({c})' for c in conds)}, false) AS _ok")
    return items


def line_pattern(layout: Layout) -> str:
    """One regex for a whole data line: each field's literal (bare or quoted) in the file's column order,
    joined by the separator (so also the field count)."""
    literal = [INT, INT, NUM]
    if layout.ts_mode == TS_REQUIRED:
        literal.append(INT)
    elif layout.ts_mode == TS_OPTIONAL:
        literal.append(f"(?:{INT})?")
    at = {p: j for j, p in enumerate(layout.positions)}
    return SEPARATORS[layout.sep].join(f"(?:{quoted(literal[at[p]])})" for p in range(layout.n_fields))


def header_pattern(layout: Layout) -> str:
    """The header line again: its names, each bare or quoted, after an optional BOM."""
    return BOM + "?" + SEPARATORS[layout.sep].join(f"(?:{quoted(re.escape(n))})" for n in layout.names)


def text_fields(layout: Layout) -> list[str]:
    """SQL extracting user, item, rating[, timestamp] from a line that matched :func:`line_pattern`: the fields
    cut by position (byte-level, no regex split), unquoted, in the header's order."""
    sep = "'\\t'" if layout.sep == "\t" else f"'{layout.sep}'"
    first = f"substring_index(value, {sep}, 1)"
    second = f"substring_index(substring_index(value, {sep}, 2), {sep}, -1)"
    last = f"substring_index(value, {sep}, -1)"
    if layout.n_fields == 3:
        cut = [first, second, last]
    else:
        cut = [first, second, f"substring_index(substring_index(value, {sep}, -2), {sep}, 1)", last]
    unquoted = [f"""IF(startswith({c}, '"'), substring({c}, 2, length({c}) - 2), {c})""" for c in cut]
    return [unquoted[p] for p in layout.positions]


_GUARD = (
    "raise_error('ratings changed after validation: a row read now no longer passes the rules of "
    "streamrec.core.ratings_format')"
)


def output(passes: str = "_ok") -> list[str]:
    """The guarded output columns: a row whose ``passes`` condition fails raises (see the module docstring of
    :mod:`streamrec.spark.ratings`). For text, blank and header lines pass too (their values are null -> 0): they
    are filtered out by the caller, and Spark may evaluate a caller's later filter (e.g. the hold-out hash of
    ``user, item``) on them before that filter, so the guard must not fire on them."""
    return [
        f"coalesce(CASE WHEN {passes} THEN _u ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {USER}",
        f"coalesce(CASE WHEN {passes} THEN _i ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {ITEM}",
        f"coalesce(CASE WHEN {passes} THEN _r ELSE {_GUARD} END, CAST(0 AS DOUBLE)) AS {RATING}",
        f"CAST(CASE WHEN {passes} THEN _t ELSE {_GUARD} END AS BIGINT) AS {TS}",
    ]


@dataclass
class Group:
    """One Spark read of files sharing a layout: per-file(/split) aggregates, annotated rows, guarded output."""

    layout: Layout
    files: list[str]
    stats: DataFrame
    annotated: DataFrame
    data: DataFrame


def spark_escape(path: str) -> str:
    """Escape Hadoop glob characters so a path is read literally."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def read_natively(path: str, layout: Layout) -> bool:
    """Whether Spark's text reader reads ``path`` as the rules do: the codec Hadoop picks by the suffix (none
    for other names) is the file's compression."""
    if layout.compression is not None:
        return path.endswith(SUFFIXES[layout.compression])
    return not path.endswith(HADOOP_SUFFIXES)


def driver_lines(spark: SparkSession, data: bytes, layout: Layout, spark_name: str) -> DataFrame:
    """A file read on the driver (``data``: its raw bytes) as the columns the text reader's rows get here:
    ``_file`` (``spark_name``: how Spark names the file), ``_block`` 0, ``_m`` the line index, ``value``."""
    if layout.compression is not None:
        data = decompress(data, layout.compression)
    lines = split_lines(data) if data else pa.array([], pa.large_string())
    n = len(lines)
    table = pa.table(
        {
            "_file": pa.array([spark_name] * n, pa.string()),
            "_block": pa.array(np.zeros(n, np.int64)),
            "_m": pa.array(np.arange(n, dtype=np.int64)),
            "value": lines.cast(pa.string()),
        }
    )
    return spark.createDataFrame(table)


def text_group(
    spark: SparkSession,
    layout: Layout,
    files: list[str],
    scale: RatingScale,
    read_bytes: dict[str, tuple[bytes, str]] | None = None,
) -> Group:
    """Annotate the lines of ``files`` (one layout). ``read_bytes``: files read on the driver instead, each
    mapped to (its raw bytes, Spark's name for it); see :func:`read_natively`."""
    from pyspark.sql import functions as F

    inline = read_bytes or {}
    frames = []
    native = [f for f in files if f not in inline]
    if native:
        raw = spark.read.text([spark_escape(f) for f in native])
        frames.append(
            raw.selectExpr(
                "_metadata.file_path AS _file",
                "_metadata.file_block_start AS _block",
                "monotonically_increasing_id() AS _m",
                "value",
            )
        )
    frames += [driver_lines(spark, data, layout, name) for data, name in inline.values()]
    base = reduce(lambda a, b: a.unionByName(b), frames)
    hdr = (
        f"(NOT _lex AND {_rlike('value', header_pattern(layout))})" if layout.header is not None else "false"
    )
    lines = [
        "value",
        f"{_rlike('value', line_pattern(layout))} AS _lex",
        f"(NOT _lex AND {_rlike('value', BLANK)}) AS _blank",
        f"{hdr} AS _hdr",
        *[f"{x} AS _f{j}" for j, x in enumerate(text_fields(layout))],
        *value_items(layout, scale, "_lex"),
    ]
    annotated = base.selectExpr("_file", "_block", "_m", *lines)
    bad = "(NOT _blank AND NOT _hdr AND NOT _ok)"
    stats = annotated.groupBy("_file", "_block").agg(
        *[
            F.expr(e)
            for e in (
                "count(1) AS n",
                "min(_m) AS m0",
                "min(CASE WHEN NOT _blank THEN _m END) AS first_nonblank",
                "sum(CAST(_hdr AS BIGINT)) AS n_hdr",
                "min(CASE WHEN _hdr THEN _m END) AS hdr_min",
                "max(CASE WHEN _hdr THEN _m END) AS hdr_max",
                f"sum(CAST({bad} AS BIGINT)) AS n_bad",
                f"min(CASE WHEN {bad} THEN _m END) AS bad_m",
            )
        ]
    )
    data = annotated.where("NOT _blank AND NOT _hdr").selectExpr(*output("(_ok OR _blank OR _hdr)"), "_file")
    return Group(layout, files, stats, annotated, data)


def parquet_group(spark: SparkSession, layout: Layout, files: list[str], scale: RatingScale) -> Group:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    reader = spark.read if layout.ddl is None else spark.read.schema(layout.ddl)
    raw = reader.parquet(*[spark_escape(f) for f in files])
    types = {f.name: f.dataType for f in raw.schema.fields}

    def as_string(name: str) -> str:
        c = f"`{name}`"
        if isinstance(types[name], T.FloatType):
            c = f"CAST({c} AS DOUBLE)"
        return f"CAST({c} AS STRING)"

    fields = [f"{as_string(c)} AS _f{j}" for j, c in enumerate(layout.columns)]
    lexical = [_rlike("_f0", INT), _rlike("_f1", INT), _rlike("_f2", NUM)]
    if layout.ts_mode == TS_OPTIONAL:
        lexical.append(f"(_f3 IS NULL OR _f3 = '' OR {_rlike('_f3', INT)})")
    items = [*fields, *value_items(layout, scale, " AND ".join(lexical))]
    annotated = raw.selectExpr("_metadata.file_path AS _file", "_metadata.row_index AS _row", *items)
    stats = annotated.groupBy("_file").agg(
        F.expr("sum(CAST(NOT _ok AS BIGINT)) AS n_bad"),
        F.expr("min(CASE WHEN NOT _ok THEN _row END) AS bad_row"),
    )
    data = annotated.selectExpr(*output(), "_file")
    return Group(layout, files, stats, annotated, data)


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

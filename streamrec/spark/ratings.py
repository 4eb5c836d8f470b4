"""The Spark reader of ratings files (:func:`read_ratings`), applying :mod:`streamrec.core.ratings_format`.

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

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from streamrec.core.ratings_format import (
    BLANK,
    BLANK_LINE,
    BOM,
    INT,
    KNOWN_HEADER,
    NUM,
    REPEATED_HEADER,
    TOLERANCE,
    TS_ABSENT,
    TS_OPTIONAL,
    TS_REQUIRED,
    Layout,
    RatingsFormatError,
    anchored,
    check_fields,
    check_line,
    parquet_layout,
    spark_ddl,
)
from streamrec.core.schema import HALF_STAR, ITEM, RATING, TS, USER, RatingScale
from streamrec.spark.schema import RATINGS_SCHEMA
from streamrec.storage.ratings import ArrowFS, FileSystem, expand_entries, head_layout, parquet_schema


class HadoopFS:
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
    return f"({col} RLIKE {_sql_str(anchored(pattern))})"


def _value_items(layout: Layout, scale: RatingScale, lexical: str) -> list[str]:
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


def _line_pattern(layout: Layout) -> str:
    """One regex for a whole data line: the field literals joined by the separator (so also the field count)."""
    sep = r"\t" if layout.sep == "\t" else re.escape(layout.sep)
    fields = [INT, INT, NUM]
    if layout.ts_mode == TS_REQUIRED:
        fields.append(INT)
    elif layout.ts_mode == TS_OPTIONAL:
        fields.append(f"(?:{INT})?")
    return sep.join(f"(?:{f})" for f in fields)


def _text_fields(layout: Layout) -> list[str]:
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
    "streamrec.storage.loader')"
)
_OUTPUT = [
    f"coalesce(CASE WHEN _ok THEN _u ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {USER}",
    f"coalesce(CASE WHEN _ok THEN _i ELSE {_GUARD} END, CAST(0 AS BIGINT)) AS {ITEM}",
    f"coalesce(CASE WHEN _ok THEN _r ELSE {_GUARD} END, CAST(0 AS DOUBLE)) AS {RATING}",
    f"CAST(CASE WHEN _ok THEN _t ELSE {_GUARD} END AS BIGINT) AS {TS}",
]


@dataclass
class Group:
    """One Spark read of files sharing a layout: per-file(/split) aggregates, annotated rows, guarded output."""

    layout: Layout
    files: list[str]
    stats: DataFrame
    annotated: DataFrame
    data: DataFrame


def _spark_escape(path: str) -> str:
    """Escape Hadoop glob characters so a path is read literally."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def text_group(spark: SparkSession, layout: Layout, files: list[str], scale: RatingScale) -> Group:
    from pyspark.sql import functions as F

    raw = spark.read.text([_spark_escape(f) for f in files])
    hdr = "false"
    if layout.header is not None:
        hdr = f"(value = {_sql_str(layout.header)} OR value = {_sql_str(BOM + layout.header)})"
    lines = [
        "value",
        f"{_rlike('value', _line_pattern(layout))} AS _lex",
        f"(NOT _lex AND {_rlike('value', BLANK)}) AS _blank",
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
    return Group(layout, files, stats, annotated, data)


def parquet_group(spark: SparkSession, layout: Layout, files: list[str], scale: RatingScale) -> Group:
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
    lexical = [_rlike("_f0", INT), _rlike("_f1", INT), _rlike("_f2", NUM)]
    if layout.ts_mode == TS_OPTIONAL:
        lexical.append(f"(_f3 IS NULL OR _f3 = '' OR {_rlike('_f3', INT)})")
    items = [*fields, *_value_items(layout, scale, " AND ".join(lexical))]
    annotated = raw.selectExpr("_metadata.file_path AS _file", "_metadata.row_index AS _row", *items)
    stats = annotated.groupBy("_file").agg(
        F.expr("sum(CAST(NOT _ok AS BIGINT)) AS n_bad"),
        F.expr("min(CASE WHEN NOT _ok THEN _row END) AS bad_row"),
    )
    data = annotated.selectExpr(*_OUTPUT, "_file")
    return Group(layout, files, stats, annotated, data)


def _norm_uri(uri: str) -> str:
    return re.sub(r"^file:/+", "/", uri)


def _text_error(
    group: Group, path: str, spark_file: str, blocks: list[Any], scale: RatingScale
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
    found = check_line(text, layout, scale)
    if found is None:
        raise RuntimeError(f"internal: Spark and scalar rules disagree on {path} line {n}: {text!r}")
    return RatingsFormatError(path, n, *found)


def _parquet_error(
    group: Group, path: str, spark_file: str, stats: Any, scale: RatingScale
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
    found = check_fields(list(got[0]), group.layout, scale)
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
    fs: FileSystem = HadoopFS(spark) if getattr(spark, "_jvm", None) is not None else ArrowFS()
    entries = expand_entries(fs, paths)
    files = list(entries)
    layouts: dict[str, Layout] = {}
    for f in files:
        layout = head_layout(fs, f, fmt)
        if not layout.is_text:
            sch = parquet_schema(fs, f)
            layout = parquet_layout(f, sch.names, sch.to_string(show_schema_metadata=False), spark_ddl(sch))
        layouts[f] = layout
    by_layout: dict[Layout, list[str]] = {}
    for f in files:
        by_layout.setdefault(layouts[f], []).append(f)
    groups = [
        (text_group if layout.is_text else parquet_group)(spark, layout, group_files, scale)
        for layout, group_files in by_layout.items()
    ]
    if isinstance(fs, HadoopFS):
        names = {_norm_uri(fs.qualified(f)): f for f in files}
    else:
        names = {_norm_uri(ArrowFS.resolve(f)[1]): f for f in files}

    # one aggregation job for all groups; then, in file order, the first file with a problem (extra jobs only then)
    found: dict[str, tuple[Group, str, list[Any]]] = {}
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

"""The Spark reader of ratings files (:func:`read_ratings`), applying :mod:`streamrec.core.ratings_format`.

How the Spark reader stays fast and still reports exact lines: files are read with ``spark.read.text``; one
regex per line checks the literals (bare or in RFC 4180 double quotes) and the field count, ``substring_index``
cuts the fields (in the header's column order) and ``try_cast`` plus arithmetic check the ranges, all as SQL
expressions in the JVM (:mod:`streamrec.spark.ratings_sql`). One aggregation (hash aggregate, fixed-width values
only), grouped by file and file split (``_metadata.file_path``, ``_metadata.file_block_start``), counts lines,
bad and header lines and keeps, per split, the ``monotonically_increasing_id`` of its first line, first bad
line and first/last header. Lines of a split are read in order and are contiguous in that id, so a line number is
``lines in earlier splits of the file + (id - first id of the split) + 1``: the first bad line of each file
comes out of that one pass; blank lines are skipped but keep their numbers. Only when a file is bad, one more
filtered job reads back the text of that one line (for the message); a header repeated three or more times
inside the first split needs one more. Nothing is read in Python but the first bytes of each file (and Parquet
footers), through the Hadoop file system of the path, so ``s3a://`` works the same; except a compressed file
whose name does not carry its codec's suffix (or a plain file under such a suffix), which is read whole on the
driver (:func:`streamrec.spark.ratings_sql.read_natively`). The returned DataFrame re-reads the files lazily and
carries the check as a guard: a row that no longer passes (a file changed after validation) fails the job with
``raise_error`` instead of slipping through.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from streamrec.core.ratings_format import (
    KNOWN_HEADER,
    REPEATED_HEADER,
    Layout,
    RatingsFormatError,
    check_fields,
    check_line,
    parquet_layout,
)
from streamrec.core.schema import HALF_STAR, RatingScale
from streamrec.spark.ratings_sql import (
    Group,
    parquet_group,
    read_natively,
    spark_ddl,
    text_group,
)
from streamrec.spark.schema import RATINGS_SCHEMA
from streamrec.storage.ratings import ArrowFS, FileSystem, expand_entries, head_layout, parquet_schema

__all__ = ["HadoopFS", "Group", "read_ratings", "text_group", "parquet_group"]


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

    def read(self, path: str) -> bytes:
        """The whole file (for the few files read on the driver)."""
        fs, jp = self._fs(path)
        stream = fs.open(jp)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def qualified(self, path: str) -> str:
        fs, jp = self._fs(path)
        return str(fs.makeQualified(jp).toUri().toString())


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
    if layout.header is not None:
        # the header is the first non-blank line: in the first split that has one (earlier ones are blank)
        at = next((k for k, b in enumerate(blocks) if b["first_nonblank"] is not None), None)
        if at is None:
            return None
        b0 = blocks[at]
        if b0["hdr_min"] != b0["first_nonblank"]:
            n = line(b0, b0["first_nonblank"])
            return RatingsFormatError(path, n, KNOWN_HEADER, f"line {n} is not the header {layout.header!r}")
        for b in blocks[at + 1 :]:
            if b["n_hdr"]:
                candidates.append((line(b, b["hdr_min"]), REPEATED_HEADER, b, 0))
        if b0["n_hdr"] == 2:
            candidates.append((line(b0, b0["hdr_max"]), REPEATED_HEADER, b0, 0))
        elif b0["n_hdr"] > 2:  # the second header of that split: one filtered job
            second = (
                group.annotated.where(
                    (F.col("_file") == spark_file)
                    & (F.col("_block") == b0["_block"])
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
    if kind == REPEATED_HEADER:
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
    if isinstance(fs, HadoopFS):
        spark_names = {f: fs.qualified(f) for f in files}
    else:
        spark_names = {f: ArrowFS.resolve(f)[1] for f in files}
    names = {_norm_uri(name): f for f, name in spark_names.items()}
    groups = []
    for layout, group_files in by_layout.items():
        if layout.is_text:
            on_driver = {f: (fs.read(f), spark_names[f]) for f in group_files if not read_natively(f, layout)}
            groups.append(text_group(spark, layout, group_files, scale, on_driver))
        else:
            groups.append(parquet_group(spark, layout, group_files, scale))

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

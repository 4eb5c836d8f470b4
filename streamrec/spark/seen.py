"""The seen-items side table on Spark: built by the bootstrap, folded forward by the streaming update.

One row per user, ``user long, items array<long> (ascending), ratings array<double> (aligned)``: see
:mod:`streamrec.core.seen` for the table and the rule for a repeated (user, item) pair (the latest rating wins:
later partition, then later timestamp, then the higher rating).

* :func:`build` (bootstrap): every rating of the history, grouped per user.
* :func:`merge` (update): the touched users' old rows are exploded, unioned with the batch's ratings (tagged with
  their partition's position; the old rows count as earlier than any of them), collapsed again; every untouched
  user's row is carried over as it was (anti-join + union, as the factor tables). "Latest wins" is associative,
  so a batch of partitions gives the same table as the partitions applied one by one.

All of it is Spark SQL (no Python workers): O(|B| + the touched users' histories) work per update, plus the
O(table) carry-over that writing the new version's copy costs.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from streamrec.core.schema import ITEM, RATING, TS, USER

SEEN_SCHEMA = T.StructType(
    [
        T.StructField(USER, T.LongType(), False),
        T.StructField("items", T.ArrayType(T.LongType(), True), False),
        T.StructField("ratings", T.ArrayType(T.DoubleType(), True), False),
    ]
)
_OLDEST = -(2**63)


def _tagged(ratings: DataFrame, seq: str | None) -> DataFrame:
    ts = F.coalesce(F.col(TS), F.lit(_OLDEST)) if TS in ratings.columns else F.lit(_OLDEST)
    return ratings.select(
        USER,
        ITEM,
        F.col(RATING).cast("double").alias(RATING),
        (F.col(seq).cast("long") if seq else F.lit(0).cast("long")).alias("_seq"),
        ts.cast("long").alias("_ts"),
    )


def _collapse(rows: DataFrame) -> DataFrame:
    """(user, item, rating, _seq, _ts) rows -> one seen row per user (the latest rating of each item)."""
    latest = rows.groupBy(USER, ITEM).agg(F.max(F.struct("_seq", "_ts", RATING)).alias("_m"))
    per_user = latest.groupBy(USER).agg(
        F.array_sort(
            F.collect_list(F.struct(F.col(ITEM).alias("i"), F.col(f"_m.{RATING}").alias("r")))
        ).alias("_l")
    )
    return per_user.select(
        F.col(USER).cast("long").alias(USER),
        F.col("_l.i").alias("items"),
        F.col("_l.r").alias("ratings"),
    )


def build(ratings: DataFrame, seq: str | None = None) -> DataFrame:
    """The seen table of ``ratings`` (``schema.RATINGS_SCHEMA``; ``seq``: an optional column ordering batches)."""
    return _collapse(_tagged(ratings, seq))


def merge(old: DataFrame, batch: DataFrame, seq: str = "seq") -> DataFrame:
    """``old`` (a seen table) with the ratings of ``batch`` folded in (``seq``: the partition's position)."""
    touched = batch.select(USER).distinct()
    old_rows = (
        old.join(touched, USER)
        .select(USER, F.explode(F.arrays_zip("items", "ratings")).alias("_z"))
        .select(
            USER,
            F.col("_z.items").alias(ITEM),
            F.col("_z.ratings").alias(RATING),
            F.lit(-1).cast("long").alias("_seq"),
            F.lit(_OLDEST).cast("long").alias("_ts"),
        )
    )
    fresh = _collapse(old_rows.unionByName(_tagged(batch, seq)))
    kept = old.join(touched, USER, "left_anti").select(USER, "items", "ratings")
    return kept.unionByName(fresh)


def load(store, spark, version: str) -> DataFrame | None:
    """A stored version's seen table as a DataFrame, or None when the version has none."""
    keys = store.table_keys(version, "seen")
    if keys is None:
        return None
    if not keys:
        return spark.createDataFrame([], SEEN_SCHEMA)
    return spark.read.schema(SEEN_SCHEMA).parquet(*[store.bucket.spark_uri(k) for k in keys])

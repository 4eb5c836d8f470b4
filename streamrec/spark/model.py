"""The factor model on Spark (state only), and its bridge to the store and to numpy.

``FactorModel(mu, n, rank, users, items)``: ``users`` / ``items`` are DataFrames of ``spark.schema.FACTOR_SCHEMA``
(one row per entity). :func:`write_model` / :func:`load_model` move it in and out of a
:class:`~streamrec.storage.store.ModelStore` with Spark's own Parquet I/O; :func:`to_arrays` collects a small one
to the driver as :class:`~streamrec.core.arrays.ModelArrays` (the numpy form every other layer reads).
A time-aware model also carries its time terms (``time``: :class:`~streamrec.spark.temporal.TimeFrames`; the
store's optional tables ``user_time``, ``item_bins``, ``user_days`` and the manifest's ``time``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.core.arrays import ModelArrays, side_from_table
from streamrec.core.temporal import TimeConfig
from streamrec.spark.schema import FACTOR_SCHEMA
from streamrec.spark.temporal import SCHEMAS as TIME_SCHEMAS
from streamrec.spark.temporal import TimeFrames
from streamrec.storage.store import OPTIONAL_TABLES, SIDES, ModelStore


@dataclass
class FactorModel:
    """``time``: the time terms of a time-aware model (``streamrec.spark.temporal.TimeFrames``), None for a
    time-blind one."""

    mu: float
    n: int
    rank: int
    users: DataFrame
    items: DataFrame
    time: TimeFrames | None = None

    def cache(self) -> FactorModel:
        self.users = self.users.cache()
        self.items = self.items.cache()
        if self.time is not None:
            self.time.cache()
        return self


def to_arrays(model: FactorModel, manifest: dict | None = None) -> ModelArrays:
    """Collect a (small) Spark ``FactorModel`` to the driver as arrays."""
    users = side_from_table(model.users.select("id", "bias", "n", "factors").toArrow(), model.rank, "users")
    items = side_from_table(model.items.select("id", "bias", "n", "factors").toArrow(), model.rank, "items")
    arrays = ModelArrays.from_sides(model.mu, model.rank, users, items, dict(manifest or {}), model.n)
    if model.time is not None:
        tables = {
            name: df.select(*TIME_SCHEMAS[name].fieldNames()).toArrow()
            for name, df in model.time.tables().items()
        }
        arrays.attach_time(model.time.config, model.time.now, tables)
    return arrays


def write_model(
    store: ModelStore,
    model: FactorModel,
    manifest: dict,
    version: str | None = None,
    extra: Mapping[str, DataFrame] | None = None,
) -> str:
    """Write ``model`` with Spark as a new candidate version of ``store`` and return its id.

    The tables are written in overwrite mode (a retried task rewrites cleanly), then ``manifest.json`` with
    status ``candidate`` and the store fields filled in. Refuses (``StoreError``) to overwrite a published
    version. Same layout and guarantees as :meth:`ModelStore.write_arrays` (pyarrow, no Spark).

    ``extra``: optional tables (``seen``, ``recommendations``) by name; written after the factor tables and
    before the manifest, listed in it, each file sorted by ``user`` (then ``rank``). A lazy table is computed by
    its write: the manifest's ``write_seconds`` records each table's seconds (compute and write).
    """
    version = store.begin_write(version)
    if model.time is not None:  # a time-aware model: its time tables, config and "now"
        extra = {**(extra or {}), **_time_tables(model.time)}
        manifest = {**manifest, "time": {"config": model.time.config.as_dict(), "now": model.time.now}}
    seconds: dict[str, float] = {}
    for side, df in (("users", model.users), ("items", model.items)):
        t0 = time.perf_counter()
        out = df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in FACTOR_SCHEMA.fields])
        if store.table_files:
            out = out.repartition(store.table_files)
        out.write.mode("overwrite").parquet(store.table_uri(version, side))
        seconds[side] = round(time.perf_counter() - t0, 3)
    written = list(SIDES)
    for name in OPTIONAL_TABLES:
        store.bucket.delete_prefix(store.version_key(version, name))  # a rewrite never keeps an old one
        if extra and name in extra:
            t0 = time.perf_counter()
            out = extra[name]
            if store.table_files:
                out = out.repartition(store.table_files)
            order = [c for c in ("user", "rank") if c in out.columns]  # (time tables: as they come)
            out = out.sortWithinPartitions(*order) if order else out
            out.write.mode("overwrite").parquet(store.table_uri(version, name))
            written.append(name)
            seconds[name] = round(time.perf_counter() - t0, 3)
    files = store.data_files(version, tuple(written))
    counts = _row_counts(model.users.sparkSession, store, version, files)
    manifest = {**manifest, "write_seconds": seconds}
    return store.finish_write(
        version, manifest, mu=model.mu, n=model.n, rank=model.rank, files=files, counts=counts
    )


def _row_counts(
    spark: SparkSession, store: ModelStore, version: str, files: Mapping[str, list]
) -> dict[str, int]:
    """Rows of each written table, read back from its files in one Spark job (a count per table would be one
    job each: a round trip apiece over Spark Connect)."""
    frames = [
        spark.read.parquet(
            *[store.bucket.spark_uri(store.version_key(version, f["key"])) for f in found]
        ).select(F.lit(name).alias("_table"))
        for name, found in files.items()
        if found
    ]
    counts = dict.fromkeys(files, 0)
    if frames:
        rows = reduce(DataFrame.unionByName, frames).groupBy("_table").count().collect()
        counts.update({row["_table"]: int(row["count"]) for row in rows})
    return counts


def load_model(store: ModelStore, spark: SparkSession, version: str | None = None) -> FactorModel:
    """A stored version as a Spark ``FactorModel`` (None = the current version)."""
    version, doc, keys = store.version_tables(version)
    tables: dict[str, DataFrame] = {}
    for side in SIDES:
        uris = [store.bucket.spark_uri(k) for k in keys[side]]
        if uris:
            tables[side] = spark.read.schema(FACTOR_SCHEMA).parquet(*uris)
        else:
            tables[side] = spark.createDataFrame([], FACTOR_SCHEMA)
    time = None
    if doc.get("time"):  # a time-aware version (one without ``time`` is time-blind, as every older one)
        frames = {}
        for name, schema in TIME_SCHEMAS.items():
            uris = [store.bucket.spark_uri(k) for k in store.table_keys(version, name, doc) or []]
            frames[name] = (
                spark.read.schema(schema).parquet(*uris) if uris else spark.createDataFrame([], schema)
            )
        now = doc["time"].get("now")
        config = TimeConfig.from_dict(doc["time"]["config"])
        time = TimeFrames(config, None if now is None else int(now), **frames)
    return FactorModel(
        mu=float(doc["mu"]),
        n=int(doc["n_ratings"]),
        rank=int(doc["rank"]),
        users=tables["users"],
        items=tables["items"],
        time=time,
    )


def _time_tables(time: TimeFrames) -> dict[str, DataFrame]:
    """The time tables in the store's column types (``streamrec.spark.temporal.SCHEMAS``)."""
    return {
        name: df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in TIME_SCHEMAS[name].fields])
        for name, df in time.tables().items()
    }

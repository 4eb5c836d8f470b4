"""The factor model on Spark (state only), and its bridge to the store and to numpy.

``FactorModel(mu, n, rank, users, items)``: ``users`` / ``items`` are DataFrames of ``spark.schema.FACTOR_SCHEMA``
(one row per entity). :func:`write_model` / :func:`load_model` move it in and out of a
:class:`~streamrec.storage.store.ModelStore` with Spark's own Parquet I/O; :func:`to_arrays` collects a small one
to the driver as :class:`~streamrec.core.arrays.ModelArrays` (the numpy form every other layer reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.core.arrays import ModelArrays, side_from_table
from streamrec.spark.schema import FACTOR_SCHEMA
from streamrec.storage.store import OPTIONAL_TABLES, SIDES, ModelStore


@dataclass
class FactorModel:
    mu: float
    n: int
    rank: int
    users: DataFrame
    items: DataFrame

    def cache(self) -> FactorModel:
        self.users = self.users.cache()
        self.items = self.items.cache()
        return self


def to_arrays(model: FactorModel, manifest: dict | None = None) -> ModelArrays:
    """Collect a (small) Spark ``FactorModel`` to the driver as arrays."""
    users = side_from_table(model.users.select("id", "bias", "n", "factors").toArrow(), model.rank, "users")
    items = side_from_table(model.items.select("id", "bias", "n", "factors").toArrow(), model.rank, "items")
    return ModelArrays.from_sides(model.mu, model.rank, users, items, dict(manifest or {}), model.n)


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
    before the manifest, listed in it, each file sorted by ``user`` (then ``rank``).
    """
    version = store.begin_write(version)
    counts: dict[str, int] = {}
    for side, df in (("users", model.users), ("items", model.items)):
        out = df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in FACTOR_SCHEMA.fields])
        if store.table_files:
            out = out.repartition(store.table_files)
        out.write.mode("overwrite").parquet(store.table_uri(version, side))
    written = list(SIDES)
    for name in OPTIONAL_TABLES:
        store.bucket.delete_prefix(store.version_key(version, name))  # a rewrite never keeps an old one
        if extra and name in extra:
            out = extra[name]
            if store.table_files:
                out = out.repartition(store.table_files)
            out = out.sortWithinPartitions(*[c for c in ("user", "rank") if c in out.columns])
            out.write.mode("overwrite").parquet(store.table_uri(version, name))
            written.append(name)
    files = store.data_files(version, tuple(written))
    spark = model.users.sparkSession
    for side in written:
        uris = [store.bucket.spark_uri(store.version_key(version, f["key"])) for f in files[side]]
        counts[side] = spark.read.parquet(*uris).count() if uris else 0
    return store.finish_write(
        version, manifest, mu=model.mu, n=model.n, rank=model.rank, files=files, counts=counts
    )


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
    return FactorModel(
        mu=float(doc["mu"]),
        n=int(doc["n_ratings"]),
        rank=int(doc["rank"]),
        users=tables["users"],
        items=tables["items"],
    )

"""Reading a version's Parquet tables through the bucket with pyarrow (the store's serving path): the factor
tables, the optional ones, and a time-aware model's time terms."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec.core.arrays import ARROW_FACTOR_SCHEMA, ModelArrays, side_from_table
from streamrec.core.temporal import TIME_TABLES, TimeConfig
from streamrec.storage.bucket import Bucket


def read_side(bucket: Bucket, keys: list[str], rank: int, side: str) -> tuple[np.ndarray, ...]:
    """One side's factor tables (the Parquet files at ``keys``) as ``(ids, bias, n, factors)``, read in parallel."""
    columns = ["id", "bias", "n", "factors"]

    def read(key: str) -> pa.Table:
        return pq.read_table(pa.BufferReader(bucket.read_bytes(key)), columns=columns)

    if len(keys) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
            parts = list(pool.map(read, keys))
    else:
        parts = [read(k) for k in keys]
    if not parts:
        return side_from_table(ARROW_FACTOR_SCHEMA.empty_table(), rank, side)
    table = pa.concat_tables([p.select(columns) for p in parts], promote_options="permissive")
    return side_from_table(table, rank, side)


def read_table(bucket: Bucket, keys: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """The Parquet files at ``keys`` as one Arrow table (``columns``: only those); None when there are none."""
    parts = [pq.read_table(pa.BufferReader(bucket.read_bytes(k)), columns=columns) for k in keys]
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def attach_time(
    bucket: Bucket, arrays: ModelArrays, doc: dict, keys_of: Callable[[str], list[str] | None]
) -> ModelArrays:
    """``arrays`` with the time terms of a time-aware version attached (its manifest ``doc`` has ``time``; its
    tables' file keys from ``keys_of(name)``); a time-blind version's arrays unchanged."""
    entry = doc.get("time")
    if not entry:
        return arrays
    tables = {}
    for name, schema in TIME_TABLES.items():
        table = read_table(bucket, keys_of(name) or [], schema.names)
        tables[name] = schema.empty_table() if table is None else table.select(schema.names).cast(schema)
    return arrays.attach_time(TimeConfig.from_dict(entry["config"]), entry.get("now"), tables)

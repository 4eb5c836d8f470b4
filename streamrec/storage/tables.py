"""Reading a version's Parquet factor tables through the bucket with pyarrow (the store's serving path)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec.core.arrays import ARROW_FACTOR_SCHEMA, side_from_table
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

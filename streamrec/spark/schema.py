"""The Spark types of the ratings and factor tables whose column names :mod:`streamrec.core.schema` defines.

Ratings: ``user long, item long, rating double, ts long (nullable)``; factor tables: ``id long, bias double,
n long, factors array<double>`` (one row per entity).
"""

from __future__ import annotations

from pyspark.sql import types as T

from streamrec.core.schema import ITEM, RATING, TS, USER

RATINGS_SCHEMA = T.StructType(
    [
        T.StructField(USER, T.LongType(), False),
        T.StructField(ITEM, T.LongType(), False),
        T.StructField(RATING, T.DoubleType(), False),
        T.StructField(TS, T.LongType(), True),
    ]
)

FACTOR_SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("bias", T.DoubleType(), False),
        T.StructField("n", T.LongType(), False),
        T.StructField("factors", T.ArrayType(T.DoubleType(), True), False),
    ]
)

"""Deterministic hold-out: a fixed share of every accepted batch of ratings is kept out of training.

A row is held out when ``xxhash64(user, item, seed) mod 10_000 < fraction * 10_000``: the decision depends only
on the row's ids and the seed, so a retried job, a retrain from scratch and the stream all agree on which rows
are validation, and the validation set grows with the stream (new users are judged too, not only yesterday's).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.core.schema import ITEM, USER

BUCKETS = 10_000


def holdout_flag(fraction: float, seed: int):
    """Boolean column: True for held-out rows."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    h = F.pmod(F.xxhash64(F.col(USER), F.col(ITEM), F.lit(seed)), F.lit(BUCKETS))
    return h < F.lit(int(round(fraction * BUCKETS)))


def split(ratings: DataFrame, fraction: float, seed: int = 42) -> tuple[DataFrame, DataFrame]:
    """``(train, holdout)``; ``fraction == 0`` gives an empty holdout."""
    flag = holdout_flag(fraction, seed)
    return ratings.where(~flag), ratings.where(flag)

r"""Time-aware biases on Spark: the bootstrap's fit and the column expressions of the prediction rule.

The terms and their evaluation are defined in :mod:`streamrec.core.temporal` (Koren 2009)::

    b_u(t) = b_u + α_u · dev_u(t) + b_{u,day(t)}        b_i(t) = b_i + b_{i,Bin(t)}

**Fit** (:func:`fit_biases`): the bootstrap's alternating shrunk means (``streamrec.spark.bootstrap``, stage 2),
with the time terms as more blocks of the same coordinate descent, each the exact minimiser of the regularised
squared error with the other blocks fixed. ``t_u`` = the mean day of the user's timed ratings, ``dev`` fixed by
it. Per alternation, with e the rating less mu and every other term::

    b_i       = Σ_{R(i)} e / (reg_item + |R(i)|)
    b_{i,b}   = Σ_{R(i) in bin b} e / (reg_bin + |R(i,b)|)
    b_u       = Σ_{R(u)} e / (reg_user + |R(u)|)
    α_u       = Σ_{R(u)} dev · e / (reg_drift + Σ_{R(u)} dev²)
    b_{u,d}   = Σ_{R(u) on day d} e / (reg_day + |R(u,d)|)

in that order (item side, then user side), starting from zero. One pass over the ratings per side and
alternation, as the time-blind fit: the ratings are summed per (item, bin) and per (user, day) (Σ e, Σ dev,
Σ dev · e, Σ dev², count), and the blocks of one side are solved from those sums (rows without a timestamp form
the group of a null bin / day, whose time terms are 0).

**Prediction** (:func:`with_terms`): the same rule as ``streamrec.core.arrays.predict`` (``core.temporal``'s
evaluation: a time after the data uses the user's last day and the item's last bin; a missing ``ts`` means now).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from streamrec.core.params import BootstrapParams
from streamrec.core.schema import ITEM, RATING, TS, USER
from streamrec.core.temporal import DAY_SECONDS, NO_DAY, Keyed, TimeConfig, TimeState

USER_TIME_SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("t0", T.DoubleType(), False),
        T.StructField("alpha", T.DoubleType(), False),
        T.StructField("s", T.DoubleType(), False),
        T.StructField("last", T.LongType(), False),
    ]
)
ITEM_BINS_SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("bin", T.LongType(), False),
        T.StructField("bias", T.DoubleType(), False),
        T.StructField("n", T.LongType(), False),
    ]
)
USER_DAYS_SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), False),
        T.StructField("day", T.LongType(), False),
        T.StructField("bias", T.DoubleType(), False),
        T.StructField("n", T.LongType(), False),
    ]
)
SCHEMAS = {"user_time": USER_TIME_SCHEMA, "item_bins": ITEM_BINS_SCHEMA, "user_days": USER_DAYS_SCHEMA}


@dataclass
class TimeFrames:
    """The time terms of a Spark ``FactorModel``: the three tables of ``core.temporal.TIME_TABLES`` and ``now``
    (the latest day absorbed; None before any timed rating)."""

    config: TimeConfig
    now: int | None
    user_time: DataFrame
    item_bins: DataFrame
    user_days: DataFrame

    def tables(self) -> dict[str, DataFrame]:
        return {"user_time": self.user_time, "item_bins": self.item_bins, "user_days": self.user_days}

    def cache(self) -> TimeFrames:
        self.user_time, self.item_bins, self.user_days = (t.cache() for t in self.tables().values())
        return self

    def local_checkpoint(self) -> TimeFrames:
        self.user_time, self.item_bins, self.user_days = (t.localCheckpoint() for t in self.tables().values())
        return self


def day_col(ts: Column) -> Column:
    """``floor(ts / 86400)`` (long; null when ``ts`` is null), as ``core.temporal.days_of``."""
    return F.floor(ts / F.lit(float(DAY_SECONDS)))


def bin_col(day: Column, bin_days: int) -> Column:
    return F.floor(day.cast("double") / F.lit(float(bin_days)))


def dev_col(day: Column, t0: Column, beta: float) -> Column:
    x = day.cast("double") - t0
    return F.signum(x) * F.pow(F.abs(x), F.lit(float(beta)))


# ----------------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TimeBiases:
    user_bias: DataFrame  # user, b_u, n_u
    item_bias: DataFrame  # item, b_i, n_i
    time: TimeFrames
    residuals: DataFrame  # user, item, e = r - mu - b_u(t) - b_i(t)


_NONE = -(2**63)  # the bin / day of a rating without timestamp (or with that term off): its own group, term 0


def fit_biases(
    ratings: DataFrame, mu: float, p: BootstrapParams, cfg: TimeConfig, now: int | None
) -> TimeBiases:
    """Time-aware shrunk-mean biases (see the module docstring) of ``ratings`` (user, item, rating, ts).

    The state of each side is one table keyed like its sums: ``item_state`` per (item, bin) with b_i and
    b_{i,bin}, ``user_state`` per (user, day) with b_u, α_u and b_{u,day}; each alternation joins the ratings
    with the other side's state on that key, sums per key, solves the blocks with a window over the entity and
    materialises the new state (``localCheckpoint``: the plan of the next alternation starts from it)."""
    day = day_col(F.col(TS))
    by_user = Window.partitionBy(USER)
    r0 = (
        ratings.select(USER, ITEM, RATING, day.alias("day"))
        .withColumn("t0", F.avg(F.col("day").cast("double")).over(by_user))
        .withColumn("last", F.max("day").over(by_user))
    )
    dev = (
        F.when(F.col("day").isNotNull(), dev_col(F.col("day"), F.col("t0"), cfg.beta))
        if cfg.user_drift
        else None
    )
    none = F.lit(_NONE).cast("long")
    rated = r0.select(
        USER,
        ITEM,
        RATING,
        (F.coalesce(F.col("day"), none) if cfg.user_day else none).alias("day"),
        (F.coalesce(bin_col(F.col("day"), cfg.bin_days), none) if cfg.bin_days else none).alias("bin"),
        (F.coalesce(dev, F.lit(0.0)) if dev is not None else F.lit(0.0)).alias("dev"),
        "t0",
        "last",
    ).cache()
    anchor = (
        rated.where(F.col("t0").isNotNull())
        .groupBy(USER)
        .agg(F.first("t0").alias("t0"), F.first("last").alias("last"))
    )
    small = F.broadcast
    u_key, i_key = [USER, "day"], [ITEM, "bin"]
    item_state = user_state = None
    for it in range(p.bias_iterations):
        # item side: e = r - mu - b_u(t); sums per (item, bin); b_i then b_{i,bin}
        x, e = rated, F.col(RATING) - F.lit(mu)
        if user_state is not None:
            x = x.join(small(user_state.select(*u_key, "b_u", "alpha", "b_ud")), u_key)
            e = e - F.col("b_u") - F.col("alpha") * F.col("dev") - F.col("b_ud")
        sums = x.repartition(ITEM).groupBy(*i_key).agg(F.sum(e).alias("S"), F.count("*").alias("n"))
        old = F.lit(0.0)
        if item_state is not None:
            sums = sums.join(small(item_state.select(*i_key, F.col("b_bin").alias("old"))), i_key)
            old = F.col("old")
        w = Window.partitionBy(ITEM)
        b_i = F.sum(F.col("S") - F.col("n") * old).over(w) / (F.lit(p.reg_item) + F.sum("n").over(w))
        sums = sums.withColumn("b_i", b_i).withColumn("n_i", F.sum("n").over(w))
        b_bin = (F.col("S") - F.col("n") * F.col("b_i")) / (F.lit(cfg.reg_bin) + F.col("n"))
        item_state = sums.select(
            *i_key,
            "b_i",
            "n_i",
            F.when(F.col("bin") != none, b_bin).otherwise(F.lit(0.0)).alias("b_bin"),
            "n",
        ).localCheckpoint()
        # user side: e = r - mu - b_i(t); sums per (user, day); b_u, then α_u, then b_{u,day}
        x = rated.join(small(item_state.select(*i_key, "b_i", "b_bin")), i_key)
        e = F.col(RATING) - F.lit(mu) - F.col("b_i") - F.col("b_bin")
        sums = (
            x.repartition(USER)
            .groupBy(*u_key)
            .agg(
                F.sum(e).alias("S"),
                F.sum("dev").alias("D"),
                F.sum(F.col("dev") * e).alias("DE"),
                F.sum(F.col("dev") * F.col("dev")).alias("DD"),
                F.count("*").alias("n"),
            )
        )
        a_old, old = F.lit(0.0), F.lit(0.0)
        if user_state is not None:
            sums = sums.join(
                small(user_state.select(*u_key, F.col("alpha").alias("a_old"), F.col("b_ud").alias("old"))),
                u_key,
            )
            a_old, old = F.col("a_old"), F.col("old")
        w = Window.partitionBy(USER)
        b_u = F.sum(F.col("S") - a_old * F.col("D") - F.col("n") * old).over(w) / (
            F.lit(p.reg_user) + F.sum("n").over(w)
        )
        sums = sums.withColumn("b_u", b_u).withColumn("n_u", F.sum("n").over(w))
        alpha = (F.sum(F.col("DE") - old * F.col("D")).over(w) - F.col("b_u") * F.sum("D").over(w)) / (
            F.lit(cfg.reg_drift) + F.sum("DD").over(w)
        )
        # (not "s": Spark's column names are case-insensitive, and "S" is the sum of e)
        sums = sums.withColumn("alpha", alpha if cfg.user_drift else F.lit(0.0)).withColumn(
            "dd_u", F.sum("DD").over(w)
        )
        b_ud = (F.col("S") - F.col("n") * F.col("b_u") - F.col("alpha") * F.col("D")) / (
            F.lit(cfg.reg_day) + F.col("n")
        )
        user_state = sums.select(
            *u_key,
            "b_u",
            "n_u",
            "alpha",
            "dd_u",
            F.when(F.col("day") != none, b_ud).otherwise(F.lit(0.0)).alias("b_ud"),
            "n",
        )
        # materialised for the next alternation; the last one is read by the outputs and the ALS input only
        user_state = user_state.cache() if it == p.bias_iterations - 1 else user_state.localCheckpoint()
    assert user_state is not None and item_state is not None
    spark = ratings.sparkSession
    users = user_state.groupBy(USER).agg(
        F.first("b_u").alias("b_u"),
        F.first("n_u").alias("n_u"),
        F.first("alpha").alias("alpha"),
        F.first("dd_u").alias("s"),
    )
    items = item_state.groupBy(ITEM).agg(F.first("b_i").alias("b_i"), F.first("n_i").alias("n_i"))
    user_time = anchor.join(users, USER).select(F.col(USER).alias("id"), "t0", "alpha", "s", "last")
    item_bins = (
        item_state.where(F.col("bin") != none).select(
            F.col(ITEM).alias("id"), "bin", F.col("b_bin").alias("bias"), "n"
        )
        if cfg.bin_days
        else spark.createDataFrame([], ITEM_BINS_SCHEMA)
    )
    user_days = (
        user_state.where(F.col("day") != none).select(
            F.col(USER).alias("id"), "day", F.col("b_ud").alias("bias"), "n"
        )
        if cfg.user_day
        else spark.createDataFrame([], USER_DAYS_SCHEMA)
    )
    # the ALS input: what every bias leaves
    x = rated.join(small(user_state.select(*u_key, "b_u", "alpha", "b_ud")), u_key).join(
        small(item_state.select(*i_key, "b_i", "b_bin")), i_key
    )
    e = F.col(RATING) - F.lit(mu) - (F.col("b_u") + F.col("alpha") * F.col("dev") + F.col("b_ud"))
    e = e - (F.col("b_i") + F.col("b_bin"))
    return TimeBiases(
        user_bias=users.select(USER, "b_u", "n_u"),
        item_bias=items.select(ITEM, "b_i", "n_i"),
        time=TimeFrames(cfg, now, user_time, item_bins, user_days).cache(),
        residuals=x.select(USER, ITEM, e.alias("e")),
    )


# ----------------------------------------------------------------------------------------------------------
# prediction
# ----------------------------------------------------------------------------------------------------------


def with_terms(frame: DataFrame, time: TimeFrames, ts: str = TS) -> DataFrame:
    """``frame`` (with ``user``, ``item`` and ``ts`` columns) plus ``_t_u`` and ``_t_i``: the user and item time
    terms at ``ts`` (``now`` when null), 0 where the model has no state (the rule of ``core.temporal``)."""
    cfg = time.config
    if time.now is None:
        return frame.withColumn("_t_u", F.lit(0.0)).withColumn("_t_i", F.lit(0.0))
    day = F.coalesce(day_col(F.col(ts)), F.lit(int(time.now)).cast("long"))
    x = frame.withColumn("_day", day)
    t_u = F.lit(0.0)
    if cfg.user_drift:
        ut = time.user_time.select(
            F.col("id").alias(USER),
            F.col("t0").alias("_t0"),
            F.col("alpha").alias("_a"),
            F.col("last").alias("_last"),
        )
        x = x.join(ut, USER, "left")
        d = F.least(F.col("_day"), F.col("_last"))
        t_u = F.coalesce(F.col("_a") * dev_col(d, F.col("_t0"), cfg.beta), F.lit(0.0))
    if cfg.user_day:
        ud = time.user_days.select(
            F.col("id").alias(USER), F.col("day").alias("_day"), F.col("bias").alias("_b_ud")
        )
        x = x.join(ud, [USER, "_day"], "left")
        t_u = t_u + F.coalesce(F.col("_b_ud"), F.lit(0.0))
    t_i = F.lit(0.0)
    if cfg.bin_days:
        x = x.withColumn("_bin", bin_col(F.col("_day"), cfg.bin_days))
        exact = time.item_bins.select(
            F.col("id").alias(ITEM), F.col("bin").alias("_bin"), F.col("bias").alias("_b_b")
        )
        last = time.item_bins.groupBy(F.col("id").alias(ITEM)).agg(
            F.max("bin").alias("_lb"), F.max_by("bias", "bin").alias("_b_lb")
        )
        x = x.join(exact, [ITEM, "_bin"], "left").join(last, ITEM, "left")
        t_i = F.coalesce(F.col("_b_b"), F.when(F.col("_bin") > F.col("_lb"), F.col("_b_lb")), F.lit(0.0))
    x = x.withColumn("_t_u", t_u).withColumn("_t_i", t_i)
    keep = [c for c in frame.columns] + ["_t_u", "_t_i"]
    return x.select(*keep)


# ----------------------------------------------------------------------------------------------------------
# streaming update (streamrec.spark.update): the touched time rows in, the moved ones out
# ----------------------------------------------------------------------------------------------------------

SUB_COLUMNS = {TS: "long", "key": "long", "t0": "double", "alpha": "double", "s": "double"}
"""Columns a time-aware update adds to the grouped-map frame (``key``: a bin, a day, or a user's last day)."""
OUT_COLUMNS = ", ".join(f"{c} {t}" for c, t in SUB_COLUMNS.items() if c != TS)


def pad(df: DataFrame) -> DataFrame:
    """``df`` with the columns of ``SUB_COLUMNS`` it lacks, as nulls."""
    for c, t in SUB_COLUMNS.items():
        if c not in df.columns:
            df = df.withColumn(c, F.lit(None).cast(t))
    return df


def gather(time: TimeFrames, ratings: DataFrame, like: DataFrame) -> DataFrame:
    """The time rows a batch of ``ratings`` touches, in the columns of ``like`` (the grouped-map frame): the
    ``user_time`` row of each of its users (kind ``ut``), every ``item_bins`` row of each of its items (``ib``:
    the carry rule may need the last one) and the ``user_days`` row of each of its (user, day) pairs (``ud``; a
    rating without timestamp is at ``now``)."""
    users = ratings.select(F.col(USER).alias("id")).distinct()
    items = ratings.select(F.col(ITEM).alias("id")).distinct()
    # a rating without timestamp is scored at now: its user's day term of that day (a later "now" within the
    # batch is a day of the batch itself, whose entries the task makes)
    day = day_col(F.col(TS))
    if time.now is not None:
        day = F.coalesce(day, F.lit(int(time.now)).cast("long"))
    days = ratings.select(F.col(USER).alias("id"), day.alias("day")).where(F.col("day").isNotNull())
    parts = [
        users.join(time.user_time, "id").select(
            F.lit("ut").alias("kind"), "id", F.col("last").alias("key"), "t0", "alpha", "s"
        ),
        items.join(time.item_bins, "id").select(
            F.lit("ib").alias("kind"), "id", F.col("bin").alias("key"), "bias", "n"
        ),
        days.distinct()
        .join(time.user_days, ["id", "day"])
        .select(F.lit("ud").alias("kind"), "id", F.col("day").alias("key"), "bias", "n"),
    ]
    out = []
    for part in parts:
        part = part.withColumnRenamed("id", USER)
        for f in like.schema.fields:
            if f.name not in part.columns:
                part = part.withColumn(f.name, F.lit(None).cast(f.dataType))
        out.append(part.select(*like.columns))
    return out[0].unionByName(out[1]).unionByName(out[2])


def state_from_rows(
    pdf: pd.DataFrame, config: TimeConfig, now: int | None, user_ids: np.ndarray, item_ids: np.ndarray
) -> TimeState:
    """The task's ``core.temporal.TimeState`` (rows = the task's sorted user / item ids) from its time rows."""
    state = TimeState.empty(config, len(user_ids), NO_DAY if now is None else now)
    ut, ib, ud = (pdf[pdf["kind"] == k] for k in ("ut", "ib", "ud"))
    rows = np.searchsorted(user_ids, ut[USER].to_numpy(np.int64))
    state.t0[rows] = ut["t0"].to_numpy(np.float64)
    state.alpha[rows] = ut["alpha"].to_numpy(np.float64)
    state.s[rows] = ut["s"].to_numpy(np.float64)
    state.last[rows] = ut["key"].to_numpy(np.int64)
    state.bins = Keyed(
        np.searchsorted(item_ids, ib[USER].to_numpy(np.int64)),
        ib["key"].to_numpy(np.int64),
        ib["bias"].to_numpy(np.float64),
        ib["n"].to_numpy(np.int64),
    )
    state.days = Keyed(
        np.searchsorted(user_ids, ud[USER].to_numpy(np.int64)),
        ud["key"].to_numpy(np.int64),
        ud["bias"].to_numpy(np.float64),
        ud["n"].to_numpy(np.int64),
    )
    return state


def rows_from_state(state: TimeState, user_ids: np.ndarray, item_ids: np.ndarray) -> list[pd.DataFrame]:
    """The task's time rows out (``side`` ut / ib / ud; the columns of ``OUT_COLUMNS`` and ``bias``, ``n``)."""
    timed = np.flatnonzero(state.last != NO_DAY)
    frames = [
        pd.DataFrame(
            {
                "side": "ut",
                "id": user_ids[timed],
                "key": state.last[timed],
                "t0": state.t0[timed],
                "alpha": state.alpha[timed],
                "s": state.s[timed],
            }
        ),
        pd.DataFrame(
            {
                "side": "ib",
                "id": item_ids[state.bins.rows],
                "key": state.bins.keys,
                "bias": state.bins.bias,
                "n": state.bins.n,
            }
        ),
        pd.DataFrame(
            {
                "side": "ud",
                "id": user_ids[state.days.rows],
                "key": state.days.keys,
                "bias": state.days.bias,
                "n": state.days.n,
            }
        ),
    ]
    for f in frames:  # the array columns of the output schema: None (a NaN is not an array)
        f["factors"] = pd.Series([None] * len(f), dtype=object)
        f["stats"] = pd.Series([None] * len(f), dtype=object)
    return frames


def merge(time: TimeFrames, fresh: DataFrame, now: int | None) -> TimeFrames:
    """The model's time tables with the task's rows (``fresh``, the grouped map's output) merged in: a touched
    user's ``user_time`` row and a touched item's bins replaced, (user, day) rows replaced or added."""
    ut = fresh.where(F.col("side") == "ut").select("id", "t0", "alpha", "s", F.col("key").alias("last"))
    ib = fresh.where(F.col("side") == "ib").select("id", F.col("key").alias("bin"), "bias", "n")
    ud = fresh.where(F.col("side") == "ud").select("id", F.col("key").alias("day"), "bias", "n")
    user_time = time.user_time.join(ut.select("id"), "id", "left_anti").unionByName(ut)
    item_bins = time.item_bins.join(ib.select("id").distinct(), "id", "left_anti").unionByName(ib)
    user_days = time.user_days.join(ud.select("id", "day"), ["id", "day"], "left_anti").unionByName(ud)
    return TimeFrames(time.config, now, user_time, item_bins, user_days)

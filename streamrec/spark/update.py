r"""Streaming update: fold a partition of new ratings into a factor model without retraining.

The talk's "streaming ALS" is biased SGD on r̂ = mu + b_u + b_i + p_u · q_i, with per-rating steps::

    b_u ← b_u + γ (ε - λ b_u)          p_u ← p_u + γ (ε q_i - λ' p_u)
    b_i ← b_i + γ (ε - λ b_i)          q_i ← q_i + γ (ε p_u - λ' q_i)        ε = r - r̂

Here the same rule runs as mini-batch passes over a whole partition B, with the defects of the talk's reference
code removed:

* **State is kept.** Only entities that B touches are read, changed and merged back (anti-join + union, once);
  every other row is carried over bit-identical, one row per entity.
* **New ids are folded in, not drawn at random** (zero bias, ridge least-squares factors against the other side).
* **mu is the running mean** of every rating absorbed: mu ← (n mu + Σ_B r) / (n + |B|).
* **Steps cannot diverge, whatever the batch shape**: block-normalised steps, users then items (Gauss-Seidel).
* **What was learnt before is a prior, not forgotten**: each entity's absorbed count ``n`` weighs its old value.

The equations are in ``streamrec.core.sgd`` (the numpy core, which is where the unit tests point).

**A time-aware model** (``FactorModel.time``; Koren 2009, ``streamrec.core.temporal``): the partition also
moves the time terms it touches (``sgd.absorb_timed``): the item biases of the bins its ratings fall in (a bin
opens when its first rating arrives), the drift α_u and the day biases of its users; ``now`` becomes its
latest day. The task gathers those rows too (``streamrec.spark.temporal.gather``: a user's ``user_time`` row,
every bin of an item, the (user, day) rows of the batch) and they are merged back the same way.

How it runs on Spark (the talk's partitioning point): the touched sub-problem (B's ratings and the current rows
of the users and items in B) is gathered by joins, shipped to one grouped-map task (``applyInPandas``), which runs
the passes in numpy, and the new rows are merged back once. Nothing is collected to the driver (it receives a few
numbers per partition: |B|, the new mu and the prequential sums), so the job runs unchanged on a cluster; the
work and the memory of that task are O(|B| · rank), whatever the size of the model, and the only O(model) step is
the merge that writes the new version. A partition too big for one task's memory (tens of millions of ratings)
should be split into several partitions, which the pipeline applies in order.

**A batch of partitions B_1..B_m** (a catch-up run: ``apply_batch``) is the same computation, partition after
partition, inside that one task: each B_k is scored against the state B_1..B_{k-1} left (its prequential
metrics), then absorbed with mu moved by B_k only; the merge back runs once for the batch. The result equals
scoring and applying the partitions one by one (``tests/test_engine_spark.py``), at a few Spark jobs per batch
instead of a few per partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.core import metrics, sgd
from streamrec.core.arrays import Parts, predict_rows
from streamrec.core.params import UpdateParams
from streamrec.core.schema import HALF_STAR, ITEM, RATING, TS, USER, RatingScale
from streamrec.core.temporal import NO_DAY, TimeConfig, TimeState, days_of
from streamrec.spark import temporal
from streamrec.spark.model import FactorModel
from streamrec.spark.schema import FACTOR_SCHEMA

_OUT_SCHEMA = "side string, id long, bias double, n long, factors array<double>, stats array<double>"
# the ``stats`` of a partition's ``m`` row (its |B| is in ``n``): streamrec.core.metrics.STATS


def _touched(table: DataFrame, ratings: DataFrame, key: str, side: str) -> DataFrame:
    """Current rows of the ids of ``key`` in ``ratings`` (new ids: bias 0, n 0, factors null, known false)."""
    ids = ratings.select(F.col(key).alias("id")).distinct()
    return ids.join(table, "id", "left").select(
        F.lit(side).alias("kind"),
        F.lit(None).cast("int").alias("seq"),
        F.col("id").alias(USER),
        F.lit(None).cast("long").alias(ITEM),
        F.lit(None).cast("double").alias(RATING),
        F.col("bias").isNotNull().alias("known"),
        F.coalesce("bias", F.lit(0.0)).alias("bias"),
        F.coalesce("n", F.lit(0)).cast("long").alias("n"),
        F.col("factors"),
    )


def _side(rows: pd.DataFrame, rank: int) -> tuple[sgd.Side, np.ndarray]:
    factors = np.zeros((len(rows), rank))
    for j, f in enumerate(rows["factors"].to_numpy()):
        if f is not None:
            factors[j] = f
    side = sgd.Side(
        rows[USER].to_numpy(np.int64),
        rows["bias"].to_numpy(np.float64),
        rows["n"].to_numpy(np.int64),
        factors,
    )
    return side, rows["known"].to_numpy(bool)


def _scores(
    u,
    i,
    r,
    mu,
    users: sgd.Side,
    items: sgd.Side,
    known_u,
    known_i,
    scale: RatingScale,
    time: TimeState | None = None,
    ts: np.ndarray | None = None,
) -> list[float]:
    """What ``evaluate.predict`` + ``error_metrics`` sum, in numpy: Σ ε², Σ |ε| and the fallback counts of the
    ratings ``r`` under the state given. ``u`` / ``i`` are rows of the touched sides; a row not ``known`` yet
    is an unknown id (``-1`` for ``arrays.predict_rows``: no bias, no dot product), the prediction clipped.
    ``time`` / ``ts``: a time-aware model's time terms (rows of the touched sides) and the ratings' times."""
    ku, ki = known_u[u], known_i[i]
    parts = Parts(mu, users.bias, users.factors, items.bias, items.factors, time)
    pred = predict_rows(
        parts, np.where(ku, u, -1), np.where(ki, i, -1), clip=(scale.low, scale.high), time=ts
    )
    return metrics.error_sums(r, pred, ku, ki)


def _absorb_group(
    mu: float,
    n: int,
    rank: int,
    params: UpdateParams,
    scale: RatingScale,
    time: tuple[TimeConfig, int | None] | None = None,
):
    """The grouped-map function: one pandas frame holding the whole touched sub-problem of a sequence of
    partitions (ratings tagged with their position ``seq``) -> the new rows of every touched entity, plus one
    ``m`` row per non-empty partition (``id`` = seq, ``bias`` = mu after it, ``n`` = |B|, ``stats`` = its
    prequential sums, see ``_STATS``). ``time``: a time-aware model's config and ``now`` (its time rows are in
    the frame, and out; an ``m`` row's ``key`` is ``now`` after its partition)."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        # Spark does not promise the order of a group's rows (local mode happens to keep it; a cluster's
        # shuffle need not): sorted, the floating-point sums run in one order and a retried or re-run update
        # gives the same bits wherever it runs.
        order = ["kind", "seq", USER, ITEM, RATING] + ([TS, "key"] if time is not None else [])
        pdf = pdf.sort_values(order, kind="mergesort", na_position="first")
        r = pdf[pdf["kind"] == "r"]
        users, known_u = _side(pdf[pdf["kind"] == "u"], rank)
        items, known_i = _side(pdf[pdf["kind"] == "i"], rank)
        u_all = pd.Index(users.ids).get_indexer(r[USER].to_numpy(np.int64))
        i_all = pd.Index(items.ids).get_indexer(r[ITEM].to_numpy(np.int64))
        r_all = r[RATING].to_numpy(np.float64)
        seq = r["seq"].to_numpy(np.int64)
        state = ts_all = day_all = None
        if time is not None:
            state = temporal.state_from_rows(pdf, time[0], time[1], users.ids, items.ids)
            ts_all = r[TS].to_numpy(np.float64, na_value=np.nan)
            day_all = days_of(ts_all, len(ts_all), NO_DAY)  # no timestamp: moves no time term
        mu_k, n_k, meta = mu, n, []
        for k in np.unique(seq):
            s, t = np.searchsorted(seq, k, "left"), np.searchsorted(seq, k, "right")
            u, i, rk = u_all[s:t], i_all[s:t], r_all[s:t]
            ts_k = None if ts_all is None else ts_all[s:t]
            # before absorbing B_k
            stats = _scores(u, i, rk, mu_k, users, items, known_u, known_i, scale, state, ts_k)
            mu_k = (mu_k * n_k + float(rk.sum())) / (n_k + len(rk))
            n_k += len(rk)
            # B_k's own sub-problem (its entities in id order), folded, and written back
            ur, ir = np.unique(u), np.unique(i)
            lu, li = np.searchsorted(ur, u), np.searchsorted(ir, i)
            if state is None:
                new_u, new_i = sgd.absorb(lu, li, rk, mu_k, _take(users, ur), _take(items, ir), params)
            else:
                assert day_all is not None
                new_u, new_i, sub = sgd.absorb_timed(
                    lu,
                    li,
                    rk,
                    day_all[s:t],
                    mu_k,
                    _take(users, ur),
                    _take(items, ir),
                    state.take(ur, ir),
                    params,
                )
                state.put(ur, ir, sub)
            for side, known, rows, new, local in (
                (users, known_u, ur, new_u, lu),
                (items, known_i, ir, new_i, li),
            ):
                side.bias[rows], side.factors[rows] = new.bias, new.factors
                side.n[rows] += np.bincount(local, minlength=len(rows))
                known[rows] = True
            meta.append((int(k), mu_k, len(rk), stats, None if state is None else state.now))
        out = [
            pd.DataFrame(
                {
                    "side": kind,
                    "id": side.ids,
                    "bias": side.bias,
                    "n": side.n,
                    "factors": list(side.factors),
                    "stats": [None] * len(side.ids),
                }
            )
            for kind, side in (("u", users), ("i", items))
        ]
        out.append(
            pd.DataFrame(
                {
                    "side": "m",
                    "id": [m[0] for m in meta],
                    "bias": [m[1] for m in meta],
                    "n": [m[2] for m in meta],
                    "factors": [None] * len(meta),
                    "stats": [m[3] for m in meta],
                    **({} if state is None else {"key": [m[4] for m in meta]}),
                }
            )
        )
        if state is not None:
            out += temporal.rows_from_state(state, users.ids, items.ids)
        return pd.concat(out, ignore_index=True)

    return run


def _take(side: sgd.Side, rows: np.ndarray) -> sgd.Side:
    return sgd.Side(side.ids[rows], side.bias[rows], side.n[rows], side.factors[rows])


def apply_many(
    model: FactorModel,
    partitions: Sequence[DataFrame],
    params: UpdateParams | None = None,
    scale: RatingScale = HALF_STAR,
) -> tuple[FactorModel, list[dict]]:
    """Absorb ``partitions`` (``schema.RATINGS_SCHEMA``) one after the other, in one Spark job: ``apply_batch``
    on their union, each tagged with its position."""
    if not partitions:
        return model, []
    cols = [USER, ITEM, RATING]
    if model.time is not None:  # a time-aware model reads the ratings' times
        partitions = [
            df if TS in df.columns else df.withColumn(TS, F.lit(None).cast("long")) for df in partitions
        ]
        cols.append(TS)
    tagged = [df.select(F.lit(k).alias("seq"), *cols) for k, df in enumerate(partitions)]
    return apply_batch(model, reduce(DataFrame.unionByName, tagged), len(partitions), params, scale)


def apply_batch(
    model: FactorModel,
    ratings: DataFrame,
    count: int,
    params: UpdateParams | None = None,
    scale: RatingScale = HALF_STAR,
    seq: str = "seq",
    checkpoint: bool = True,
) -> tuple[FactorModel, list[dict]]:
    """Absorb a batch of ``count`` partitions, given as one frame of ratings whose column ``seq`` (0 ..
    count - 1) says which partition each row belongs to, in that order.

    The same as scoring and then ``apply``-ing each partition in turn (B_k sees the model left by
    B_1..B_{k-1}: its mu, its biases, its factors and counts, the ids it added), but the touched sub-problem of
    the whole batch is gathered once, solved in one grouped-map task and merged back once: one O(model) merge
    per batch, not one per partition. Returns the model after the last partition and, for each partition, its
    prequential metrics (``evaluate.rmse`` of the model before absorbing it, computed in numpy: the formula of
    ``evaluate.predict``, its sums in another order). ``model`` is not changed. The task holds the whole batch:
    its memory is O(Σ|B_k| · rank).

    ``ratings`` is read more than once (the sub-problem, the touched ids); it is checkpointed first unless the
    caller says it is already cheap and deterministic to recompute (``checkpoint=False``: a filter of a
    checkpointed frame, as ``streamrec.spark.runs.update_version`` passes it).
    """
    p = params or UpdateParams()
    timed = model.time is not None
    if timed and TS not in ratings.columns:
        ratings = ratings.withColumn(TS, F.lit(None).cast("long"))
    cols = [USER, ITEM, RATING] + ([TS] if timed else [])
    ratings = ratings.select(F.col(seq).cast("int").alias("seq"), *cols)
    if checkpoint:
        ratings = ratings.localCheckpoint()
    sub = ratings.select(
        F.lit("r").alias("kind"),
        "seq",
        USER,
        ITEM,
        RATING,
        F.lit(None).cast("boolean").alias("known"),
        F.lit(None).cast("double").alias("bias"),
        F.lit(None).cast("long").alias("n"),
        F.lit(None).cast("array<double>").alias("factors"),
        *([TS] if timed else []),
    )
    touched = [_touched(model.users, ratings, USER, "u"), _touched(model.items, ratings, ITEM, "i")]
    if timed:  # the time rows the batch touches (streamrec.spark.temporal)
        assert model.time is not None
        sub, touched = temporal.pad(sub), [temporal.pad(t) for t in touched]
        touched.append(temporal.gather(model.time, ratings, sub))
    for t in touched:
        sub = sub.unionByName(t)
    sub = sub.withColumn("_g", F.lit(0))
    time = (model.time.config, model.time.now) if model.time is not None else None
    out_schema = _OUT_SCHEMA + (", " + temporal.OUT_COLUMNS if timed else "")
    fresh = (
        sub.groupBy("_g")
        .applyInPandas(_absorb_group(model.mu, model.n, model.rank, p, scale, time), schema=out_schema)
        .localCheckpoint()
    )
    meta = {
        r["id"]: r
        for r in fresh.where(F.col("side") == "m")
        .select("id", "bias", "n", "stats", *(["key"] if timed else []))
        .collect()
    }
    if set(meta) - set(range(count)):
        raise ValueError(
            f"ratings tagged with a {seq} outside 0..{count - 1}: {sorted(set(meta) - set(range(count)))}"
        )
    scores = [
        metrics.from_sums(meta[k]["n"], meta[k]["stats"]) if k in meta else metrics.from_sums(0, None)
        for k in range(count)
    ]
    if not meta:  # every partition empty
        return model, scores
    mu = meta[max(meta)]["bias"]
    nb = sum(row["n"] for row in meta.values())

    def merge(table: DataFrame, side: str) -> DataFrame:
        new_rows = fresh.where(F.col("side") == side).select(*FACTOR_SCHEMA.fieldNames())
        kept = table.join(new_rows.select("id"), "id", "left_anti")
        return kept.unionByName(new_rows).select(*FACTOR_SCHEMA.fieldNames())

    users, items = merge(model.users, "u"), merge(model.items, "i")
    new_time = None
    if model.time is not None:
        now = meta[max(meta)]["key"]
        new_time = temporal.merge(model.time, fresh, None if now is None or now == NO_DAY else int(now))
    return FactorModel(
        mu=mu, n=model.n + nb, rank=model.rank, users=users, items=items, time=new_time
    ), scores


def apply(model: FactorModel, partition: DataFrame, params: UpdateParams | None = None) -> FactorModel:
    """Return the model after absorbing ``partition`` (``schema.RATINGS_SCHEMA``). ``model`` is not changed."""
    return apply_many(model, [partition], params)[0]

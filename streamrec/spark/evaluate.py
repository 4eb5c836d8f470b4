r"""Evaluation: RMSE / MAE that are never NaN, prequential RMSE, and top-k ranking quality.

Point predictions use the model's rule with fallbacks for ids the model has not seen (Spark's ALS returns NaN
there, SPARK-14489)::

    known user and item   mu + b_u + b_i + p_u · q_i
    unknown user          mu + b_i
    unknown item          mu + b_u
    both unknown          mu

clipped to the rating scale; a time-aware model adds its time terms at the rating's ``ts`` (``now`` when null)
for a known user and a known item, ``mu + b_u + b_i + T_u(t) + T_i(t) + p_u · q_i``
(``streamrec.spark.temporal.with_terms``; the rule of ``streamrec.core.temporal``). Every metric reports how many
rows used each fallback. This is the formula of
``streamrec.core.arrays.predict`` (the numpy form the gate, the update task's prequential scores and serving
call), written here as Spark column expressions so that it scales with the data; ``tests/test_predict.py`` checks
that the two agree to 1e-9 on a model with cold users and items. They agree to rounding, not to the bit: the dot
product here is a left fold (``aggregate`` over ``zip_with``), there a ``numpy.einsum``.

Prequential RMSE of a partition is the RMSE of the model *before* it absorbs that partition, on that partition:
the honest measure of a streaming model (Dawid 1984; Gama et al. 2013).

Ranking: for each holdout user, the model ranks every item that user has not rated in training; an item is
relevant when its held-out rating is >= ``relevant_at`` (4.0 by default)::

    precision@k = |top_k ∩ relevant| / k
    NDCG@k      = Σ_{j ≤ k, top_k[j] relevant} 1 / log2(j + 1)  /  Σ_{j ≤ min(k, |relevant|)} 1 / log2(j + 1)

averaged over holdout users with at least one relevant item. Ranking is scored with numpy on the driver from the
factor tables (users of the holdout only), in blocks, so its memory is bounded by ``block`` × items.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.core.metrics import FALLBACKS, metrics_dict
from streamrec.core.schema import HALF_STAR, ITEM, RATING, TS, USER, RatingScale
from streamrec.spark import temporal
from streamrec.spark.model import FactorModel


def predict(model: FactorModel, ratings: DataFrame, scale: RatingScale = HALF_STAR) -> DataFrame:
    """``ratings`` plus ``prediction`` (clipped) and ``fallback`` (one of ``FALLBACKS``).

    ``prediction`` is ``streamrec.core.arrays.predict(arrays, user, item, clip=(scale.low, scale.high))`` of the
    same model as numpy arrays (see the module docstring), computed by Spark."""
    u = model.users.select(
        F.col("id").alias(USER), F.col("bias").alias("_b_u"), F.col("factors").alias("_p_u")
    )
    i = model.items.select(
        F.col("id").alias(ITEM), F.col("bias").alias("_b_i"), F.col("factors").alias("_q_i")
    )
    j = ratings.join(u, USER, "left").join(i, ITEM, "left")
    dot = F.aggregate(F.zip_with("_p_u", "_q_i", lambda a, b: a * b), F.lit(0.0), lambda acc, x: acc + x)
    known_u, known_i = F.col("_b_u").isNotNull(), F.col("_b_i").isNotNull()
    biases = F.lit(model.mu) + F.coalesce(F.col("_b_u"), F.lit(0.0)) + F.coalesce(F.col("_b_i"), F.lit(0.0))
    if model.time is not None:  # the time terms at ts (now when null): only of a known user / item
        if TS not in j.columns:
            j = j.withColumn(TS, F.lit(None).cast("long"))
        j = temporal.with_terms(j, model.time)
        biases = biases + F.when(known_u, F.col("_t_u")).otherwise(F.lit(0.0))
        biases = biases + F.when(known_i, F.col("_t_i")).otherwise(F.lit(0.0))
    raw = biases + F.when(known_u & known_i, dot).otherwise(F.lit(0.0))
    fallback = (
        F.when(known_u & known_i, "none")
        .when(known_i, "user_unknown")
        .when(known_u, "item_unknown")
        .otherwise("both_unknown")
    )
    clipped = F.least(F.greatest(raw, F.lit(scale.low)), F.lit(scale.high))
    return (
        j.withColumn("prediction", clipped)
        .withColumn("fallback", fallback)
        .drop("_b_u", "_b_i", "_p_u", "_q_i", "_t_u", "_t_i")
    )


def error_metrics(predictions: DataFrame) -> dict:
    """RMSE, MAE, row count and fallback counts of a frame from ``predict``."""
    err = F.col(RATING) - F.col("prediction")
    row = predictions.agg(
        F.count("*").alias("n"),
        F.avg(err * err).alias("mse"),
        F.avg(F.abs(err)).alias("mae"),
        *[F.sum(F.when(F.col("fallback") == f, 1).otherwise(0)).alias(f) for f in FALLBACKS],
    ).first()
    return metrics_dict(int(row["n"]), row["mse"], row["mae"], {f: row[f] for f in FALLBACKS[1:]})


def rmse(model: FactorModel, ratings: DataFrame, scale: RatingScale = HALF_STAR) -> dict:
    """``error_metrics(predict(model, ratings))``: RMSE, MAE, n and fallback counts on a holdout."""
    return error_metrics(predict(model, ratings, scale))


def prequential(model: FactorModel, partition: DataFrame, scale: RatingScale = HALF_STAR) -> dict:
    """Metrics of ``model`` on ``partition`` before absorbing it (call it before ``update.apply``)."""
    return rmse(model, partition, scale)


def _arrays(df: DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pdf = df.select("id", "bias", "factors").toPandas()
    ids = pdf["id"].to_numpy(np.int64)
    bias = pdf["bias"].to_numpy(np.float64)
    factors = np.stack(pdf["factors"].to_numpy()) if len(pdf) else np.zeros((0, 0))
    return ids, bias, factors


def ranking_metrics(
    model: FactorModel,
    train: DataFrame,
    holdout: DataFrame,
    k: int = 10,
    relevant_at: float = 4.0,
    block: int = 256,
) -> dict:
    """precision@k and NDCG@k over holdout users (see the module docstring); a time-aware model ranks by its
    biases now (``b_i(now)``; the user's terms are one constant per user)."""
    users = holdout.select(USER).distinct()
    u_ids, u_bias, u_f = _arrays(model.users.join(users.withColumnRenamed(USER, "id"), "id"))
    items = model.items
    if model.time is not None:  # rank by b_i(now), as serving does (``ModelArrays.item_bias_now``)
        at_now = items.select(
            F.col("id").alias(ITEM), F.lit(None).cast("long").alias(USER), F.lit(None).cast("long").alias(TS)
        )
        terms = temporal.with_terms(at_now, model.time).select(F.col(ITEM).alias("id"), "_t_i")
        items = items.join(terms, "id").withColumn("bias", F.col("bias") + F.col("_t_i"))
    i_ids, i_bias, i_f = _arrays(items)
    if len(u_ids) == 0 or len(i_ids) == 0:
        return {f"precision@{k}": None, f"ndcg@{k}": None, "users": 0}
    order = np.argsort(i_ids)
    i_ids, i_bias, i_f = i_ids[order], i_bias[order], i_f[order]
    seen = train.join(users, USER).select(USER, ITEM).toPandas()
    rel = holdout.where(F.col(RATING) >= relevant_at).select(USER, ITEM).toPandas()
    seen_by = {u: g.to_numpy() for u, g in seen.groupby(USER)[ITEM]}
    rel_by = {u: set(g.to_numpy().tolist()) for u, g in rel.groupby(USER)[ITEM]}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precisions, ndcgs = [], []
    for start in range(0, len(u_ids), block):
        sl = slice(start, start + block)
        scores = u_bias[sl, None] + i_bias[None, :] + u_f[sl] @ i_f.T
        for row, uid in enumerate(u_ids[sl]):
            relevant = rel_by.get(int(uid))
            if not relevant:
                continue
            s = scores[row]
            rated = seen_by.get(int(uid))
            if rated is not None and len(rated):
                pos = np.searchsorted(i_ids, rated)
                pos = pos[(pos < len(i_ids)) & (i_ids[np.minimum(pos, len(i_ids) - 1)] == rated)]
                s[pos] = -np.inf
            kk = min(k, len(s))
            top = np.argpartition(-s, kk - 1)[:kk]
            top = top[np.lexsort((i_ids[top], -s[top]))]
            hits = np.array([int(i_ids[t]) in relevant for t in top], dtype=float)
            precisions.append(hits.sum() / k)
            ideal = discounts[: min(k, len(relevant))].sum()
            ndcgs.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return {
        f"precision@{k}": float(np.mean(precisions)) if precisions else None,
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else None,
        "users": len(precisions),
    }

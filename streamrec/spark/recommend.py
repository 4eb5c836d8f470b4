"""The recommend step: the top-K of every user of a model version, as a table written with the version.

    models/versions/<version>/recommendations/part-*.parquet     user long, rank int, item long, score double

``rank`` is 1 for the best item; ``score`` is the predicted rating (clipped to the scale); the candidates and the
order follow the version's ranking rule (``streamrec.core.ranking``, recorded in the manifest as ``ranking``),
the user's rated items (the version's seen table) left out. Plain Parquet, sorted by (user, rank): pandas
(``pd.read_parquet(folder)``), DuckDB (``read_parquet('.../recommendations/*.parquet')``) and Spark read it
without streamrec; the files to read are those the manifest lists under ``tables.recommendations``.

Every user gets exactly the items and scores :class:`streamrec.pipeline.lookup.Recommender` returns for that
version (both call ``streamrec.core.ranking.Ranker.top``), bit for bit. Users of the seen table that the model
does not know (every rating of theirs held out for validation) get the cold-start ranking, as in the lookup.
A time-aware model ranks at now, as the lookup: items by ``b_i(now)``, users by ``b_u(now)``
(``ModelArrays.item_bias_now`` / ``user_bias_now``; the user's drift through ``core.temporal.drift_term``).

**Where it runs, and why there.** Inside the bootstrap / update job, on the model it has just built, before
the manifest (``streamrec.spark.model.write_model``): the recommendations appear atomically with their
version, a half-written version shows none, and a rejected version's are never read, because readers find them
through the current pointer and that version's manifest, like the factors. The alternative, a step after
publish, would leave a window in which the current version has no recommendations (readers would need a
fallback) and could not list them in the manifest, whose ``tables`` the store owns; its one advantage, not
spending the work on candidates the gate rejects, is small: the step costs a tenth of the job (measured on
ml-latest-small, default bootstrap: 27 s of 255 s, the fit 197 s; the manifest's
``write_seconds.recommendations`` records it, with its write, for every version; see the README), and most
candidates are accepted.

**How it scales.** The item side (ids, biases, counts, factors: O(items × rank), ~24 MB for 60k items at rank
50) is collected once and broadcast; the users are spread over the tasks (``mapInPandas``), each user scored
against every item (O(items × rank)) and its top-K kept: O(users × items × rank) work in all, divided by the
cluster's cores, and O(users × K) rows written. A user's scoring is the lookup's (a ``numpy.einsum`` over the
item factors, ~1 ms for 10k items at rank 50).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.core.arrays import side_from_table
from streamrec.core.ranking import Ranker, RankingRule
from streamrec.core.schema import ITEM, USER
from streamrec.core.temporal import NO_DAY, drift_term
from streamrec.spark import temporal
from streamrec.spark.model import FactorModel
from streamrec.spark.session import default_parallelism, is_connect

RECOMMENDATIONS_DDL = "user long, rank int, item long, score double"


class _Shared:
    """A broadcast's ``.value`` for a Spark Connect session: the value itself, pickled with the closure."""

    def __init__(self, value) -> None:
        self.value = value


def recommend_all(
    model: FactorModel,
    seen: DataFrame | None,
    rule: RankingRule,
    clip: tuple[float, float],
    partitions: int | None = None,
) -> DataFrame:
    """The top-``rule.top_k`` of every user of ``model`` (and of ``seen``), a lazy DataFrame of
    :data:`RECOMMENDATIONS_DDL`; ``seen`` (a seen table, ``streamrec.spark.seen``) None: nothing excluded."""
    spark = model.users.sparkSession
    items = model.items
    if model.time is not None:  # b_i(now) = b_i + b_{i,Bin(now)} (ModelArrays.item_bias_now)
        at_now = items.select(
            F.col("id").alias(ITEM),
            F.lit(None).cast("long").alias(USER),
            F.lit(None).cast("long").alias("ts"),
        )
        terms = temporal.with_terms(at_now, model.time).select(F.col(ITEM).alias("id"), "_t_i")
        items = items.join(terms, "id").withColumn("bias", F.col("bias") + F.col("_t_i"))
    ids, bias, counts, factors = side_from_table(
        items.select("id", "bias", "n", "factors").toArrow(), model.rank, "items"
    )
    order = np.argsort(ids, kind="stable")
    item_side = (ids[order], bias[order], counts[order], np.ascontiguousarray(factors[order]))
    side = {
        "mu": float(model.mu),
        "items": item_side,
        "rule": rule.as_dict(),
        "clip": tuple(map(float, clip)),
    }
    # a broadcast on a classic session; over Spark Connect (no sparkContext) the item side travels in the UDF's
    # closure (a few MB for 10,000 items at rank 50, far below the 128 MB message limit)
    shared = _Shared(side) if is_connect(spark) else spark.sparkContext.broadcast(side)
    users = model.users.select(F.col("id").alias(USER), "bias", "factors")
    cfg = None if model.time is None else model.time.config  # (the task's closure holds no DataFrame)
    now = NO_DAY if model.time is None or model.time.now is None else int(model.time.now)
    if model.time is not None:  # the user's terms at now, added in the task as ModelArrays.user_bias_now does
        ut = model.time.user_time.select(
            F.col("id").alias(USER),
            F.col("t0").alias("_t0"),
            F.col("alpha").alias("_a"),
            F.col("last").alias("_last"),
        )
        ud = model.time.user_days.where(F.col("day") == F.lit(now)).select(
            F.col("id").alias(USER), F.col("bias").alias("_b_ud")
        )
        users = users.join(ut, USER, "left").join(ud, USER, "left")
    if seen is not None:
        users = users.join(seen.select(USER, "items"), USER, "full_outer")
    else:
        users = users.withColumn("items", F.lit(None).cast("array<long>"))
    n = partitions or max(1, default_parallelism(spark))
    k = rule.top_k

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        value = shared.value
        ids, bias, counts, factors = value["items"]
        ranker = Ranker(
            value["mu"], ids, bias, factors, counts, RankingRule.from_dict(value["rule"]), value["clip"]
        )
        for pdf in batches:
            out_u, out_r, out_i, out_s = [], [], [], []
            if cfg is not None:
                last = pdf["_last"].fillna(NO_DAY).to_numpy(np.int64)
                drift = drift_term(
                    cfg, pdf["_a"].fillna(0.0), pdf["_t0"].fillna(0.0), last, np.full(len(pdf), now)
                )
                pdf = pdf.assign(
                    bias=pdf["bias"].to_numpy(np.float64) + (drift + pdf["_b_ud"].fillna(0.0).to_numpy())
                )
            for user, b_u, p_u, rated in zip(
                pdf[USER].to_numpy(),
                pdf["bias"].to_numpy(),
                pdf["factors"].to_numpy(),
                pdf["items"].to_numpy(),
                strict=True,
            ):
                seen_rows = ranker.rows_of(rated)
                known = p_u is not None and not (isinstance(p_u, float) and np.isnan(p_u))
                rows, scores = ranker.top(
                    float(b_u) if known else None,
                    np.asarray(p_u, np.float64) if known else None,
                    seen_rows,
                    k,
                )
                out_u.append(np.full(len(rows), user, dtype=np.int64))
                out_r.append(np.arange(1, len(rows) + 1, dtype=np.int32))
                out_i.append(ids[rows])
                out_s.append(scores)
            if out_u:
                yield pd.DataFrame(
                    {
                        "user": np.concatenate(out_u),
                        "rank": np.concatenate(out_r),
                        "item": np.concatenate(out_i).astype(np.int64),
                        "score": np.concatenate(out_s).astype(np.float64),
                    }
                )

    return users.repartition(n, USER).mapInPandas(run, RECOMMENDATIONS_DDL)

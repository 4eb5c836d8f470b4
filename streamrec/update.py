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

The equations are in ``streamrec.sgd`` (the numpy core, which is where the unit tests point).

How it runs on Spark (the talk's partitioning point): the touched sub-problem (B's ratings and the current rows
of the users and items in B) is gathered by joins, shipped to one grouped-map task (``applyInPandas``), which runs
the passes in numpy, and the new rows are merged back once. Nothing is collected to the driver (it receives two
numbers: |B| and Σ r), so the job runs unchanged on a cluster; the work and the memory of that task are
O(|B| · rank), whatever the size of the model, and the only O(model) step is the merge that writes the new
version. A partition too big for one task's memory (tens of millions of ratings) should be split into several
partitions, which the pipeline applies in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec import sgd
from streamrec.model import FactorModel, UpdateParams
from streamrec.schema import FACTOR_SCHEMA, ITEM, RATING, USER

_OUT_SCHEMA = "side string, id long, bias double, n long, factors array<double>"


def _touched(table: DataFrame, ratings: DataFrame, key: str, side: str) -> DataFrame:
    """Current rows of the ids of ``key`` in ``ratings`` (new ids: bias 0, n 0, factors null)."""
    ids = ratings.select(F.col(key).alias("id")).distinct()
    return ids.join(table, "id", "left").select(
        F.lit(side).alias("kind"),
        F.col("id").alias(USER),
        F.lit(None).cast("long").alias(ITEM),
        F.lit(None).cast("double").alias(RATING),
        F.coalesce("bias", F.lit(0.0)).alias("bias"),
        F.coalesce("n", F.lit(0)).cast("long").alias("n"),
        F.col("factors"),
    )


def _absorb_group(mu: float, rank: int, params: UpdateParams):
    """The grouped-map function: one pandas frame holding the whole touched sub-problem -> new rows."""

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        # Spark does not promise the order of a group's rows (local mode happens to keep it; a cluster's
        # shuffle need not): sorted, the floating-point sums run in one order and a retried or re-run update
        # gives the same bits wherever it runs.
        pdf = pdf.sort_values(["kind", USER, ITEM, RATING], kind="mergesort", na_position="first")
        r = pdf[pdf["kind"] == "r"]
        sides = {}
        for kind in ("u", "i"):
            rows = pdf[pdf["kind"] == kind]
            factors = np.zeros((len(rows), rank))
            for j, f in enumerate(rows["factors"].to_numpy()):
                if f is not None:
                    factors[j] = f
            sides[kind] = sgd.Side(
                rows[USER].to_numpy(np.int64),
                rows["bias"].to_numpy(np.float64),
                rows["n"].to_numpy(np.int64),
                factors,
            )
        u = pd.Index(sides["u"].ids).get_indexer(r[USER].to_numpy(np.int64))
        i = pd.Index(sides["i"].ids).get_indexer(r[ITEM].to_numpy(np.int64))
        users, items = sgd.absorb(u, i, r[RATING].to_numpy(np.float64), mu, sides["u"], sides["i"], params)
        out = []
        for kind, side, idx in (("u", users, u), ("i", items, i)):
            out.append(
                pd.DataFrame(
                    {
                        "side": kind,
                        "id": side.ids,
                        "bias": side.bias,
                        "n": side.n + np.bincount(idx, minlength=len(side.ids)),
                        "factors": list(side.factors),
                    }
                )
            )
        return pd.concat(out, ignore_index=True)

    return run


def apply(model: FactorModel, partition: DataFrame, params: UpdateParams | None = None) -> FactorModel:
    """Return the model after absorbing ``partition`` (``schema.RATINGS_SCHEMA``). ``model`` is not changed."""
    p = params or UpdateParams()
    ratings = partition.select(USER, ITEM, RATING)
    stats = ratings.agg(F.count("*").alias("n"), F.sum(RATING).alias("s")).first()
    nb = int(stats["n"])
    if nb == 0:
        return model
    mu = (model.mu * model.n + float(stats["s"])) / (model.n + nb)
    sub = (
        ratings.select(
            F.lit("r").alias("kind"),
            USER,
            ITEM,
            RATING,
            F.lit(None).cast("double").alias("bias"),
            F.lit(None).cast("long").alias("n"),
            F.lit(None).cast("array<double>").alias("factors"),
        )
        .unionByName(_touched(model.users, ratings, USER, "u"))
        .unionByName(_touched(model.items, ratings, ITEM, "i"))
        .withColumn("_g", F.lit(0))
    )
    fresh = (
        sub.groupBy("_g")
        .applyInPandas(_absorb_group(mu, model.rank, p), schema=_OUT_SCHEMA)
        .localCheckpoint()
    )

    def merge(table: DataFrame, side: str) -> DataFrame:
        new_rows = fresh.where(F.col("side") == side).drop("side")
        kept = table.join(new_rows.select("id"), "id", "left_anti")
        return kept.unionByName(new_rows).select(*FACTOR_SCHEMA.fieldNames())

    return FactorModel(
        mu=mu, n=model.n + nb, rank=model.rank, users=merge(model.users, "u"), items=merge(model.items, "i")
    )

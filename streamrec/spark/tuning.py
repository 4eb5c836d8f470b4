"""The Spark side of tuning: the tuning split, one trial, and the preparation of a run's data
(``jobs/tune_trial.py``). What is searched and how a trial is chosen: :mod:`streamrec.core.search`; the plan and
the report: :mod:`streamrec.pipeline.tuning`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import reduce
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.core import layout
from streamrec.core.params import BootstrapParams
from streamrec.core.schema import ITEM, RATING, USER, RatingScale
from streamrec.core.search import (
    BUCKETS,
    ERRORS_MAX_ROWS,
    ERRORS_SALT,
    SE,
    SEQ,
    TUNING_SALT,
    errors_key,
    errors_to_parquet,
    fit_values,
    pooled_rmse,
    sort_errors,
    tuned_fields,
)
from streamrec.spark import bootstrap, evaluate, split, update
from streamrec.spark.model import load_model
from streamrec.spark.ratings import read_ratings
from streamrec.spark.runs import Holdout, bootstrap_version
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore


# ------------------------------------------------------------------------------------------------------------
# the tuning split (Spark)
# ------------------------------------------------------------------------------------------------------------
def tuning_flag(fraction: float, seed: int):
    """Boolean column: True for rows that score trials (salted hash, independent of the store's hold-out)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"tuning validation fraction must be in (0, 1), got {fraction}")
    h = F.pmod(F.xxhash64(F.col(USER), F.col(ITEM), F.lit(seed), F.lit(TUNING_SALT)), F.lit(BUCKETS))
    return h < F.lit(int(round(fraction * BUCKETS)))


def without_holdout(df, holdout: dict | None):
    """``df`` minus the store's validation rows (``streamrec.spark.split`` with the lineage's fraction and seed)."""
    if not holdout or not holdout.get("fraction"):
        return df
    return df.where(~split.holdout_flag(float(holdout["fraction"]), int(holdout["seed"])))


def tuning_split(df, fraction: float, seed: int, holdout: dict | None):
    """``(fit, score)``: ``df`` without the store's hold-out, split by :func:`tuning_flag`."""
    rest = without_holdout(df, holdout)
    flag = tuning_flag(fraction, seed)
    return rest.where(~flag), rest.where(flag)


# ------------------------------------------------------------------------------------------------------------
# one trial (Spark)
# ------------------------------------------------------------------------------------------------------------
def row_errors(predictions, n: int, max_rows: int = ERRORS_MAX_ROWS):
    """Per-row squared errors of an ``evaluate.predict`` frame, on the driver (pandas, :func:`sort_errors` order):
    the key columns (``seq`` when present, user, item, rating) and ``se``. When ``n`` (the frame's row count)
    exceeds ``max_rows``, only a salted-hash sample of about ``max_rows`` rows: the same rows for every trial,
    since the sample depends on the row alone."""
    keys = [c for c in (SEQ, USER, ITEM, RATING) if c in predictions.columns]
    err = F.col(RATING) - F.col("prediction")
    df = predictions.select(*keys, (err * err).alias(SE))
    if n > max_rows:
        h = F.pmod(F.xxhash64(F.col(USER), F.col(ITEM), F.lit(ERRORS_SALT)), F.lit(BUCKETS))
        df = df.where(h < F.lit(math.ceil(BUCKETS * max_rows / n)))
    return sort_errors(df.toPandas())


def bootstrap_trial(fit_df, score_df, params, scale, errors: bool = False) -> dict:
    """Fit ``bootstrap.fit(fit_df, params)``; RMSE/MAE on ``score_df``; wall seconds of fit and score. With
    ``errors``, also ``"errors"``: the per-row squared errors on ``score_df`` (:func:`row_errors`), which the
    guard pairs with the baseline's (``streamrec.core.search.decide``)."""
    t0 = time.perf_counter()
    model = bootstrap.fit(fit_df, params)
    model.users, model.items = model.users.localCheckpoint(), model.items.localCheckpoint()
    fit_s = time.perf_counter() - t0
    pred = evaluate.predict(model, score_df, scale)
    if errors:
        pred = pred.localCheckpoint()
    m = evaluate.error_metrics(pred)
    out = {
        "rmse": m["rmse"],
        "mae": m["mae"],
        "n": m["n"],
        "fallbacks": m["fallbacks"],
        "fit_seconds": round(fit_s, 3),
    }
    if errors:
        out["errors"] = row_errors(pred, m["n"])
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def replay_trial(start, partitions: Sequence[tuple[str, Any]], params, scale, errors: bool = False) -> dict:
    """Prequential replay: for each ``(id, ratings)`` in order, score the model on it (``evaluate.predict``),
    then absorb it (``update.apply(…, params)``, both tables materialised). Returns the pooled RMSE and each
    partition's metrics; with ``errors``, also ``"errors"``: every scored row's squared error, tagged with
    its partition's position ``seq`` (:func:`row_errors`).

    One ``update.apply`` per partition (not ``update.apply_many``'s single job): the per-row predictions of
    partition k need the model after partitions 0..k−1. The result equals ``apply_many``'s to rounding (same
    equations, sums in another order: ``tests/test_engine_spark.py``)."""
    t0 = time.perf_counter()
    model = start
    per: dict[str, dict] = {}
    frames = []
    for k, (pid, df) in enumerate(partitions):
        pred = evaluate.predict(model, df, scale).withColumn(SEQ, F.lit(k))
        if errors:
            pred = pred.localCheckpoint()
        per[pid] = evaluate.error_metrics(pred)
        if errors:
            frames.append(pred)
        model = update.apply(model, df, params)
        model.users, model.items = model.users.localCheckpoint(), model.items.localCheckpoint()
    parts = list(per.values())
    n = sum(p["n"] for p in parts)
    mae = sum(p["n"] * p["mae"] for p in parts if p["mae"] is not None) / n if n else None
    out = {
        "rmse": pooled_rmse(parts),
        "mae": mae,
        "n": n,
        "per_partition": {pid: {"rmse": p["rmse"], "n": p["n"]} for pid, p in per.items()},
    }
    if errors:
        out["errors"] = (
            row_errors(reduce(DataFrame.unionByName, frames), n)
            if frames
            else sort_errors(pd.DataFrame({SEQ: [], USER: [], ITEM: [], RATING: [], SE: []}))
        )
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


# ------------------------------------------------------------------------------------------------------------
# prepare and run trials (Spark; jobs/tune_trial.py)
# ------------------------------------------------------------------------------------------------------------
def prepare(spark, bucket: Bucket | str, run: str) -> dict:
    """Materialise the run's data once: the bootstrap's fit/score split, each replayed partition without its
    hold-out, and (when no ancestor version fits) the replay's start model. Returns row counts."""
    b = Bucket.from_uri(bucket)
    plan = b.read_json(layout.tuning_plan(run))
    scale = RatingScale.parse(plan["scale"])
    out: dict[str, Any] = {}
    if plan.get("bootstrap"):
        p = plan["bootstrap"]
        df = read_ratings(spark, p["inputs"], scale)
        fit, score = tuning_split(df, plan["fraction"], plan["seed"], plan["holdout"])
        fit.write.mode("overwrite").parquet(p["fit"])
        score.write.mode("overwrite").parquet(p["score"])
        out["bootstrap"] = {
            "fit_rows": spark.read.parquet(p["fit"]).count(),
            "score_rows": spark.read.parquet(p["score"]).count(),
        }
    if plan.get("update"):
        u = plan["update"]
        rows = {}
        for r in u["replay"]:
            df = without_holdout(read_ratings(spark, r["uri"], scale), plan["holdout"])
            df.write.mode("overwrite").parquet(r["data"])
            rows[r["id"]] = spark.read.parquet(r["data"]).count()
        out["update"] = {"replay_rows": rows}
        if not u["start_version"]:
            # train rows only: bootstrap_version's own hold-out (same fraction and seed) removes them again
            h = plan["holdout"]
            hold = (
                Holdout(b.spark_uri(layout.tuning_scratch(run, "start-validation")), h["fraction"], h["seed"])
                if h
                else None
            )
            m = bootstrap_version(
                spark,
                ModelStore(u["start_store"]),
                u["start_inputs"],
                BootstrapParams.from_dict(u["start_params"]),
                version="start",
                scale=scale,
                kind="bootstrap",
                holdout=hold,
            )
            out["update"]["start_model"] = {"n_ratings": m.get("n_ratings"), "store": u["start_store"]}
    b.write_json(f"{layout.tuning_run(run)}/prepared.json", out)
    return out


def run_trial(spark, bucket: Bucket | str, run: str, part: str, index: int, params) -> dict:
    """Run trial ``index`` of ``part`` with ``params`` (a ``BootstrapParams`` / ``UpdateParams``) on the data
    :func:`prepare` wrote (a bootstrap trial with its own ALS seed: ``search.fit_values``), write its per-row
    errors (``trials/<part>-<index>.errors.parquet``) and ``trials/<part>-<index>.json``; return the JSON."""
    b = Bucket.from_uri(bucket)
    params = type(params).from_dict(fit_values(part, params.as_dict(), index))
    plan = b.read_json(layout.tuning_plan(run))
    scale = RatingScale.parse(plan["scale"])
    t0 = time.time()
    if part == "bootstrap":
        p = plan["bootstrap"]
        fit = spark.read.parquet(p["fit"]).cache()
        score = spark.read.parquet(p["score"]).cache()
        scores = bootstrap_trial(fit, score, params, scale, errors=True)
        fit.unpersist(), score.unpersist()
    elif part == "update":
        u = plan["update"]
        if u["start_version"]:
            start = load_model(ModelStore(b), spark, u["start_version"])
        else:
            start = load_model(ModelStore(u["start_store"]), spark, "start")
        parts = [(r["id"], spark.read.parquet(r["data"])) for r in u["replay"]]
        scores = replay_trial(start, parts, params, scale, errors=True)
    else:
        raise ValueError(f"part must be bootstrap or update, got {part!r}")
    key = layout.tuning_trial(run, part, index)
    rows = scores.pop("errors")
    b.write_bytes(errors_key(key), errors_to_parquet(rows))
    doc = {
        "run": run,
        "part": part,
        "index": index,
        "params": params.as_dict(),
        "tuned": {k: params.as_dict()[k] for k in tuned_fields(part)},
        "baseline": index == 0,
        "started_at": datetime.fromtimestamp(t0, UTC).isoformat(timespec="seconds"),
        **scores,
        "errors": errors_key(key),
        "errors_rows": len(rows),
    }
    if doc.get("rmse") is not None and not math.isfinite(doc["rmse"]):
        doc["rmse"] = None
    b.write_json(key, doc)
    return doc

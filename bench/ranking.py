"""Ranking quality: popularity, biases only, Spark ALS defaults and ours, on bench/accuracy.py's split.

    python bench/ranking.py [--ratings PATH] [--k 10] [--smoke]

Split: ``common.split`` (the 80/20 split of bench/accuracy.py; test rows whose user or item is absent from train
dropped). A test rating >= 4 is relevant. Evaluated users: test users with at least one relevant item. For each
user, a method ranks every item of the training catalogue; with the seen filter (the default for every method,
as the product does) the items the user rated in train are left out. Metrics at k (averages over users)::

    P@k      = hits / k                          recall@k = hits / |relevant|
    NDCG@k   = Σ_{j<=k, hit} 1/log2(j+1) / Σ_{j<=min(k,|rel|)} 1/log2(j+1)      (as streamrec.spark.evaluate)
    MAP@k    = Σ_{j<=k, hit} P@j / min(k, |relevant|)
    coverage = distinct items recommended to the evaluated users / items in the training catalogue

Methods: popularity (train rating count, ties by id), biases only (``mu + b_u + b_i`` of
``bootstrap.fit_biases``, default shrinkage), Spark ML ALS with its defaults on raw ratings, and ours
(``bootstrap.fit`` defaults) ranked by ``streamrec.core.ranking.Ranker`` (the code serving and the exported
recommendations run) with the plain rule and with the default rule, each with and without the seen filter.

Choosing the rule (on the training part only): the training part is split again (``common.split`` with seed 43,
20 % validation), ours is fitted on the rest, and every rule of the grid (``min_ratings`` x ``shrink`` x
``popularity``) is scored by NDCG@k on that validation part (vectorised: ``GridScorer``); the best is ``chosen``.
The test part is never looked at to choose; the grid's test figures are printed afterwards for the record only.
The methods' figures on the test part come from ``Ranker.top`` itself, user by user.

The recommend step's cost: ``streamrec.spark.recommend.recommend_all`` (the Spark step a bootstrap or update job
runs) on the model fitted on train, timed, and its output compared with ``Ranker`` for every user (``equal``).

``--smoke``: tiny generated data (seconds) and a small model, for the test. Prints progress lines, then one JSON
object on the last line.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time

import common
import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS

from streamrec.core import ranking
from streamrec.core.arrays import ModelArrays
from streamrec.core.params import BootstrapParams
from streamrec.core.ranking import Ranker, RankingRule
from streamrec.core.seen import SeenItems
from streamrec.core.synth import SynthConfig, generate_frame
from streamrec.spark import bootstrap
from streamrec.spark.model import to_arrays

RELEVANT_AT = 4.0
GRID_MIN_RATINGS = (0, 10, 50)
GRID_SHRINK = (0.0, 25.0, 100.0)
GRID_POPULARITY = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
SMOKE = SynthConfig(n_users=80, n_items=150, n_ratings=4000, seed=5)


# ---------------------------------------------------------------------------------------------------------------
# scoring in numpy
# ---------------------------------------------------------------------------------------------------------------
class Truth:
    """Per evaluated user: relevant test items, and the rows of the items it rated in train."""

    def __init__(self, train: pd.DataFrame, test: pd.DataFrame, item_ids: np.ndarray) -> None:
        rel = test[test["rating"] >= RELEVANT_AT]
        self.relevant = {int(u): set(g.to_numpy().tolist()) for u, g in rel.groupby("user")["item"]}
        self.users = np.array(sorted(self.relevant), dtype=np.int64)
        seen = SeenItems.from_ratings(train["user"], train["item"], train["rating"])
        self.seen_rows: dict[int, np.ndarray] = {}
        for u in self.users:
            rows = np.searchsorted(item_ids, seen[int(u)]) if int(u) in seen else np.empty(0, np.int64)
            self.seen_rows[int(u)] = np.unique(rows)
        self.n_items = len(item_ids)


def metrics(truth: Truth, top_of, k: int) -> dict:
    """``top_of(user) -> item ids best first`` scored on ``truth`` (see the module docstring)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    p, r, nd, ap, shown = [], [], [], [], set()
    for u in truth.users:
        rel = truth.relevant[int(u)]
        top = [int(i) for i in top_of(int(u))][:k]
        shown.update(top)
        hits = np.array([i in rel for i in top], dtype=float)
        hits = np.pad(hits, (0, k - len(hits)))
        p.append(hits.sum() / k)
        r.append(hits.sum() / len(rel))
        nd.append(float((hits * discounts).sum() / discounts[: min(k, len(rel))].sum()))
        prec_at = np.cumsum(hits) / np.arange(1, k + 1)
        ap.append(float((prec_at * hits).sum() / min(k, len(rel))))
    return {
        f"precision@{k}": float(np.mean(p)),
        f"recall@{k}": float(np.mean(r)),
        f"ndcg@{k}": float(np.mean(nd)),
        f"map@{k}": float(np.mean(ap)),
        "coverage": len(shown) / truth.n_items,
        "users": len(truth.users),
    }


def ranker_top(arrays: ModelArrays, truth: Truth, rule: RankingRule, k: int, seen: bool = True):
    rk = Ranker.of(arrays, rule)
    none = np.empty(0, np.int64)

    def top(user: int) -> np.ndarray:
        row = arrays.user_row(user)
        known = row >= 0
        rows, _ = rk.top(
            float(arrays.user_bias[row]) if known else None,
            arrays.user_factors[row] if known else None,
            truth.seen_rows[user] if seen else none,
            k,
        )
        return arrays.item_ids[rows]

    return top


class GridScorer:
    """The ranking rule's order for many rules at once, vectorised (for the selection grid): the dot products of
    the evaluated users with every item computed once (one matrix product), then per rule
    ``s = w * dot + b_i + popularity * ln(1 + n_i)`` with the seen and the too-rarely-rated items masked. The same
    order as ``Ranker.top`` up to the rounding of a matrix product (ties within ~1e-15 may swap)."""

    def __init__(self, arrays: ModelArrays, truth: Truth) -> None:
        self.arrays, self.truth = arrays, truth
        rows = arrays.user_rows(truth.users)
        assert (rows >= 0).all(), "every evaluated user is in the model (the split drops the others)"
        self.dots = arrays.user_factors[rows] @ arrays.item_factors.T
        self.seen = np.zeros(self.dots.shape, dtype=bool)
        for j, u in enumerate(truth.users):
            self.seen[j, truth.seen_rows[int(u)]] = True
        self.index = {int(u): j for j, u in enumerate(truth.users)}

    def top_of(self, rule: RankingRule, k: int):
        a = self.arrays
        n = a.item_n
        w = n / (n + rule.shrink) if rule.shrink > 0 else 1.0
        raw = self.dots * w + (a.item_bias + rule.popularity * np.log1p(n))
        raw[self.seen] = -np.inf
        if rule.min_ratings > 0:
            raw[:, n < rule.min_ratings] = -np.inf
        part = np.argpartition(-raw, k, axis=1)[:, : k + 1]

        def top(user: int) -> np.ndarray:
            j = self.index[user]
            cand = part[j][np.isfinite(raw[j, part[j]])]
            order = np.lexsort((a.item_ids[cand], -raw[j, cand]))[:k]
            return a.item_ids[cand[order]]

        return top


def popularity_top(train: pd.DataFrame, item_ids: np.ndarray, truth: Truth, k: int):
    counts = train.groupby("item").size().reindex(item_ids).fillna(0).to_numpy()
    order = np.lexsort((item_ids, -counts))

    def top(user: int) -> np.ndarray:
        seen = truth.seen_rows[user]
        head = order[: k + len(seen)]
        return item_ids[head[~np.isin(head, seen)][:k]]

    return top


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
def fit_ours(spark, train_pdf: pd.DataFrame, params: BootstrapParams) -> ModelArrays:
    df = common.to_spark(spark, train_pdf).cache()
    model = common.checkpoint_model(bootstrap.fit(df, params))
    arrays = to_arrays(model)
    df.unpersist()
    return arrays


def fit_biases(spark, train_pdf: pd.DataFrame, params: BootstrapParams) -> ModelArrays:
    df = common.to_spark(spark, train_pdf)
    mu = float(train_pdf["rating"].mean())
    ub, ib = bootstrap.fit_biases(df, mu, params.reg_user, params.reg_item, params.bias_iterations)
    u, i = ub.toPandas(), ib.toPandas()
    return ModelArrays(
        mu=mu,
        rank=1,
        user_ids=u["user"].to_numpy(np.int64),
        user_bias=u["b_u"].to_numpy(float),
        user_factors=np.zeros((len(u), 1)),
        item_ids=i["item"].to_numpy(np.int64),
        item_bias=i["b_i"].to_numpy(float),
        item_factors=np.zeros((len(i), 1)),
        user_n=u["n_u"].to_numpy(np.int64),
        item_n=i["n_i"].to_numpy(np.int64),
    )


def fit_spark_als(spark, train_pdf: pd.DataFrame) -> ModelArrays:
    """Spark ML ALS with its defaults (rank 10, maxIter 10, regParam 0.1) on raw ratings, as numpy arrays
    (mu 0, zero biases: its prediction is the dot product)."""
    uindex, iindex = pd.Index(np.unique(train_pdf["user"])), pd.Index(np.unique(train_pdf["item"]))
    df = spark.createDataFrame(
        pd.DataFrame(
            {
                "uix": uindex.get_indexer(train_pdf["user"]).astype(np.int32),
                "iix": iindex.get_indexer(train_pdf["item"]).astype(np.int32),
                "rating": train_pdf["rating"].to_numpy(np.float64),
            }
        )
    )
    m = ALS(userCol="uix", itemCol="iix", ratingCol="rating", coldStartStrategy="drop").fit(df)

    def side(factors, index: pd.Index) -> tuple[np.ndarray, np.ndarray]:
        pdf = factors.toPandas().sort_values("id")
        out = np.zeros((len(index), m.rank))
        out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy())
        return index.to_numpy(np.int64), out

    uids, uf = side(m.userFactors, uindex)
    iids, itf = side(m.itemFactors, iindex)
    return ModelArrays(
        mu=0.0,
        rank=m.rank,
        user_ids=uids,
        user_bias=np.zeros(len(uids)),
        user_factors=uf,
        item_ids=iids,
        item_bias=np.zeros(len(iids)),
        item_factors=itf,
    )


def with_item_ids(arrays: ModelArrays, item_ids: np.ndarray) -> ModelArrays:
    """``arrays`` over exactly the catalogue ``item_ids`` (every method ranks the same items)."""
    if np.array_equal(arrays.item_ids, item_ids):
        return arrays
    rows = arrays.item_rows(item_ids)
    ok = rows >= 0
    f = np.zeros((len(item_ids), arrays.rank))
    f[ok] = arrays.item_factors[rows[ok]]
    b = np.zeros(len(item_ids))
    b[ok] = arrays.item_bias[rows[ok]]
    n = np.zeros(len(item_ids), np.int64)
    n[ok] = arrays.item_n[rows[ok]]
    return ModelArrays(
        arrays.mu,
        arrays.rank,
        arrays.user_ids,
        arrays.user_bias,
        arrays.user_factors,
        item_ids,
        b,
        f,
        dict(arrays.manifest),
        arrays.n,
        arrays.user_n,
        n,
    )


# ---------------------------------------------------------------------------------------------------------------
# the recommend step (Spark) against the Ranker
# ---------------------------------------------------------------------------------------------------------------
def export_cost(spark, arrays: ModelArrays, train_pdf: pd.DataFrame, rule: RankingRule, scale) -> dict:
    from streamrec.core.arrays import table_from_side
    from streamrec.spark import recommend, seen
    from streamrec.spark.model import FactorModel

    def frame(ids, bias, n, factors):
        return spark.createDataFrame(table_from_side(ids, bias, n, factors).to_pandas())

    model = FactorModel(
        arrays.mu,
        arrays.n,
        arrays.rank,
        frame(arrays.user_ids, arrays.user_bias, arrays.user_n, arrays.user_factors),
        frame(arrays.item_ids, arrays.item_bias, arrays.item_n, arrays.item_factors),
    )
    common.checkpoint_model(model)
    seen_df = seen.build(common.to_spark(spark, train_pdf)).localCheckpoint()
    out = tempfile.mkdtemp(prefix="streamrec-ranking-export-")
    t0 = time.perf_counter()
    recs = recommend.recommend_all(model, seen_df, rule, (scale.low, scale.high))
    recs.write.mode("overwrite").parquet(out)
    seconds = common.seconds(t0)
    got = pd.read_parquet(out).sort_values(["user", "rank"])
    shutil.rmtree(out, ignore_errors=True)
    sk = SeenItems.from_ratings(train_pdf["user"], train_pdf["item"], train_pdf["rating"])
    rk = Ranker.of(arrays, rule, (scale.low, scale.high))
    equal, users = True, 0
    for user, g in got.groupby("user"):
        row = arrays.user_row(int(user))
        rated = arrays.item_rows(sk[int(user)]) if int(user) in sk else np.empty(0, np.int64)
        rows, scores = rk.top(
            float(arrays.user_bias[row]), arrays.user_factors[row], np.unique(rated[rated >= 0]), rule.k
        )
        users += 1
        equal &= bool(
            np.array_equal(g["item"].to_numpy(), arrays.item_ids[rows])
            and np.array_equal(g["score"].to_numpy(), scores)
            and np.array_equal(g["rank"].to_numpy(), np.arange(1, len(rows) + 1))
        )
    return {"seconds": seconds, "rows": len(got), "users": users, "equal_to_ranker": equal}


# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_data_args(ap)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    say = common.Progress("ranking")
    load0 = common.machine()
    k = args.k
    if args.smoke:
        df = generate_frame(SMOKE)
        df["ts"] = df["ts"].astype("Int64")
        data = common.Data(df, f"synthetic smoke: {SMOKE}", SMOKE.scale)
        params = BootstrapParams(rank=4, iterations=3)
        grid = list(itertools.product((0, 20), (0.0, 25.0), (0.0, 1.0)))
    else:
        data = common.load(args.ratings, args.scale, say)
        params = BootstrapParams()
        grid = list(itertools.product(GRID_MIN_RATINGS, GRID_SHRINK, GRID_POPULARITY))
    sp = common.split(data.ratings)
    say(
        f"{len(data.ratings)} ratings: train {len(sp.train)}, test {len(sp.test_known)} (dropped {sp.dropped})"
    )
    result: dict = {"data": data.label, "code": common.code_version(), "k": k, "relevant_at": RELEVANT_AT}

    with common.spark_session("bench-ranking", event_log=False) as (spark, _):
        # --- choose the rule on the training part only ------------------------------------------------------
        inner = common.split(sp.train, seed=common.SPLIT_SEED + 1)
        t0 = time.perf_counter()
        fit_part = fit_ours(spark, inner.train, params)
        say(f"selection: ours fitted on {len(inner.train)} training rows in {common.seconds(t0):.1f}s")
        val_truth = Truth(inner.train, inner.test_known, fit_part.item_ids)
        val_grid = GridScorer(fit_part, val_truth)
        selection = []
        for m, s, pop in grid:
            rule = RankingRule(min_ratings=m, shrink=s, popularity=pop, k=k)
            got = metrics(val_truth, val_grid.top_of(rule, k), k)
            selection.append({"min_ratings": m, "shrink": s, "popularity": pop, **got})
        best = max(
            selection,
            key=lambda x: (round(x[f"ndcg@{k}"], 6), -x["min_ratings"], -x["shrink"], -x["popularity"]),
        )
        chosen = RankingRule(best["min_ratings"], best["shrink"], best["popularity"], k)
        say(
            f"selection on validation ({val_truth.users.size} users): best {chosen} "
            f"NDCG@{k} {best[f'ndcg@{k}']:.4f} (plain {selection[0][f'ndcg@{k}']:.4f}); "
            f"default in code {ranking.DEFAULT}"
        )

        # --- the methods on the test part --------------------------------------------------------------------
        t0 = time.perf_counter()
        ours = fit_ours(spark, sp.train, params)
        fit_s = common.seconds(t0)
        catalogue = ours.item_ids
        truth = Truth(sp.train, sp.test_known, catalogue)
        say(
            f"ours fitted on train in {fit_s:.1f}s; {truth.users.size} evaluated users, {len(catalogue)} items"
        )
        biases = with_item_ids(fit_biases(spark, sp.train, params), catalogue)
        als = with_item_ids(fit_spark_als(spark, sp.train), catalogue)
        methods = {
            "popularity": metrics(truth, popularity_top(sp.train, catalogue, truth, k), k),
            "biases_only": metrics(truth, ranker_top(biases, truth, ranking.PLAIN, k), k),
            "spark_als_defaults": metrics(truth, ranker_top(als, truth, ranking.PLAIN, k), k),
            "ours_plain_no_seen_filter": metrics(truth, ranker_top(ours, truth, ranking.PLAIN, k, False), k),
            "ours_plain": metrics(truth, ranker_top(ours, truth, ranking.PLAIN, k), k),
            "ours_chosen_no_seen_filter": metrics(truth, ranker_top(ours, truth, chosen, k, False), k),
            "ours_chosen": metrics(truth, ranker_top(ours, truth, chosen, k), k),
            "ours_default": metrics(truth, ranker_top(ours, truth, ranking.DEFAULT, k), k),
        }
        grid_test = []
        test_grid = GridScorer(ours, truth)
        for row in selection:
            rule = RankingRule(row["min_ratings"], row["shrink"], row["popularity"], k)
            got = metrics(truth, test_grid.top_of(rule, k), k)
            grid_test.append(
                {**{f: row[f] for f in ("min_ratings", "shrink", "popularity")}, "ndcg": got[f"ndcg@{k}"]}
            )
        # the vectorised grid against Ranker.top on the chosen rule (the same order but for float ties)
        grid_chosen = metrics(truth, test_grid.top_of(chosen, k), k)[f"ndcg@{k}"]
        grid_check = {"grid": grid_chosen, "ranker": methods["ours_chosen"][f"ndcg@{k}"]}
        name_w = max(len(n) for n in methods)
        say(f"{'method':<{name_w}}  P@{k}    R@{k}    NDCG@{k} MAP@{k}  coverage")
        for name, m in methods.items():
            say(
                f"{name:<{name_w}}  {m[f'precision@{k}']:.4f}  {m[f'recall@{k}']:.4f}  {m[f'ndcg@{k}']:.4f}  "
                f"{m[f'map@{k}']:.4f}  {m['coverage']:.4f}"
            )
        peers = ("popularity", "biases_only", "spark_als_defaults")
        best_peer = max(peers, key=lambda n: methods[n][f"ndcg@{k}"])
        export = export_cost(
            spark,
            ours,
            sp.train,
            ranking.DEFAULT.__class__(**{**ranking.DEFAULT.as_dict(), "k": k}),
            data.scale,
        )
        say(f"recommend step (Spark) on the train model: {export}")
        spark.stop()

    result.update(
        {
            "n_train": len(sp.train),
            "n_test": len(sp.test_known),
            "params": params.as_dict(),
            "fit_seconds": fit_s,
            "chosen_on_train": chosen.as_dict(),
            "default_in_code": ranking.DEFAULT.as_dict(),
            "default_is_chosen": (
                ranking.DEFAULT.min_ratings,
                ranking.DEFAULT.shrink,
                ranking.DEFAULT.popularity,
            )
            == (chosen.min_ratings, chosen.shrink, chosen.popularity),
            "selection_validation": selection,
            "grid_on_test_for_the_record": grid_test,
            "grid_vs_ranker_on_chosen_ndcg": grid_check,
            "methods": methods,
            "best_peer": best_peer,
            "ours_default_vs_best_peer_ndcg": methods["ours_default"][f"ndcg@{k}"]
            - methods[best_peer][f"ndcg@{k}"],
            "ours_default_at_or_above_best_peer": methods["ours_default"][f"ndcg@{k}"]
            >= methods[best_peer][f"ndcg@{k}"],
            "ours_chosen_at_or_above_best_peer": methods["ours_chosen"][f"ndcg@{k}"]
            >= methods[best_peer][f"ndcg@{k}"],
            "recommend_step": export,
            "machine": {"start": load0, "end_loadavg_1_5_15": list(os.getloadavg())},
        }
    )
    common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

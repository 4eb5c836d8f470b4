"""Seen items and recommendations on a real Spark session: the side table built and folded forward, the
exported top-K equal to the library's ``Recommender``, and the bootstrap / update jobs writing both with their
version (listed in the manifest, read back by pandas and Spark without streamrec)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from streamrec.core.arrays import ModelArrays
from streamrec.core.params import BootstrapParams
from streamrec.core.ranking import RankingRule
from streamrec.core.seen import SeenItems
from streamrec.pipeline.lookup import Recommender
from streamrec.spark import recommend, runs, seen
from streamrec.spark.model import FactorModel
from streamrec.spark.schema import FACTOR_SCHEMA, RATINGS_SCHEMA
from streamrec.storage.store import ModelStore

pytestmark = pytest.mark.spark


def ratings(spark, rows, seq: bool = False):
    if seq:
        return spark.createDataFrame(rows, "seq int, user long, item long, rating double, ts long")
    return spark.createDataFrame([(u, i, float(r), t) for u, i, r, t in rows], RATINGS_SCHEMA)


def as_dict(df) -> dict:
    return {r["user"]: (list(r["items"]), list(r["ratings"])) for r in df.collect()}


def test_build_keeps_the_latest_rating_of_each_item(spark):
    df = ratings(
        spark,
        [
            (1, 30, 5.0, 100),
            (1, 10, 4.0, 7),
            (1, 30, 2.0, 200),
            (2, 10, 1.0, None),
            (2, 10, 3.0, None),
            (1, 20, 3.5, None),
        ],
    )
    got = as_dict(seen.build(df))
    # user 1 item 30: ts 200 beats ts 100; user 2 item 10: no timestamps, the higher rating
    assert got == {1: ([10, 20, 30], [4.0, 3.5, 2.0]), 2: ([10], [3.0])}
    # the same rule as the numpy form (streamrec.core.seen.SeenItems.from_ratings)
    pdf = df.toPandas()
    np_seen = SeenItems.from_ratings(pdf["user"], pdf["item"], pdf["rating"], pdf["ts"].astype("float"))
    assert {u: (list(np_seen.rated(u)[0]), list(np_seen.rated(u)[1])) for u in np_seen} == got


def test_merge_folds_a_batch_in_and_carries_untouched_users_over(spark):
    base = seen.build(ratings(spark, [(1, 10, 4.0, 1), (1, 20, 2.0, 2), (2, 10, 5.0, 3), (3, 40, 1.0, 4)]))
    batch = ratings(
        spark, [(0, 1, 20, 4.5, 9), (0, 4, 10, 3.0, 9), (1, 1, 20, 1.5, 1), (1, 1, 50, 3.0, 1)], seq=True
    )
    got = as_dict(seen.merge(base, batch))
    assert got == {
        1: (
            [10, 20, 50],
            [4.0, 1.5, 3.0],
        ),  # partition 1 re-rated item 20 after partition 0: its rating counts
        2: ([10], [5.0]),  # untouched: carried over
        3: ([40], [1.0]),
        4: ([10], [3.0]),  # new user
    }
    # one batch of partitions = the partitions one after the other
    first, second = batch.where("seq = 0"), batch.where("seq = 1").withColumn("seq", F.lit(0))
    assert as_dict(seen.merge(seen.merge(base, first), second)) == got


def _random_model(seed: int = 3, n_users: int = 40, n_items: int = 120, rank: int = 5) -> ModelArrays:
    rng = np.random.default_rng(seed)
    return ModelArrays(
        mu=3.5,
        rank=rank,
        user_ids=np.arange(1, n_users + 1) * 3,
        user_bias=rng.normal(0, 0.3, n_users),
        user_factors=rng.normal(0, 0.6, (n_users, rank)),
        item_ids=rng.permutation(np.arange(1000, 1000 + n_items)),
        item_bias=rng.normal(0, 0.4, n_items),
        item_factors=rng.normal(0, 0.6, (n_items, rank)),
        n=5000,
        user_n=rng.integers(1, 100, n_users),
        item_n=rng.integers(0, 60, n_items),
    )


def _factor_model(spark, a: ModelArrays) -> FactorModel:
    def frame(ids, bias, n, factors):
        pdf = pd.DataFrame({"id": ids, "bias": bias, "n": n, "factors": list(factors)})
        return spark.createDataFrame(pdf, schema=FACTOR_SCHEMA)

    return FactorModel(
        a.mu,
        a.n,
        a.rank,
        frame(a.user_ids, a.user_bias, a.user_n, a.user_factors),
        frame(a.item_ids, a.item_bias, a.item_n, a.item_factors),
    )


@pytest.mark.parametrize(
    "rule",
    [RankingRule(), RankingRule(min_ratings=20, shrink=25.0, popularity=0.5, k=7)],
    ids=["plain", "all-three-terms"],
)
def test_exported_top_k_equals_the_recommender_bit_for_bit(spark, rule):
    arrays = _random_model()
    rng = np.random.default_rng(9)
    rows = []
    for u in arrays.user_ids[::2]:  # half the users rated something; one user the model does not know
        for i in rng.choice(arrays.item_ids, size=rng.integers(1, 60), replace=False):
            rows.append((int(u), int(i), float(rng.integers(1, 11) / 2), 1))
    rows += [(999_999, int(arrays.item_ids[0]), 4.0, 1)]
    seen_df = seen.build(ratings(spark, rows))
    recs = recommend.recommend_all(_factor_model(spark, arrays), seen_df, rule, (0.5, 5.0), partitions=3)
    got = recs.toPandas()
    pdf = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    rec = Recommender(arrays, seen=SeenItems.from_ratings(pdf["user"], pdf["item"], pdf["rating"]), rule=rule)
    users = sorted(set(arrays.user_ids.tolist()) | {999_999})
    assert sorted(got["user"].unique().tolist()) == users
    for user in users:
        mine = got[got["user"] == user].sort_values("rank")
        want = rec.recommend(user, rule.k)
        assert mine["rank"].tolist() == list(range(1, len(want) + 1))
        assert mine["item"].tolist() == [i for i, _ in want]
        assert mine["score"].tolist() == [s for _, s in want]  # the same bits
        assert not set(mine["item"]) & set(pdf.loc[pdf["user"] == user, "item"])  # never a rated item
        if rule.min_ratings:
            assert (arrays.item_n[arrays.item_rows(mine["item"].to_numpy())] >= rule.min_ratings).all()


def test_bootstrap_and_update_write_seen_items_and_recommendations(spark, tmp_path):
    rng = np.random.default_rng(11)
    n = 3000
    hist = pd.DataFrame(
        {
            "user": rng.integers(1, 61, n),
            "item": rng.zipf(1.6, n) % 200 + 1,
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": np.arange(n) + 1_000_000,
        }
    )
    hist.loc[:399, "user"] = 7  # a heavy user
    hist.to_csv(tmp_path / "history.csv", index=False)
    part = pd.DataFrame(
        {"user": [7, 7, 500], "item": [199, 198, 3], "rating": [4.0, 5.0, 3.0], "timestamp": [2e6] * 3}
    )
    part.astype({"timestamp": "int64"}).to_csv(tmp_path / "p-1.csv", index=False)
    store = ModelStore(str(tmp_path / "bucket"))
    rule = RankingRule(min_ratings=2, shrink=10.0, popularity=0.25, k=5)
    boot = runs.bootstrap_version(
        spark,
        store,
        [str(tmp_path / "history.csv")],
        BootstrapParams(rank=3, iterations=3),
        version="v0",
        holdout=runs.Holdout(str(tmp_path / "bucket" / "validation"), 0.1),
        rule=rule,
    )
    assert boot["ranking"]["min_ratings"] == 2 and boot["ranking"]["recommendations"] is True
    assert set(boot["tables"]) == {"users", "items", "seen", "recommendations"}
    store.publish("v0")
    upd, _ = runs.update_version(spark, store, [("p-1", str(tmp_path / "p-1.csv"))], version="v1")
    assert upd["ranking"]["shrink"] == 10.0  # the base's rule, inherited
    for version, rated in (("v0", hist), ("v1", pd.concat([hist, part]))):
        manifest = store.read_manifest(version)
        s = store.load_seen(version)
        assert manifest["tables"]["seen"]["rows"] == rated["user"].nunique() == len(s)
        for user, g in rated.groupby("user"):  # held-out ratings count as rated too
            np.testing.assert_array_equal(s[user], np.unique(g["item"]))
        # the exported table, read by plain pandas from the files the manifest lists
        keys = store.table_keys(version, "recommendations")
        files = [store.bucket.uri(k) for k in keys]
        recs = pd.concat(pd.read_parquet(f) for f in files)
        assert list(recs.columns) == ["user", "rank", "item", "score"]
        assert pq.read_schema(files[0]).field("rank").type == "int32"
        assert recs[["user", "rank"]].equals(recs[["user", "rank"]].sort_values(["user", "rank"]))
        assert spark.read.parquet(*files).count() == len(recs)
        served = Recommender.from_store(store, version)
        assert recs["user"].nunique() == len(s)  # every user of the version (500 only from v1 on)
        for user in [7, *rated["user"].drop_duplicates().sample(10, random_state=1)]:
            want = served.recommend(int(user), 5)
            mine = recs[recs["user"] == user].sort_values("rank")
            assert list(zip(mine["item"], mine["score"], strict=True)) == want
            assert not set(mine["item"]) & set(rated.loc[rated["user"] == user, "item"])
    assert len(store.load_seen("v1")[7]) == len(np.unique(hist.loc[hist["user"] == 7, "item"])) + 2

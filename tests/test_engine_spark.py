"""Bootstrap, streaming update and evaluation on a real local Spark session, on tiny hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from streamrec.core import sgd
from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.spark import bootstrap, evaluate, update
from streamrec.spark.model import FactorModel
from streamrec.spark.schema import FACTOR_SCHEMA, RATINGS_SCHEMA

pytestmark = pytest.mark.spark


def ratings(spark, rows):
    return spark.createDataFrame([(u, i, float(r), t) for u, i, r, t in rows], RATINGS_SCHEMA)


def model(spark, mu, n, users, items, rank=2) -> FactorModel:
    def table(rows):
        return spark.createDataFrame(
            [(int(a), float(b), int(c), [float(x) for x in f]) for a, b, c, f in rows], FACTOR_SCHEMA
        )

    return FactorModel(mu=mu, n=n, rank=rank, users=table(users), items=table(items))


def rows_by_id(df) -> dict:
    return {r["id"]: (r["bias"], r["n"], list(r["factors"])) for r in df.collect()}


@pytest.fixture()
def base(spark):
    return model(
        spark,
        mu=3.5,
        n=20,
        users=[(1, 0.2, 8, [0.3, -0.1]), (2, -0.3, 6, [0.1, 0.4]), (3, 0.0, 6, [-0.2, 0.2])],
        items=[(10, 0.1, 9, [0.5, 0.2]), (11, -0.2, 7, [-0.3, 0.1]), (12, 0.4, 4, [0.2, -0.5])],
    )


def test_update_keeps_untouched_rows_bit_identical_and_one_row_per_entity(spark, base):
    part = ratings(spark, [(1, 10, 4.0, 1), (99, 11, 2.0, 2), (99, 13, 3.5, 3)])  # user 99, item 13 are new
    new = update.apply(base, part, UpdateParams())
    users, items = rows_by_id(new.users), rows_by_id(new.items)
    assert new.users.count() == len(users) == 4 and new.items.count() == len(items) == 4
    before_u, before_i = rows_by_id(base.users), rows_by_id(base.items)
    assert users[2] == before_u[2] and users[3] == before_u[3]  # untouched users, bit for bit
    assert items[12] == before_i[12]
    assert users[1][1] == 9 and users[99][1] == 2 and items[13][1] == 1  # counts absorbed


def test_update_mu_is_the_running_mean(spark, base):
    part = ratings(spark, [(1, 10, 5.0, 1), (2, 11, 1.0, 2), (3, 12, 4.5, 3)])
    new = update.apply(base, part)
    assert new.n == 23
    assert new.mu == pytest.approx((3.5 * 20 + 5.0 + 1.0 + 4.5) / 23)


def test_update_learning_rate_zero_leaves_known_entities_unchanged(spark, base):
    part = ratings(spark, [(1, 10, 5.0, 1), (2, 11, 1.0, 2), (3, 12, 4.5, 3)])
    new = update.apply(base, part, UpdateParams(lr=0.0))
    for got, want in (
        (rows_by_id(new.users), rows_by_id(base.users)),
        (rows_by_id(new.items), rows_by_id(base.items)),
    ):
        assert {k: (b, f) for k, (b, _, f) in got.items()} == {k: (b, f) for k, (b, _, f) in want.items()}


def test_new_user_gets_one_row_zero_bias_and_a_fold_in_vector(spark, base):
    part = ratings(spark, [(77, 10, 5.0, 1), (77, 11, 2.0, 2), (77, 12, 4.0, 3)])
    new = update.apply(base, part, UpdateParams(lr=0.0))
    rows = new.users.where(F.col("id") == 77).collect()
    assert len(rows) == 1
    assert rows[0]["bias"] == 0.0 and rows[0]["n"] == 3
    f = np.array(rows[0]["factors"])
    assert np.linalg.norm(f) > 0.05  # not zero, not random: the ridge fit below


def test_spark_update_equals_the_numpy_core(spark, base):
    part_rows = [(1, 10, 4.0, 1), (2, 10, 3.0, 2), (2, 12, 5.0, 3), (99, 11, 2.5, 4), (3, 13, 1.0, 5)]
    p = UpdateParams(passes=3)
    new = update.apply(base, ratings(spark, part_rows), p)
    bu, bi = rows_by_id(base.users), rows_by_id(base.items)
    uids = [1, 2, 99, 3]
    iids = [10, 12, 11, 13]

    def side(ids, table):
        return sgd.Side(
            np.array(ids),
            np.array([table.get(x, (0.0, 0, None))[0] for x in ids]),
            np.array([table.get(x, (0.0, 0, None))[1] for x in ids]),
            np.array([table.get(x, (0.0, 0, [0.0, 0.0]))[2] for x in ids], float),
        )

    u = np.array([uids.index(r[0]) for r in part_rows])
    i = np.array([iids.index(r[1]) for r in part_rows])
    r = np.array([r[2] for r in part_rows])
    mu = (3.5 * 20 + r.sum()) / 25
    want_u, want_i = sgd.absorb(u, i, r, mu, side(uids, bu), side(iids, bi), p)
    got_u, got_i = rows_by_id(new.users), rows_by_id(new.items)
    for ids, want, got in ((uids, want_u, got_u), (iids, want_i, got_i)):
        for k, x in enumerate(ids):
            assert got[x][0] == pytest.approx(want.bias[k], abs=1e-12)
            np.testing.assert_allclose(got[x][2], want.factors[k], atol=1e-12)


def test_a_sequence_in_one_job_equals_scoring_and_applying_each_in_turn(spark, base):
    """``apply_many`` (what a batched update runs) = prequential + ``apply`` partition by partition: B_2 sees the
    ids B_1 added (user 99 is new in B_1, known in B_3), mu moves per partition, an empty partition is a no-op."""
    parts = [
        [(1, 10, 4.0, 1), (99, 11, 2.0, 2), (99, 13, 3.5, 3), (2, 12, 5.0, 4)],
        [],
        [(99, 10, 4.5, 5), (3, 13, 1.0, 6), (1, 14, 3.0, 7), (2, 10, 2.5, 8)],
        [(4, 11, 4.0, 9), (99, 14, 5.0, 10)],
    ]
    frames = [ratings(spark, rows) for rows in parts]
    p = UpdateParams(passes=2)
    got, scores = update.apply_many(base, frames, p)
    want, want_scores = base, []
    for df in frames:
        want_scores.append(evaluate.prequential(want, df))
        want = update.apply(want, df, p)
    assert got.n == want.n == 30 and got.mu == pytest.approx(want.mu, abs=1e-12)
    for a, b in ((got.users, want.users), (got.items, want.items)):
        ga, wb = rows_by_id(a), rows_by_id(b)
        assert ga.keys() == wb.keys() and a.count() == len(ga)
        for x in ga:
            assert ga[x][1] == wb[x][1]
            assert ga[x][0] == pytest.approx(wb[x][0], abs=1e-12)
            np.testing.assert_allclose(ga[x][2], wb[x][2], atol=1e-12)
    assert [s["n"] for s in scores] == [4, 0, 4, 2]
    for s, w in zip(scores, want_scores, strict=True):
        assert s["fallbacks"] == w["fallbacks"]
        assert s["rmse"] == pytest.approx(w["rmse"], abs=1e-12) if w["n"] else s["rmse"] is None
        assert s["mae"] == pytest.approx(w["mae"], abs=1e-12) if w["n"] else s["mae"] is None
    assert scores[0]["fallbacks"] == {"user_unknown": 1, "item_unknown": 0, "both_unknown": 1}
    # user 99 and item 13 were absorbed by the first partition; item 14 is new in the third
    assert scores[2]["fallbacks"] == {"user_unknown": 0, "item_unknown": 1, "both_unknown": 0}
    assert scores[3]["fallbacks"] == {"user_unknown": 1, "item_unknown": 0, "both_unknown": 0}


def test_bootstrap_biases_match_the_shrunk_means_by_hand(spark):
    df = ratings(spark, [(1, 10, 5.0, 0), (1, 11, 3.0, 0), (2, 10, 4.0, 0), (2, 12, 1.0, 0)])
    mu = 13.0 / 4
    ub, ib = bootstrap.fit_biases(df, mu, reg_user=1.0, reg_item=2.0, iterations=1)
    b_i = {r["item"]: r["b_i"] for r in ib.collect()}
    b_u = {r["user"]: r["b_u"] for r in ub.collect()}
    # iteration 1 starts at b_u = 0: b_i = sum(r - mu) / (2 + n_i)
    assert b_i[10] == pytest.approx((5 - mu + 4 - mu) / 4)
    assert b_i[11] == pytest.approx((3 - mu) / 3)
    assert b_i[12] == pytest.approx((1 - mu) / 3)
    # then b_u = sum(r - mu - b_i) / (1 + n_u)
    assert b_u[1] == pytest.approx((5 - mu - b_i[10] + 3 - mu - b_i[11]) / 3)
    assert b_u[2] == pytest.approx((4 - mu - b_i[10] + 1 - mu - b_i[12]) / 3)


@pytest.fixture(scope="module")
def planted(spark):
    """3,000 ratings from a planted rank-2 model with noise 0.1 (continuous, unrounded)."""
    rng = np.random.default_rng(3)
    nu, ni = 60, 80
    p, q = rng.normal(0, 0.7, (nu, 2)), rng.normal(0, 0.7, (ni, 2))
    bu, bi = rng.normal(0, 0.3, nu), rng.normal(0, 0.3, ni)
    pairs = rng.choice(nu * ni, 3000, replace=False)
    u, i = pairs // ni, pairs % ni
    r = 3.0 + bu[u] + bi[i] + (p[u] * q[i]).sum(1) + rng.normal(0, 0.1, len(u))
    pdf = pd.DataFrame({"user": u + 1, "item": i + 1, "rating": r, "ts": np.arange(len(u))})
    return spark.createDataFrame(pdf, RATINGS_SCHEMA)


def test_bootstrap_same_seed_same_model_and_it_fits(spark, planted):
    params = BootstrapParams(rank=2, iterations=10, reg=0.01, reg_user=1, reg_item=1, seed=5)
    a = bootstrap.fit(planted, params)
    b = bootstrap.fit(planted, params)
    assert rows_by_id(a.users) == rows_by_id(b.users)
    assert rows_by_id(a.items) == rows_by_id(b.items)
    assert a.users.count() == 60 and a.items.count() == 80
    assert all(len(f) == 2 for _, _, f in rows_by_id(a.users).values())
    fit = evaluate.rmse(a, planted, scale=_wide())
    assert fit["rmse"] < 0.2  # noise 0.1: the planted structure is recovered


def _wide():
    from streamrec.core.schema import RatingScale

    return RatingScale(-10.0, 10.0, 0.5)


def test_predict_falls_back_and_is_never_nan(spark, base):
    df = ratings(spark, [(1, 10, 4.0, 0), (999, 10, 4.0, 0), (1, 999, 4.0, 0), (998, 997, 4.0, 0)])
    pred = {
        (r["user"], r["item"]): (r["prediction"], r["fallback"]) for r in evaluate.predict(base, df).collect()
    }
    assert pred[(1, 10)] == (pytest.approx(3.5 + 0.2 + 0.1 + 0.3 * 0.5 - 0.1 * 0.2), "none")
    assert pred[(999, 10)] == (pytest.approx(3.6), "user_unknown")
    assert pred[(1, 999)] == (pytest.approx(3.7), "item_unknown")
    assert pred[(998, 997)] == (pytest.approx(3.5), "both_unknown")
    m = evaluate.rmse(base, df)
    assert m["n"] == 4 and not math.isnan(m["rmse"])
    assert m["fallbacks"] == {"user_unknown": 1, "item_unknown": 1, "both_unknown": 1}


def test_ranking_metrics_by_hand(spark):
    # One user; item scores b_i: 13 > 12 > 11 > 10. Item 13 was rated in training, so the top 2 are 12, 11.
    m = model(
        spark,
        3.0,
        4,
        users=[(1, 0.0, 1, [0.0, 0.0])],
        items=[(10, 0.1, 1, [0, 0]), (11, 0.2, 1, [0, 0]), (12, 0.3, 1, [0, 0]), (13, 0.4, 1, [0, 0])],
    )
    train = ratings(spark, [(1, 13, 4.0, 0)])
    hold = ratings(spark, [(1, 11, 5.0, 0), (1, 10, 4.5, 0), (1, 12, 2.0, 0)])  # relevant (>= 4): 11, 10
    got = evaluate.ranking_metrics(m, train, hold, k=2)
    assert got["precision@2"] == pytest.approx(0.5)  # top2 = [12, 11]; one hit
    ideal = 1 + 1 / math.log2(3)
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal)

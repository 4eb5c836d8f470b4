"""``streamrec.core.arrays.predict``: the one numpy prediction rule, by hand, against its users (gate, update task,
serving) and against the Spark expression of ``streamrec.spark.evaluate.predict`` on a model with cold ids."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from streamrec.core.arrays import ModelArrays, Parts, predict, predict_rows
from streamrec.core.schema import RatingScale
from streamrec.pipeline.lookup import Recommender
from streamrec.pipeline.tasks import rmse


def tiny() -> ModelArrays:
    """mu 3; users 1, 2, 3; items 10, 20, 30, 40; rank 2 (as in tests/test_lookup.py)."""
    return ModelArrays(
        mu=3.0,
        rank=2,
        user_ids=[3, 1, 2],  # unsorted on purpose: ModelArrays sorts its rows
        user_bias=[0.0, 0.5, -0.5],
        user_factors=[[1.0, 2.0], [1.0, 0.0], [0.0, 1.0]],
        item_ids=[10, 20, 30, 40],
        item_bias=[0.2, -0.3, 0.0, 0.1],
        item_factors=[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0]],
    )


def random_model(seed: int, rank: int = 5, scale: float = 0.6) -> ModelArrays:
    rng = np.random.default_rng(seed)
    nu, ni = 40, 60
    return ModelArrays(
        mu=3.4,
        rank=rank,
        user_ids=rng.choice(1000, nu, replace=False),
        user_bias=rng.normal(0, 0.4, nu),
        user_factors=rng.normal(0, scale, (nu, rank)),
        item_ids=rng.choice(1000, ni, replace=False) + 5000,
        item_bias=rng.normal(0, 0.4, ni),
        item_factors=rng.normal(0, scale, (ni, rank)),
    )


def pairs_with_cold_ids(a: ModelArrays, seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Aligned user / item ids, about a quarter of each side unknown to ``a`` (so every fallback occurs)."""
    rng = np.random.default_rng(seed)
    users = np.where(rng.random(n) < 0.25, rng.integers(2000, 3000, n), rng.choice(a.user_ids, n))
    items = np.where(rng.random(n) < 0.25, rng.integers(9000, 9900, n), rng.choice(a.item_ids, n))
    return users.astype(np.int64), items.astype(np.int64)


@pytest.mark.unit
def test_rule_fallbacks_clip_and_baseline_by_hand() -> None:
    a = tiny()
    users, items = [1, 2, 3, 99, 1, 98, 3], [10, 20, 20, 10, 99, 97, 40]
    raw = [
        3 + 0.5 + 0.2 + 1.0,  # 4.7
        3 - 0.5 - 0.3 + 2.0,  # 4.2
        3 + 0.0 - 0.3 + 4.0,  # 6.7
        3 + 0.2,  # unknown user: mu + b_i
        3 + 0.5,  # unknown item: mu + b_u
        3.0,  # both unknown: mu
        3 + 0.0 + 0.1 + 1.0,  # 4.1
    ]
    np.testing.assert_allclose(predict(a, users, items), raw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        predict(a, users, items, clip=(0.5, 5.0)), np.minimum(raw, 5.0), rtol=0, atol=1e-12
    )
    assert (
        predict(a, [3], [20], clip=(1.0, 4.5))[0] == 4.5 and predict(a, [2], [10], clip=(3.0, 5.0))[0] == 3.0
    )
    # factors=False: mu + b_u + b_i, the same fallbacks, the same clip
    baseline = [3.7, 2.2, 2.7, 3.2, 3.5, 3.0, 3.1]
    np.testing.assert_allclose(predict(a, users, items, factors=False), baseline, rtol=0, atol=1e-12)
    assert predict(a, [], []).shape == (0,)
    with pytest.raises(ValueError, match="3 users but 2 items"):
        predict(a, [1, 2, 3], [10, 20])


@pytest.mark.unit
def test_predict_rows_on_parts_is_predict_on_the_arrays() -> None:
    """Row indices (-1 = unknown) into bare arrays, as the update task scores its touched rows, give the bits of
    ``predict`` by id; a row whose id is not known yet is passed as -1, whatever its arrays hold."""
    a = random_model(1)
    users, items = pairs_with_cold_ids(a, 2)
    want = predict(a, users, items, clip=(0.5, 5.0))
    parts = Parts(a.mu, a.user_bias.copy(), a.user_factors.copy(), a.item_bias.copy(), a.item_factors.copy())
    got = predict_rows(parts, a.user_rows(users), a.item_rows(items), clip=(0.5, 5.0))
    assert np.array_equal(got, want)
    # -1 means unknown: neither the bias nor the factors of any row are read for it
    assert np.array_equal(predict_rows(parts, [-1, -1], [0, -1]), [a.mu + a.item_bias[0], a.mu])


@pytest.mark.unit
def test_serving_and_gate_use_the_one_rule_bit_for_bit() -> None:
    """``Recommender.predict`` / ``predict_many`` / ``recommend``'s scores and the gate's RMSE are
    ``predict`` itself (no second formula that could drift by a rounding)."""
    a = random_model(3, rank=8, scale=1.0)  # large factors: many predictions clipped at either end
    users, items = pairs_with_cold_ids(a, 4)
    rec = Recommender(a, seen={int(a.user_ids[0]): a.item_ids[:7]}, scale=RatingScale(0.5, 5.0, 0.5))
    want = predict(a, users, items, clip=(0.5, 5.0))
    assert int((want == 5.0).sum()) > 0 and int((want == 0.5).sum()) > 0
    assert np.array_equal(rec.predict_many(users, items), want)
    assert [rec.predict(int(u), int(i)) for u, i in zip(users, items, strict=True)] == want.tolist()
    for user in [*a.user_ids[:10].tolist(), 123456]:  # and one cold user
        got = rec.recommend(int(user), k=12)
        assert len(got) == 12
        assert [s for _, s in got] == [rec.predict(int(user), i) for i, _ in got]
    ratings = np.random.default_rng(5).choice(np.arange(1, 11) / 2, len(users))
    rows = {"user": users, "item": items, "rating": ratings}
    for factors in (True, False):
        err = ratings - predict(a, users, items, clip=(0.5, 5.0), factors=factors)
        assert rmse(a, rows, 0.5, 5.0, factors=factors) == math.sqrt(float(np.mean(err * err)))
    assert rmse(a, rows, 0.5, 5.0, factors=False) != rmse(a, rows, 0.5, 5.0)


# --- the Spark expression -------------------------------------------------------------------------------------
def _factor_model(spark, a: ModelArrays, zero_factors: bool = False):
    from streamrec.spark.model import FactorModel
    from streamrec.spark.schema import FACTOR_SCHEMA

    def table(ids, bias, factors):
        rows = [
            (int(x), float(b), 1, [0.0 if zero_factors else float(v) for v in f])
            for x, b, f in zip(ids, bias, factors, strict=True)
        ]
        return spark.createDataFrame(rows, FACTOR_SCHEMA)

    return FactorModel(
        mu=a.mu,
        n=100,
        rank=a.rank,
        users=table(a.user_ids, a.user_bias, a.user_factors),
        items=table(a.item_ids, a.item_bias, a.item_factors),
    )


@pytest.mark.spark
def test_spark_evaluate_is_the_same_formula_as_numpy_predict(spark) -> None:
    from streamrec.spark import evaluate
    from streamrec.spark.model import to_arrays
    from streamrec.spark.schema import RATINGS_SCHEMA

    a = random_model(7, rank=6, scale=0.9)
    fm = _factor_model(spark, a)
    arrays = to_arrays(fm)  # the numpy side reads the model Spark holds
    users, items = pairs_with_cold_ids(arrays, 8, n=600)
    pdf = pd.DataFrame({"user": users, "item": items, "rating": 3.0, "ts": np.arange(len(users))})
    ratings = spark.createDataFrame(pdf, RATINGS_SCHEMA)
    for scale in (RatingScale(0.5, 5.0, 0.5), RatingScale(1.0, 5.0, 1.0), RatingScale(-50.0, 50.0, 0.5)):
        got = evaluate.predict(fm, ratings, scale).select("ts", "prediction", "fallback").toPandas()
        got = got.sort_values("ts")
        want = predict(arrays, users, items, clip=(scale.low, scale.high))
        np.testing.assert_allclose(got["prediction"].to_numpy(), want, rtol=0, atol=1e-9)
        if scale.low < 0:  # unclipped: the rule itself, not just the clip, agrees
            assert want.min() < 0.5 or want.max() > 5.0
        else:
            assert int((want == scale.high).sum()) > 0 and int((want == scale.low).sum()) > 0
    # every fallback occurred, and Spark names the same ones numpy applied
    ku, ki = arrays.user_rows(users) >= 0, arrays.item_rows(items) >= 0
    expected = np.where(
        ku & ki, "none", np.where(ki, "user_unknown", np.where(ku, "item_unknown", "both_unknown"))
    )
    assert got["fallback"].tolist() == expected.tolist()
    assert set(expected) == set(evaluate.FALLBACKS)
    # the gate's biases-only baseline is the Spark rule on the model with its factors zeroed
    zeroed = evaluate.predict(_factor_model(spark, a, zero_factors=True), ratings).select("ts", "prediction")
    zeroed = zeroed.toPandas().sort_values("ts")["prediction"].to_numpy()
    np.testing.assert_allclose(
        zeroed, predict(arrays, users, items, clip=(0.5, 5.0), factors=False), atol=1e-9
    )
    # the whole metrics dict: what the gate records for an update's candidate (numpy) is what the evaluate job
    # records (Spark) on the same rows, fallback counts included
    from streamrec.pipeline.tasks import error_metrics

    rated = np.random.default_rng(9).choice(np.arange(1, 11) / 2, len(users))
    pdf = pd.DataFrame({"user": users, "item": items, "rating": rated, "ts": np.arange(len(users))})
    spark_side = evaluate.rmse(fm, spark.createDataFrame(pdf, RATINGS_SCHEMA))
    rows = {"user": users, "item": items, "rating": rated, "ts": np.full(len(users), np.nan)}
    numpy_side = error_metrics(arrays, rows, 0.5, 5.0)
    assert numpy_side["n"] == spark_side["n"] == len(users)
    assert numpy_side["fallbacks"] == spark_side["fallbacks"] and min(numpy_side["fallbacks"].values()) > 0
    assert numpy_side["rmse"] == pytest.approx(spark_side["rmse"], rel=0, abs=1e-9)
    assert numpy_side["mae"] == pytest.approx(spark_side["mae"], rel=0, abs=1e-9)


@pytest.mark.spark
def test_prequential_scores_of_the_update_task_are_numpy_predict(spark) -> None:
    """``update.apply_many``'s prequential metrics (computed inside the grouped-map task) are the errors of
    ``predict`` on the model before the partition, cold users and items included."""
    from streamrec.core.params import UpdateParams
    from streamrec.spark import update
    from streamrec.spark.model import to_arrays
    from streamrec.spark.schema import RATINGS_SCHEMA

    a = random_model(11, rank=4)
    fm = _factor_model(spark, a)
    arrays = to_arrays(fm)
    users, items = pairs_with_cold_ids(arrays, 12, n=120)
    r = np.random.default_rng(13).choice(np.arange(1, 11) / 2, len(users))
    pdf = pd.DataFrame({"user": users, "item": items, "rating": r, "ts": np.arange(len(users))})
    _, (metrics,) = update.apply_many(
        fm, [spark.createDataFrame(pdf, RATINGS_SCHEMA)], UpdateParams(passes=1)
    )
    err = r - predict(arrays, users, items, clip=(0.5, 5.0))
    assert metrics["n"] == len(r)
    assert metrics["rmse"] == pytest.approx(math.sqrt(float(np.mean(err * err))), rel=0, abs=1e-12)
    assert metrics["mae"] == pytest.approx(float(np.mean(np.abs(err))), rel=0, abs=1e-12)
    ku, ki = arrays.user_rows(users) >= 0, arrays.item_rows(items) >= 0
    assert metrics["fallbacks"] == {
        "user_unknown": int((~ku & ki).sum()),
        "item_unknown": int((ku & ~ki).sum()),
        "both_unknown": int((~ku & ~ki).sum()),
    }
    assert min(metrics["fallbacks"].values()) > 0

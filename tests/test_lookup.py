"""Predict / recommend without Spark: hand-computed values on a 3-user × 4-item model, fallbacks, exclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.core.arrays import ModelArrays
from streamrec.core.ranking import PLAIN, RankingRule
from streamrec.core.schema import RatingScale
from streamrec.core.seen import SeenItems
from streamrec.pipeline.lookup import Recommender, seen_from_ratings
from streamrec.storage.store import ModelStore

pytestmark = pytest.mark.unit


def tiny() -> ModelArrays:
    """mu 3; users 1, 2, 3; items 10, 20, 30, 40; rank 2 (see the expected values in the tests)."""
    return ModelArrays(
        mu=3.0,
        rank=2,
        user_ids=[1, 2, 3],
        user_bias=[0.5, -0.5, 0.0],
        user_factors=[[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]],
        item_ids=[10, 20, 30, 40],
        item_bias=[0.2, -0.3, 0.0, 0.1],
        item_factors=[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [-1.0, 1.0]],
    )


# r̂ = mu + b_u + b_i + p_u·q_i, by hand:
EXPECTED = {
    (1, 10): 3 + 0.5 + 0.2 + 1.0,  # 4.7
    (1, 20): 3 + 0.5 - 0.3 + 0.0,  # 3.2
    (1, 30): 3 + 0.5 + 0.0 + 0.5,  # 4.0
    (1, 40): 3 + 0.5 + 0.1 - 1.0,  # 2.6
    (2, 10): 3 - 0.5 + 0.2 + 0.0,  # 2.7
    (2, 20): 3 - 0.5 - 0.3 + 2.0,  # 4.2
    (2, 30): 3 - 0.5 + 0.0 + 0.5,  # 3.0
    (2, 40): 3 - 0.5 + 0.1 + 1.0,  # 3.6
    (3, 10): 3 + 0.0 + 0.2 + 1.0,  # 4.2
    (3, 20): 5.0,  # 3 + 0 - 0.3 + 4 = 6.7, clipped to the top of the scale
    (3, 30): 3 + 0.0 + 0.0 + 1.5,  # 4.5
    (3, 40): 3 + 0.0 + 0.1 + 1.0,  # 4.1
}


@pytest.mark.parametrize(("user", "item"), sorted(EXPECTED))
def test_predict_matches_hand_computed_values(user: int, item: int) -> None:
    assert Recommender(tiny()).predict(user, item) == pytest.approx(EXPECTED[(user, item)], abs=1e-12)


def test_predict_fallbacks_and_clipping() -> None:
    rec = Recommender(tiny())
    assert rec.predict(99, 10) == pytest.approx(3.2)  # unknown user: mu + b_i
    assert rec.predict(1, 99) == pytest.approx(3.5)  # unknown item: mu + b_u
    assert rec.predict(98, 99) == 3.0  # both unknown: mu
    narrow = Recommender(tiny(), scale=(3.0, 4.0))
    assert narrow.predict(1, 40) == 3.0 and narrow.predict(1, 10) == 4.0
    assert Recommender(tiny(), scale=RatingScale(1.0, 5.0, 1.0)).predict(3, 20) == 5.0
    assert Recommender(tiny(), scale=None).predict(3, 20) == pytest.approx(6.7)
    assert isinstance(rec.predict(1, 10), float)


def test_predict_many_equals_predict() -> None:
    rec = Recommender(tiny())
    users = [1, 2, 3, 99, 1, 98]
    items = [10, 20, 30, 40, 99, 97]
    expected = [rec.predict(u, i) for u, i in zip(users, items, strict=True)]
    np.testing.assert_allclose(rec.predict_many(users, items), expected, rtol=0, atol=1e-12)


def test_recommend_ranks_unseen_items() -> None:
    rec = Recommender(tiny(), seen={1: np.array([10]), 3: np.array([], dtype=np.int64)})
    # user 1 rated item 10; k larger than the 3 candidates returns all of them, best first
    assert _round(rec.recommend(1, k=10)) == [(30, 4.0), (20, 3.2), (40, 2.6)]
    # ranked by the raw score: item 20 (6.7, shown clipped to 5.0) beats item 30 (4.5)
    assert _round(rec.recommend(3, k=2)) == [(20, 5.0), (30, 4.5)]
    assert _round(rec.recommend(2)) == [(20, 4.2), (40, 3.6), (30, 3.0), (10, 2.7)]
    assert rec.recommend(2, k=0) == []
    with pytest.raises(ValueError):
        rec.recommend(2, k=-1)


def test_seen_items_are_excluded_and_unknown_seen_items_ignored() -> None:
    rec = Recommender(tiny(), seen={2: np.array([20, 40, 777]), 1: np.array([10, 20, 30, 40])})
    assert [i for i, _ in rec.recommend(2, k=10)] == [30, 10]
    assert rec.recommend(1, k=5) == []  # everything rated


def test_cold_user_gets_top_items_by_bias() -> None:
    rec = Recommender(tiny(), seen={99: np.array([10])})
    assert _round(rec.recommend(1234, k=3)) == [(10, 3.2), (40, 3.1), (30, 3.0)]
    assert _round(rec.recommend(99, k=10)) == [(40, 3.1), (30, 3.0), (20, 2.7)]  # its seen items excluded


def test_ties_are_broken_by_item_id() -> None:
    ids = [50, 20, 40, 10, 30]
    arrays = ModelArrays(
        mu=3.0,
        rank=1,
        user_ids=[1],
        user_bias=[0.0],
        user_factors=[[1.0]],
        item_ids=ids,
        item_bias=[0.5, 0.5, 0.1, 0.5, 0.5],
        item_factors=[[0.0]] * 5,
    )
    rec = Recommender(arrays)
    # four items tie at 3.5: the k-th place is decided by id, never by memory order
    assert [i for i, _ in rec.recommend(1, k=2)] == [10, 20]
    assert [i for i, _ in rec.recommend(1, k=4)] == [10, 20, 30, 50]
    assert [i for i, _ in rec.recommend(777, k=3)] == [10, 20, 30]  # cold user, same rule


def test_nan_scores_are_never_recommended() -> None:
    arrays = tiny()
    arrays.item_factors[1, 0] = np.nan  # item 20: NaN for every known user
    arrays.item_bias[0] = np.nan  # item 10: NaN for everyone
    rec = Recommender(arrays)
    assert [i for i, _ in rec.recommend(3, k=1)] == [30]
    assert [i for i, _ in rec.recommend(3, k=10)] == [30, 40]
    assert [i for i, _ in rec.recommend(2, k=3)] == [40, 30]
    assert [i for i, _ in rec.recommend(999, k=10)] == [40, 30, 20]  # cold: by bias, NaN bias excluded


def test_recommend_matches_brute_force_on_a_random_model() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, rank = 30, 300, 6
    arrays = ModelArrays(
        mu=3.4,
        rank=rank,
        user_ids=np.arange(1, n_users + 1),
        user_bias=rng.normal(0, 0.3, n_users),
        user_factors=rng.normal(0, 0.5, (n_users, rank)),
        item_ids=rng.permutation(np.arange(1000, 1000 + n_items)),
        item_bias=rng.normal(0, 0.3, n_items),
        item_factors=rng.normal(0, 0.5, (n_items, rank)),
    )
    seen = {
        u: rng.choice(arrays.item_ids, size=rng.integers(0, 50), replace=False) for u in range(1, n_users + 1)
    }
    rec = Recommender(arrays, seen=seen, scale=None)
    for user in range(1, n_users + 1):
        row = arrays.user_row(user)
        raw = (
            arrays.mu
            + arrays.user_bias[row]
            + arrays.item_bias
            + arrays.item_factors @ arrays.user_factors[row]
        )
        candidates = [
            (float(s), int(i)) for i, s in zip(arrays.item_ids, raw, strict=True) if i not in set(seen[user])
        ]
        expected = [i for _, i in sorted(candidates, key=lambda t: (-t[0], t[1]))[:15]]
        got = rec.recommend(user, k=15)
        assert [i for i, _ in got] == expected
        np.testing.assert_allclose([s for _, s in got], [rec.predict(user, i) for i in expected], atol=1e-12)


def test_seen_from_ratings() -> None:
    ratings = pd.DataFrame({"user": [2, 1, 2, 1, 2], "item": [30, 10, 10, 10, 20], "rating": [4.0] * 5})
    seen = seen_from_ratings(ratings)
    assert sorted(seen) == [1, 2]
    np.testing.assert_array_equal(seen[1], [10])
    np.testing.assert_array_equal(seen[2], [10, 20, 30])
    assert seen_from_ratings(ratings.iloc[:0]) == {}


def test_from_store(tmp_path) -> None:
    store = ModelStore(tmp_path)
    version = store.write_arrays(tiny(), {"kind": "bootstrap"})
    store.publish(version)
    ratings = pd.DataFrame({"user": [1, 1], "item": [10, 30]})
    rec = Recommender.from_store(str(tmp_path), seen_ratings=ratings)
    assert rec.version == version
    assert _round(rec.recommend(1)) == [(20, 3.2), (40, 2.6)]
    assert Recommender.from_store(store, version=version).predict(2, 20) == pytest.approx(4.2)


def _round(recs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(i, round(s, 9)) for i, s in recs]


# --- the ranking rule (streamrec.core.ranking) and the stored seen items ------------------------------------------
def counted() -> ModelArrays:
    """tiny() with rating counts: items 10, 20, 30, 40 have 1, 50, 9, 200 ratings."""
    a = tiny()
    a.item_n = np.array([1, 50, 9, 200])
    return a


def test_min_ratings_leaves_rarely_rated_items_out() -> None:
    rec = Recommender(counted(), rule=RankingRule(min_ratings=10))
    # user 1 by r̂: 10 (4.7), 30 (4.0), 20 (3.2), 40 (2.6); 10 and 30 have fewer than 10 ratings
    assert _round(rec.recommend(1, k=10)) == [(20, 3.2), (40, 2.6)]
    assert [i for i, _ in rec.recommend(1234, k=10)] == [
        40,
        20,
    ]  # cold users too: by b_i among the candidates


def test_shrink_and_popularity_by_hand() -> None:
    # user 2: b_i + w_i p·q with w_i = n_i / (n_i + 9): item 10: 0.2 + 0.1·0 = 0.2; 20: -0.3 + (50/59)·2 = 1.395;
    # 30: 0 + 0.5·0.5 = 0.25; 40: 0.1 + (200/209)·1 = 1.057. Scores shown are r̂, unchanged.
    rec = Recommender(counted(), rule=RankingRule(shrink=9.0))
    assert _round(rec.recommend(2, k=4)) == [(20, 4.2), (40, 3.6), (30, 3.0), (10, 2.7)]
    rec = Recommender(counted(), rule=RankingRule(shrink=1e6))  # w ≈ 0 for all: by b_i
    assert [i for i, _ in rec.recommend(3, k=4)] == [10, 40, 30, 20]
    # popularity 0.5, user 1: b_i + p·q + 0.5 ln(1 + n_i): item 10: 0.2 + 1 + 0.5 ln 2 = 1.547;
    # 20: -0.3 + 0 + 0.5 ln 51 = 1.666; 30: 0 + 0.5 + 0.5 ln 10 = 1.651; 40: 0.1 - 1 + 0.5 ln 201 = 1.752
    rec = Recommender(counted(), rule=RankingRule(popularity=0.5))
    assert [i for i, _ in rec.recommend(1, k=4)] == [40, 20, 30, 10]
    assert rec.predict(1, 40) == pytest.approx(2.6)  # prediction itself is unchanged


def test_the_rule_comes_from_the_manifest() -> None:
    a = counted()
    a.manifest = {"version": "v1", "ranking": {"min_ratings": 10, "shrink": 0.0, "popularity": 0.0, "k": 5}}
    rec = Recommender(a)
    assert rec.rule == RankingRule(min_ratings=10, k=5)
    assert [i for i, _ in rec.recommend(1)] == [20, 40]
    assert Recommender(tiny()).rule == PLAIN  # a version older than the rule: ranked as it was


def test_seen_items_mapping_and_top_rated() -> None:
    seen = SeenItems.from_ratings(
        [5, 5, 5, 2, 5], [30, 10, 20, 10, 30], [4.0, 5.0, 5.0, 1.0, 2.0], ts=[1, 1, 1, 1, 9]
    )
    assert list(seen) == [2, 5] and len(seen) == 2 and 5 in seen and 6 not in seen
    np.testing.assert_array_equal(seen[5], [10, 20, 30])
    assert seen.get(6) is None
    assert seen.rated(5)[1].tolist() == [5.0, 5.0, 2.0]  # item 30: the later rating (ts 9)
    # ties on the rating: the more widely rated item first, then the smaller id
    assert seen.top_rated(5, 2, popularity=lambda ids: np.where(ids == 20, 7, 1)) == [(20, 5.0), (10, 5.0)]
    assert seen.top_rated(5, 5) == [(10, 5.0), (20, 5.0), (30, 2.0)]
    assert SeenItems.from_table(seen.to_table()).rated(5)[1].tolist() == [5.0, 5.0, 2.0]
    rec = Recommender(tiny(), seen=seen)
    assert [i for i, _ in rec.recommend(5, k=10)] == [40]
    # rows in any order (several Parquet files): sorted on construction; a user twice is refused
    unsorted = SeenItems([9, 2, 5], [0, 2, 3, 6], [1, 2, 3, 4, 5, 6], [0.5, 1, 1.5, 2, 2.5, 3])
    assert (
        list(unsorted) == [2, 5, 9]
        and unsorted[9].tolist() == [1, 2]
        and unsorted.rated(5)[1].tolist() == [2, 2.5, 3]
    )
    with pytest.raises(ValueError, match="user 2 has more than one row"):
        SeenItems([2, 1, 2], [0, 1, 2, 3], [1, 2, 3], [1.0, 1.0, 1.0])


def test_from_store_excludes_the_versions_seen_items(tmp_path) -> None:
    store = ModelStore(tmp_path)
    seen = SeenItems.from_ratings([1, 1], [10, 30], [5.0, 4.0])
    version = store.write_arrays(tiny(), {"kind": "bootstrap"}, seen=seen)
    rec = Recommender.from_store(store, version)
    assert _round(rec.recommend(1)) == [(20, 3.2), (40, 2.6)]
    assert _round(rec.recommend(2, k=1)) == [(20, 4.2)]

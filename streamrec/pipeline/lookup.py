"""Predict and recommend from a stored model version with numpy: no Spark, no JVM, milliseconds per call.

Prediction rule (biased matrix factorisation)::

    r̂(u, i) = mu + b_u + b_i + p_u · q_i        clipped to the rating scale

with fallbacks: an unknown user gives ``mu + b_i``, an unknown item ``mu + b_u``, both unknown ``mu``.
``recommend`` ranks the items the user has not rated by the version's ranking rule (``streamrec.core.ranking``:
the rule recorded in its manifest; a version without one ranks every unseen item by its raw, unclipped score),
ties broken by item id; a cold (unknown) user gets the items with the best ``mu + b_i`` (plus the rule's
popularity term), ties broken by item id. An item whose score is NaN (a broken model) is never recommended. The
items "the user has rated" are the version's seen table (``ModelStore.load_seen``) when loaded from the store,
so a lookup never recommends an item the user rated; the exported recommendations of a version
(``streamrec.spark.recommend``) are the same items with the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.core.arrays import ModelArrays, predict_rows
from streamrec.core.ranking import Ranker, RankingRule
from streamrec.storage.store import ModelStore

if TYPE_CHECKING:
    import pandas as pd

    from streamrec.storage.bucket import Bucket

# Column names of the ratings contract (streamrec.core.schema.USER / ITEM; not imported here so that serving code does
# not import pyspark).
_USER, _ITEM = "user", "item"


def seen_from_ratings(ratings: pd.DataFrame) -> dict[int, np.ndarray]:
    """Map each user of a ratings DataFrame (columns ``user``, ``item``) to the sorted unique items it rated."""
    users = np.asarray(ratings[_USER].to_numpy(), dtype=np.int64)
    items = np.asarray(ratings[_ITEM].to_numpy(), dtype=np.int64)
    if len(users) == 0:
        return {}
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])  # drop duplicate (user, item) pairs
    users, items = users[keep], items[keep]
    uniq, starts = np.unique(users, return_index=True)
    return {int(u): chunk for u, chunk in zip(uniq, np.split(items, starts[1:]), strict=True)}


class Recommender:
    """Scores one model version held in memory.

    ``seen`` maps a user id to the item ids it already rated (excluded from its recommendations; e.g. a
    ``streamrec.core.seen.SeenItems``); ``scale`` is ``(low, high)`` (or any object with ``low`` / ``high``, e.g.
    ``schema.RatingScale``) to clip predictions to, or None for no clipping. ``rule``: the ranking rule (default:
    the one the version's manifest records, ``RankingRule.of_manifest``).
    """

    def __init__(
        self,
        arrays: ModelArrays,
        seen: Mapping[int, np.ndarray] | None = None,
        scale: Any = (0.5, 5.0),
        rule: RankingRule | None = None,
    ) -> None:
        self.arrays = arrays
        self.seen: Mapping[int, np.ndarray] = seen if seen is not None else {}
        if scale is None:
            self.low, self.high = -np.inf, np.inf
        elif hasattr(scale, "low") and hasattr(scale, "high"):
            self.low, self.high = float(scale.low), float(scale.high)
        else:
            self.low, self.high = (float(x) for x in scale)
        if not self.low <= self.high:
            raise ValueError(f"invalid scale {scale!r}")
        self.mu = float(arrays.mu)
        self._item_ids = arrays.item_ids
        self._item_bias = arrays.item_bias
        self._item_factors = np.ascontiguousarray(arrays.item_factors, dtype=np.float64)
        self._user_factors = arrays.user_factors
        self._user_bias = arrays.user_bias
        self.rule = rule if rule is not None else RankingRule.of_manifest(arrays.manifest)
        self.ranker = Ranker.of(arrays, self.rule, (self.low, self.high))

    @classmethod
    def from_store(
        cls,
        root_or_store: str | Bucket | ModelStore,
        version: str | None = None,
        seen_ratings: pd.DataFrame | None = None,
        scale: Any = (0.5, 5.0),
    ) -> Recommender:
        """Load a version (None = the current one) with ``ModelStore.load_arrays``; the items to exclude per user
        are ``seen_ratings`` (columns ``user``, ``item``) when given, else the version's seen table (none when it
        has no such table)."""
        store = root_or_store if isinstance(root_or_store, ModelStore) else ModelStore(root_or_store)
        arrays = store.load_arrays(version)
        if seen_ratings is not None:
            seen: Mapping[int, np.ndarray] | None = seen_from_ratings(seen_ratings)
        else:
            seen = store.load_seen(arrays.version)
        return cls(arrays, seen=seen, scale=scale)

    @property
    def version(self) -> str | None:
        """The model version served (from its manifest)."""
        return self.arrays.version

    def _predict_rows(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return predict_rows(self.arrays, u, i, clip=(self.low, self.high))

    def predict(self, user: int, item: int) -> float:
        """``mu + b_u + b_i + p_u·q_i`` clipped to the scale, with the fallbacks of the module docstring
        (:func:`streamrec.core.arrays.predict`)."""
        u = np.array([self.arrays.user_row(user)], dtype=np.int64)
        i = np.array([self.arrays.item_row(item)], dtype=np.int64)
        return float(self._predict_rows(u, i)[0])

    def predict_many(self, users: Any, items: Any) -> np.ndarray:
        """Vectorised :meth:`predict` over aligned arrays of user and item ids."""
        return self._predict_rows(self.arrays.user_rows(users), self.arrays.item_rows(items))

    def _seen_rows(self, user: int) -> np.ndarray:
        items = self.seen.get(user)
        if items is None or len(items) == 0:
            return np.empty(0, dtype=np.int64)
        rows = self.arrays.item_rows(np.asarray(items, dtype=np.int64))
        return np.unique(rows[rows >= 0])

    def recommend(self, user: int, k: int = 10) -> list[tuple[int, float]]:
        """Top-``k`` ``(item, predicted score)`` among the items ``user`` has not rated, best first.

        Fewer than ``k`` when fewer candidates exist. Ordered by the ranking rule (``streamrec.core.ranking``;
        without one, the unclipped score), ties broken by item id; the returned score is the prediction, clipped
        as ``predict``; a cold user is ranked by ``mu + b_i`` (plus the rule's popularity term).
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        u = self.arrays.user_row(user)
        if u < 0:
            rows, scores = self.ranker.top(None, None, self._seen_rows(user), k)
        else:
            rows, scores = self.ranker.top(
                float(self.arrays.user_bias[u]), self.arrays.user_factors[u], self._seen_rows(user), k
            )
        return [(int(i), float(s)) for i, s in zip(self._item_ids[rows], scores, strict=True)]

r"""Which items to recommend, in which order: the ranking rule, shared by serving and the exported top-K.

A model version predicts ratings (``r̂ = mu + b_u + b_i + p_u · q_i``, clipped to the scale). Ranking the whole
catalogue by r̂ alone puts obscure items first: an item with one or two ratings has a factor vector fitted to
almost nothing, and its dot product with a user's vector can be large by chance (on ml-latest-small, a heavy
user's top 10 were items with 1-4 ratings each). The ranking rule (:class:`RankingRule`) says which items are
candidates and what score orders them::

    candidates(u) = { i : n_i >= min_ratings } \ seen(u)
    s(u, i)       = b_i + w_i · p_u · q_i + popularity · ln(1 + n_i)
    w_i           = n_i / (n_i + shrink)            (w_i = 1 when shrink = 0)

``n_i`` is the item's rating count in the model (the ratings it absorbed). ``min_ratings`` leaves items with too
few ratings out; ``shrink`` pulls an item's personal part toward the biases-only score ``mu + b_u + b_i`` when
the item has few ratings (a confidence weight); ``popularity`` adds how many people rated the item: r̂ says how
much a user would like an item *if* they watched it, not how likely they are to want it, and in every offline
measure (and in what users accept) widely rated items are the likelier choice. ``mu + b_u`` is the same for
every item of a user, so it does not change the order and is left out of ``s``. Ties are broken by item id; NaN
scores are never recommended. A cold user (not in the model) is ranked by ``s`` without the dot product
(``b_i + popularity · ln(1 + n_i)``) among the same candidates.

The score *returned* with each item is the model's prediction r̂(u, i) clipped to the scale (what the user would
rate it), evaluated as ``((mu + b_u) + b_i) + p_u · q_i`` (``numpy.einsum("ij,ij->i")`` for the dot product),
the order of ``streamrec.core.arrays``' prediction rule: the review page, ``Recommender.recommend`` and the
exported recommendations of a version (``streamrec.spark.recommend``) all call :meth:`Ranker.top`, so they
return the same items in the same order with the same scores, bit for bit.

The default rule (:data:`DEFAULT`) was chosen by ``bench/ranking.py`` on a validation split of the training
part of ml-latest-small (never the test part); see the README's ranking section for the figures. A version
whose manifest has no ``ranking`` entry (written before the rule existed) is ranked with :data:`PLAIN`
(every unseen item, by r̂), as it was then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamrec.core.arrays import Parts, predict_rows


@dataclass(frozen=True)
class RankingRule:
    """``min_ratings``: an item needs at least this many ratings in the model to be recommended.
    ``shrink``: confidence weight ``n_i / (n_i + shrink)`` of the item's dot product (0: none).
    ``popularity``: weight of ``ln(1 + n_i)`` in the ranking score (0: none).
    ``k``: how many items the exported recommendations keep per user."""

    min_ratings: int = 0
    shrink: float = 0.0
    popularity: float = 0.0
    k: int = 10

    def __post_init__(self) -> None:
        if min(self.min_ratings, self.shrink, self.popularity, self.k) < 0:
            raise ValueError(f"min_ratings, shrink, popularity and k must be >= 0: {self}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> RankingRule:
        """From a manifest's ``ranking`` entry; None or empty (a version older than the rule): :data:`PLAIN`."""
        if not d:
            return PLAIN
        return cls(
            int(d.get("min_ratings", 0)),
            float(d.get("shrink", 0.0)),
            float(d.get("popularity", 0.0)),
            int(d.get("k", 10)),
        )

    @classmethod
    def of_manifest(cls, manifest: dict | None) -> RankingRule:
        return cls.from_dict((manifest or {}).get("ranking"))


PLAIN = RankingRule(min_ratings=0, shrink=0.0, popularity=0.0)
"""Every unseen item, ranked by the model's prediction: versions written before the ranking rule existed."""

DEFAULT = RankingRule(min_ratings=0, shrink=0.0, popularity=2.0)
"""The rule new versions record, chosen by ``bench/ranking.py`` on validation splits of the *training* parts only
(grid min_ratings {0, 10, 50} x shrink {0, 25, 100} x popularity {0, 0.25, 0.5, 1, 2, 4}, NDCG@10): the rule whose
worse ratio to the best rule of each data set is highest, over ml-latest-small and the generated data of the same
shape. It is within 1 % of the best on both (ml-latest-small 0.1151, best 0.1162 at shrink 25, popularity 0.5;
generated 0.1724, the best there), where :data:`PLAIN` gets 0.0330 and 0.0358. ``min_ratings`` made no
difference once popularity counts, so it stays 0."""


class Ranker:
    """The ranking rule applied to one model's item side, prepared once (candidate mask, weights, cold order).

    ``mu``; ``item_ids`` sorted ascending with their ``item_bias``, ``item_factors`` (n × rank) and ``item_n``;
    ``clip`` = ``(low, high)`` of the returned scores. Use :meth:`top` per user.
    """

    def __init__(
        self,
        mu: float,
        item_ids: np.ndarray,
        item_bias: np.ndarray,
        item_factors: np.ndarray,
        item_n: np.ndarray | None,
        rule: RankingRule = PLAIN,
        clip: tuple[float, float] = (-np.inf, np.inf),
    ) -> None:
        self.mu = float(mu)
        self.rule = rule
        self.low, self.high = float(clip[0]), float(clip[1])
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_bias = np.asarray(item_bias, dtype=np.float64)
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float64)
        n = np.zeros(len(self.item_ids), np.int64) if item_n is None else np.asarray(item_n, np.int64)
        self.item_n = n
        # excluded by the rule, for everyone: too few ratings
        self.blocked = np.flatnonzero(n < rule.min_ratings) if rule.min_ratings > 0 else np.empty(0, np.int64)
        self.weights = n / (n + rule.shrink) if rule.shrink > 0 else None
        # the item's part of the ranking score without the dot product: b_i (+ popularity · ln(1 + n_i))
        self.item_score = (
            self.item_bias + rule.popularity * np.log1p(n) if rule.popularity > 0 else self.item_bias
        )
        # Cold-start order: best item score first, ties by item id (lexsort: last key is the primary one).
        cold = np.lexsort((self.item_ids, -self.item_score))
        cold = cold[~np.isnan(self.item_score[cold])]
        if len(self.blocked):
            cold = cold[~np.isin(cold, self.blocked)]
        self.cold_order = cold

    @classmethod
    def of(
        cls, arrays: Any, rule: RankingRule = PLAIN, clip: tuple[float, float] = (-np.inf, np.inf)
    ) -> Ranker:
        """From a ``ModelArrays`` (or anything with its item attributes and ``mu``)."""
        return cls(
            arrays.mu, arrays.item_ids, arrays.item_bias, arrays.item_factors, arrays.item_n, rule, clip
        )

    def rows_of(self, item_ids: object) -> np.ndarray:
        """Sorted unique rows of the known ones among ``item_ids`` (None or empty: none)."""
        if item_ids is None:
            return np.empty(0, np.int64)
        q = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if not len(q) or not len(self.item_ids):
            return np.empty(0, np.int64)
        pos = np.minimum(np.searchsorted(self.item_ids, q), len(self.item_ids) - 1)
        return np.unique(pos[self.item_ids[pos] == q])

    def n_candidates(self, seen_rows: np.ndarray) -> int:
        """How many items the rule leaves a user who rated the items at ``seen_rows`` (sorted, unique)."""
        if not len(self.blocked):
            return len(self.item_ids) - len(seen_rows)
        return len(self.item_ids) - len(np.union1d(self.blocked, seen_rows))

    def top(
        self,
        user_bias: float | None,
        user_factors: np.ndarray | None,
        seen_rows: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, clipped predicted ratings) of the best ``k`` candidates, best first.

        ``user_bias`` / ``user_factors``: the user's ``b_u`` and ``p_u``; None for a cold user. ``seen_rows``:
        the sorted unique rows of the items the user rated (excluded)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        k = min(k, self.n_candidates(seen_rows))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        if user_factors is None:
            return self._cold(seen_rows, k)
        p_u = np.asarray(user_factors, dtype=np.float64)
        # einsum, not ``@``: a 60k×20 gemv is too small for a BLAS thread pool, whose threads stall for
        # milliseconds when the cores are busy (measured: p50 8 ms under load vs 0.8 ms for this loop).
        raw = np.einsum("ij,j->i", self.item_factors, p_u)
        if self.weights is not None:
            raw *= self.weights
        raw += self.item_score
        raw[seen_rows] = -np.inf
        raw[self.blocked] = -np.inf
        top = top_candidates(raw, k)
        rows = top[np.lexsort((self.item_ids[top], -raw[top]))[:k]]
        return rows, self.predicted(user_bias, p_u, rows)

    def predicted(self, user_bias: float | None, p_u: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """r̂ of the items at ``rows`` for one user, clipped (cold: ``mu + b_i``): :func:`streamrec.core.arrays.predict_rows`,
        the one prediction rule, on this user's row."""
        rank = self.item_factors.shape[1] if self.item_factors.ndim == 2 else 0
        user = Parts(
            self.mu,
            np.array([0.0 if user_bias is None else float(user_bias)]),
            np.zeros((1, rank)) if p_u is None else np.asarray(p_u, np.float64).reshape(1, -1),
            self.item_bias,
            self.item_factors,
        )
        user_rows = np.full(len(rows), -1 if p_u is None else 0, dtype=np.int64)
        return predict_rows(user, user_rows, np.asarray(rows, dtype=np.int64), clip=(self.low, self.high))

    def _cold(self, seen_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        head = self.cold_order[: k + len(seen_rows)]
        if len(seen_rows):
            head = head[~np.isin(head, seen_rows)]
        rows = head[:k]
        return rows, self.predicted(None, None, rows)


def top_candidates(raw: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` best scores plus every row tied with the k-th (so the caller's id tie-break is exact).

    ``-inf`` marks excluded rows and is never returned; NaN scores are demoted to ``-inf`` (never recommended).
    """
    n = len(raw)
    if k >= n:
        return np.flatnonzero(raw > -np.inf)  # NaN > -inf is False
    top = np.argpartition(raw, n - k)[n - k :]
    threshold = raw[top].min()
    if np.isnan(threshold):  # argpartition sorts NaN as the largest value: demote NaN scores and redo
        raw[np.isnan(raw)] = -np.inf
        return top_candidates(raw, k)
    mask = raw >= threshold
    if threshold == -np.inf:  # fewer finite candidates than k
        mask &= raw > -np.inf
    return np.flatnonzero(mask)

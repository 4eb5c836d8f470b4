"""Seeded generator of MovieLens-shaped ratings from a planted biased low-rank model.

The planted model (all draws from ``numpy.random`` seeded by ``SynthConfig.seed``)::

    r(u, i) = clip_round(mu + b_u + b_i + p_u . q_i + e),   e ~ N(0, sigma)
    b_u ~ N(0, user_bias_sd),  b_i ~ N(0, item_bias_sd),  p_u, q_i ~ N(0, factor_sd) ** rank

``clip_round`` rounds to the nearest point of the scale grid (``low + k * step``) and clips to ``[low, high]``.
``factor_sd`` defaults to ``sqrt(0.5 / sqrt(rank))`` so that the interaction ``p_u . q_i`` has sd 0.5.

The shape of the data follows MovieLens:

* item popularity is a power law: the item of popularity rank ``k`` is drawn with weight ``k ** -a``
  (``a = popularity_exponent``; ranks are a random permutation of the item ids);
* user activity is lognormal (``activity_sigma``), at least ``min_user_ratings`` ratings per user when
  ``n_ratings`` allows it, at most half of the items; the counts add up to exactly ``n_ratings``;
* each user arrives at a time uniform in ``[start_ts, end_ts]`` and rates within a lognormal window after it
  (median ``window_days``), front-loaded (``arrival + window * U**2``), so later periods hold many new users;
* each (user, item) pair occurs at most once: a user's items are drawn by popularity without replacement.

Generation is vectorised with numpy, one unit of ``UNIT_USERS`` consecutive users at a time, each unit with
its own seeded stream (``SeedSequence([seed, 1, unit])``): the output depends only on the config, never on
the memory settings. :func:`write_dataset` never holds all ratings: each unit's ratings are spilled by time
window to binary files, then each window is sorted by ``(ts, user, item)`` and streamed to the output files,
so a 20M-rating data set needs memory for one unit and one window only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from streamrec.core.schema import HALF_STAR, RatingScale

__all__ = ["SynthConfig", "generate_frame", "Planted", "units", "unique", "sorted_order", "UNIT_USERS"]

UNIT_USERS = 1024  # users per random stream; part of the data definition (changing it changes the data)
_DAY = 86_400
CSV_COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic data set (same config => byte-identical output)."""

    n_users: int = 600
    n_items: int = 2000
    n_ratings: int = 50_000
    rank: int = 8
    mu: float = 3.5
    sigma: float = 0.5
    user_bias_sd: float = 0.4
    item_bias_sd: float = 0.5
    factor_sd: float | None = None  # None: sqrt(0.5 / sqrt(rank)), i.e. interaction sd 0.5
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.2
    min_user_ratings: int = 5
    window_days: float = 60.0
    start_ts: int = 828_000_000
    end_ts: int = 1_540_000_000
    scale: RatingScale = field(default=HALF_STAR)
    seed: int = 42

    def __post_init__(self) -> None:
        if min(self.n_users, self.n_items, self.rank) < 1 or self.n_ratings < 0:
            raise ValueError(f"n_users, n_items and rank must be >= 1 and n_ratings >= 0: {self}")
        if not self.start_ts < self.end_ts or self.start_ts < 0:
            raise ValueError(f"need 0 <= start_ts < end_ts, got {self.start_ts}, {self.end_ts}")
        if self.n_ratings > self.n_users * self.max_user_ratings:
            raise ValueError(
                f"{self.n_ratings} ratings do not fit: at most {self.max_user_ratings} per user "
                f"(half of {self.n_items} items) x {self.n_users} users"
            )
        if self.sigma < 0 or self.window_days <= 0 or self.activity_sigma < 0:
            raise ValueError("sigma, activity_sigma must be >= 0 and window_days > 0")

    @property
    def effective_factor_sd(self) -> float:
        """``factor_sd``, or the value giving the interaction term an sd of 0.5."""
        return self.factor_sd if self.factor_sd is not None else math.sqrt(0.5 / math.sqrt(self.rank))

    @property
    def max_user_ratings(self) -> int:
        return max(1, self.n_items // 2)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = str(self.scale)
        d["factor_sd"] = self.effective_factor_sd
        return d


# ----------------------------------------------------------------------------------------------------------
# The planted model
# ----------------------------------------------------------------------------------------------------------


def _grid(scale: RatingScale) -> tuple[list[str], np.ndarray]:
    """The scale's grid as the strings written to CSV and the float values they parse to."""
    k = int(round((scale.high - scale.low) / scale.step)) + 1
    decimals = max(1, *(len(f"{x:g}".partition(".")[2]) for x in (scale.low, scale.step)))
    text = [f"{scale.low + j * scale.step:.{decimals}f}" for j in range(k)]
    return text, np.array([float(t) for t in text])


@dataclass
class Planted:
    """Per-user and per-item parameters (small: O(users + items))."""

    user_ids: np.ndarray  # user index -> id (a permutation of 1..n_users)
    user_bias: np.ndarray
    item_bias: np.ndarray
    p: np.ndarray
    q: np.ndarray
    cdf: np.ndarray  # item popularity CDF over item index (item id = index + 1)
    counts: np.ndarray  # ratings per user index
    arrival: np.ndarray  # epoch seconds (float)
    window: np.ndarray  # seconds
    grid_text: list[str]
    grid: np.ndarray

    @classmethod
    def build(cls, cfg: SynthConfig) -> Planted:
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
        nu, ni, k = cfg.n_users, cfg.n_items, cfg.rank
        user_ids = rng.permutation(nu).astype(np.int64) + 1
        user_bias = rng.normal(0.0, cfg.user_bias_sd, nu)
        item_bias = rng.normal(0.0, cfg.item_bias_sd, ni)
        fsd = cfg.effective_factor_sd
        p = rng.normal(0.0, fsd, (nu, k))
        q = rng.normal(0.0, fsd, (ni, k))
        weight = np.empty(ni)
        weight[rng.permutation(ni)] = np.arange(1, ni + 1, dtype=np.float64) ** -cfg.popularity_exponent
        cdf = np.cumsum(weight)
        cdf /= cdf[-1]
        counts = _activity(rng, cfg)
        span = float(cfg.end_ts - cfg.start_ts)
        arrival = cfg.start_ts + span * rng.random(nu)
        window = np.exp(rng.normal(math.log(cfg.window_days * _DAY), 1.5, nu))
        window = np.minimum(window, cfg.end_ts - arrival)
        text, grid = _grid(cfg.scale)
        return cls(user_ids, user_bias, item_bias, p, q, cdf, counts, arrival, window, text, grid)


def _activity(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Ratings per user: lognormal weights, a floor of ``min_user_ratings`` where the total allows it, a cap of
    ``max_user_ratings``; sums to exactly ``n_ratings``."""
    n, nu, cap = cfg.n_ratings, cfg.n_users, cfg.max_user_ratings
    weight = rng.lognormal(0.0, cfg.activity_sigma, nu)
    floor = min(cfg.min_user_ratings, n // nu, cap)
    counts = floor + rng.multinomial(n - floor * nu, weight / weight.sum())
    for _ in range(1000):
        over = counts > cap
        if not over.any():
            break
        excess = int((counts[over] - cap).sum())
        counts[over] = cap
        free = counts < cap
        counts[free] += rng.multinomial(excess, weight[free] / weight[free].sum())
    return counts.astype(np.int64)


def unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort + neighbour compare: faster than ``np.unique`` on int64 keys here)."""
    a = np.sort(a)
    if a.size == 0:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _sample_items(
    rng: np.random.Generator, counts: np.ndarray, cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each user ``u`` (local index), ``counts[u]`` distinct items drawn by popularity without replacement.

    Vectorised over users: draw with replacement, keep unique ``(user, item)`` keys, redraw the shortfall with a
    growing over-sampling factor, then keep a random ``counts[u]`` of each user's distinct items. Returns
    ``(user_local, item_index)`` sorted by user.
    """
    n_items = len(cdf)
    nu = len(counts)
    keys = np.zeros(0, dtype=np.int64)
    need = counts.copy()
    factor = 1.1
    for _ in range(40):
        users = np.flatnonzero(need > 0)
        if users.size == 0:
            break
        draws = np.ceil(need[users] * factor).astype(np.int64) + 2
        u = np.repeat(users, draws)
        items = np.searchsorted(cdf, rng.random(u.size), side="right")
        np.minimum(items, n_items - 1, out=items)
        keys = unique(np.concatenate([keys, u * n_items + items]))
        need = counts - np.bincount(keys // n_items, minlength=nu)
        factor *= 2.0
    short = np.flatnonzero(need > 0)
    if short.size:  # popularity tail exhausted by rejection: exact draw among the items still free (rare)
        extra = []
        for u in short:
            taken = keys[(keys // n_items) == u] % n_items
            free = np.setdiff1d(np.arange(n_items), taken)
            w = np.diff(np.concatenate([[0.0], cdf]))[free]
            pick = rng.choice(free, size=need[u], replace=False, p=w / w.sum())
            extra.append(u * n_items + pick)
        keys = unique(np.concatenate([keys, *extra]))
    user = keys // n_items
    # keep a random counts[u] of each user's distinct items
    order = np.lexsort((rng.random(keys.size), user))
    keys, user = keys[order], user[order]
    first = np.searchsorted(user, np.arange(nu))
    rank_in_user = np.arange(keys.size) - first[user]
    keep = rank_in_user < counts[user]
    keys = np.sort(keys[keep])
    return keys // n_items, keys % n_items


@dataclass
class Unit:
    """The ratings of one unit of users (internal indices, rating as grid index)."""

    user: np.ndarray  # user index
    item: np.ndarray  # item index
    idx: np.ndarray  # grid index
    ts: np.ndarray
    sse: float  # sum of squared errors of the clipped noise-free prediction


def units(cfg: SynthConfig, planted: Planted) -> Iterator[Unit]:
    scale = cfg.scale
    top = len(planted.grid) - 1
    for unit, lo in enumerate(range(0, cfg.n_users, UNIT_USERS)):
        hi = min(cfg.n_users, lo + UNIT_USERS)
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, unit]))
        local, item = _sample_items(rng, planted.counts[lo:hi], planted.cdf)
        user = lo + local
        frac = rng.random(user.size)
        ts = np.floor(planted.arrival[user] + planted.window[user] * frac * frac).astype(np.int64)
        np.clip(ts, cfg.start_ts, cfg.end_ts, out=ts)
        pred = (
            cfg.mu
            + planted.user_bias[user]
            + planted.item_bias[item]
            + np.einsum("ij,ij->i", planted.p[user], planted.q[item])
        )
        noisy = pred + rng.normal(0.0, cfg.sigma, user.size)
        idx = np.clip(np.rint((noisy - scale.low) / scale.step), 0, top).astype(np.uint16)
        err = np.clip(pred, scale.low, scale.high) - planted.grid[idx]
        yield Unit(user, item, idx, ts, float(err @ err))


def sorted_order(ts: np.ndarray, user_id: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """The order by (ts, user id, item): two int64 keys (``user_id * n_items + item`` is unique)."""
    return np.lexsort((user_id.astype(np.int64) * n_items + item, ts))


def generate_frame(cfg: SynthConfig) -> pd.DataFrame:
    """All ratings in memory (small configs), sorted by ``(ts, user, item)``: columns ``user, item`` (int64
    ids, 1-based), ``rating`` (float64, on the scale grid), ``ts`` (int64 epoch seconds).

    Identical, row for row, to the concatenation of the files :func:`write_dataset` writes for ``cfg``.
    """
    planted = Planted.build(cfg)
    parts = list(units(cfg, planted))
    user = np.concatenate([u.user for u in parts]) if parts else np.zeros(0, np.int64)
    item = np.concatenate([u.item for u in parts]) if parts else np.zeros(0, np.int64)
    idx = np.concatenate([u.idx for u in parts]) if parts else np.zeros(0, np.uint16)
    ts = np.concatenate([u.ts for u in parts]) if parts else np.zeros(0, np.int64)
    uid = planted.user_ids[user]
    order = sorted_order(ts, uid, item, cfg.n_items)
    return pd.DataFrame(
        {
            "user": uid[order].astype(np.int64),
            "item": item[order].astype(np.int64) + 1,
            "rating": planted.grid[idx[order]],
            "ts": ts[order],
        }
    )

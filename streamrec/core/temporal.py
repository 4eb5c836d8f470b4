r"""Time-aware biases (Koren 2009, "Collaborative filtering with temporal dynamics", KDD, §4-5), in numpy.

A time-aware model adds to the biases of ``r̂ = mu + b_u + b_i + p_u · q_i`` (``streamrec.core.arrays``)::

    b_u(t) = b_u + α_u · dev_u(t) + b_{u,day(t)}          dev_u(t) = sign(t - t_u) · |t - t_u|^β
    b_i(t) = b_i + b_{i,Bin(t)}                           Bin(t) = floor(day(t) / bin_days)

``day(t) = floor(ts / 86400)`` (UTC days since the epoch) and ``t`` in ``dev_u`` is that day number; ``t_u`` is the
mean day of the user's ratings when it was first fitted (kept fixed afterwards, so α_u keeps its meaning); β = 0.4
in the paper. Each term can be switched off (:class:`TimeConfig`); all off, the model is the time-blind one.

The state (:class:`TimeState`, rows aligned with the model's user / item rows):

* per user: ``t0`` = t_u, ``alpha`` = α_u, ``s`` = Σ dev_u² over the timed ratings absorbed (the curvature that
  holds α_u in place in a streaming update), ``last`` = the day of its latest rating;
* ``bins``: one row per (item, bin) with data: b_{i,bin} and its rating count;
* ``days``: one row per (user, day) with data: b_{u,day} and its rating count;
* ``now``: the day of the latest rating absorbed ("now" for serving).

Evaluation at a time t (what :func:`streamrec.core.arrays.predict` adds to ``mu + b_u + b_i``)::

    user term  α_u · dev_u(min(day(t), last_u)) + b_{u,day(t)}      (0 for a user with no timed rating)
    item term  b_{i,Bin(t)}          Bin(t) a bin of item i with data
               b_{i,last bin of i}   Bin(t) after the last bin of item i with data
               0                     otherwise (before its first bin, or a gap)

that is, a time after the data uses the latest state (the user's drift at its last rating, the item's last bin,
never a bin with no data); a per-day term exists only on a day with data. ``t`` missing (no timestamp, or no time
given: serving) means ``now``. Rows without a timestamp are fitted into ``b_u`` / ``b_i`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

DAY_SECONDS = 86_400
NO_DAY = np.iinfo(np.int64).min
"""``last`` of a user without timed ratings, and ``now`` of a model that has absorbed none."""

USER_TIME_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("t0", pa.float64(), nullable=False),
        pa.field("alpha", pa.float64(), nullable=False),
        pa.field("s", pa.float64(), nullable=False),
        pa.field("last", pa.int64(), nullable=False),
    ]
)
ITEM_BINS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bin", pa.int64(), nullable=False),
        pa.field("bias", pa.float64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
    ]
)
USER_DAYS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("day", pa.int64(), nullable=False),
        pa.field("bias", pa.float64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
    ]
)
TIME_TABLES = {"user_time": USER_TIME_SCHEMA, "item_bins": ITEM_BINS_SCHEMA, "user_days": USER_DAYS_SCHEMA}
"""The tables of a time-aware model version, beside ``users`` / ``items``."""


@dataclass(frozen=True)
class TimeConfig:
    """Which time terms a model has, and their shrinkage (fixed when the model is bootstrapped).

    bin_days: width of an item-bias time bin in days (0: no b_{i,Bin(t)}); reg_bin its λ.
    user_drift: 1 = α_u · dev_u(t) on, 0 = off; beta the exponent β; reg_drift the λ of α_u.
    user_day: 1 = b_{u,day} on, 0 = off; reg_day its λ.
    """

    bin_days: int = 0
    reg_bin: float = 25.0
    user_drift: int = 0
    beta: float = 0.4
    reg_drift: float = 30.0
    user_day: int = 0
    reg_day: float = 10.0

    @property
    def active(self) -> bool:
        return self.bin_days > 0 or bool(self.user_drift) or bool(self.user_day)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TimeConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_params(cls, p: Any) -> TimeConfig | None:
        """From a ``BootstrapParams`` (its ``time_bin_days``, ``user_drift`` ... fields); None when every term is
        off (the time-blind model) or the params have no time fields."""
        if not hasattr(p, "time_bin_days"):
            return None
        cfg = cls(
            bin_days=int(p.time_bin_days),
            reg_bin=float(p.reg_time_bin),
            user_drift=int(p.user_drift),
            beta=float(p.drift_beta),
            reg_drift=float(p.reg_drift),
            user_day=int(p.user_day),
            reg_day=float(p.reg_user_day),
        )
        return cfg if cfg.active else None


def days_of(time: Any, n: int, now: int) -> np.ndarray:
    """Day numbers (int64) of ``n`` epoch-second timestamps ``time``: ``floor(ts / 86400)`` computed in float64
    (as Spark's ``floor(ts / 86400)``); a missing timestamp (NaN, NA) or ``time=None`` gives ``now``."""
    if time is None:
        return np.full(n, now, dtype=np.int64)
    if hasattr(time, "to_numpy"):
        ts = time.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        ts = np.asarray(time, dtype=np.float64)
    ts = ts.reshape(-1)
    if len(ts) != n:
        raise ValueError(f"{len(ts)} times for {n} pairs")
    out = np.full(n, now, dtype=np.int64)
    ok = ~np.isnan(ts)
    out[ok] = np.floor(ts[ok] / DAY_SECONDS).astype(np.int64)
    return out


def dev(day: np.ndarray, t0: np.ndarray, beta: float) -> np.ndarray:
    """``sign(day - t0) · |day - t0|^β`` (float64)."""
    x = np.asarray(day, dtype=np.float64) - t0
    return np.sign(x) * np.abs(x) ** beta


def drift_term(cfg: TimeConfig, alpha: Any, t0: Any, last: Any, day: Any) -> np.ndarray:
    """``α_u · dev_u(min(day, last_u))`` per element (0 where the user has no timed rating, ``last == NO_DAY``,
    where ``day == NO_DAY``, or with the drift off): the user's drift term of :meth:`TimeState.user_term`."""
    day, last = np.asarray(day, dtype=np.int64), np.asarray(last, dtype=np.int64)
    out = np.zeros(len(day), dtype=np.float64)
    if cfg.user_drift:
        has = (last != NO_DAY) & (day != NO_DAY)
        d = np.minimum(day[has], last[has])
        out[has] = np.asarray(alpha, dtype=np.float64)[has] * dev(
            d, np.asarray(t0, dtype=np.float64)[has], cfg.beta
        )
    return out


def bins_of(day: np.ndarray, bin_days: int) -> np.ndarray:
    """``floor(day / bin_days)`` (int64; ``NO_DAY`` stays ``NO_DAY``)."""
    day = np.asarray(day, dtype=np.int64)
    out = np.floor(day.astype(np.float64) / bin_days).astype(np.int64)
    return np.where(day == NO_DAY, NO_DAY, out)


class Keyed:
    """A sparse table ``(row, key) -> (bias, n)`` sorted by ``(row, key)`` (item bins, user days).

    Lookups are vectorised: the key values are ranked once and ``row * (ranks + 1) + rank`` is searched."""

    def __init__(self, rows: Any, keys: Any, bias: Any, n: Any) -> None:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        bias = np.asarray(bias, dtype=np.float64).reshape(-1)
        n = np.asarray(n, dtype=np.int64).reshape(-1)
        if not len(rows) == len(keys) == len(bias) == len(n):
            raise ValueError(f"keyed table columns disagree: {len(rows)}, {len(keys)}, {len(bias)}, {len(n)}")
        order = np.lexsort((keys, rows))
        if len(order) and not np.array_equal(order, np.arange(len(order))):
            rows, keys, bias, n = rows[order], keys[order], bias[order], n[order]
        self.rows, self.keys = np.ascontiguousarray(rows), np.ascontiguousarray(keys)
        self.bias, self.n = np.ascontiguousarray(bias), np.ascontiguousarray(n)
        self._uniq = np.unique(self.keys)
        self._span = len(self._uniq) + 1
        self._combo = self.rows * self._span + np.searchsorted(self._uniq, self.keys)
        if len(self._combo) > 1 and not bool(np.all(self._combo[1:] > self._combo[:-1])):
            dup = int(np.flatnonzero(self._combo[1:] <= self._combo[:-1])[0])
            raise ValueError(f"duplicate (row, key) ({int(self.rows[dup])}, {int(self.keys[dup])})")

    @classmethod
    def empty(cls) -> Keyed:
        return cls([], [], [], [])

    def __len__(self) -> int:
        return len(self.rows)

    def copy(self) -> Keyed:
        return Keyed(self.rows.copy(), self.keys.copy(), self.bias.copy(), self.n.copy())

    def at_or_before(self, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Position of the entry of each ``rows[k]`` with the largest key <= ``keys[k]`` (-1: none)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = np.asarray(keys, dtype=np.int64)
        if len(self.rows) == 0 or len(rows) == 0:
            return np.full(len(rows), -1, dtype=np.int64)
        rank = np.searchsorted(self._uniq, keys, "right") - 1  # the largest stored key value <= the query
        pos = np.searchsorted(self._combo, rows * self._span + rank, "right") - 1
        pos_c = np.maximum(pos, 0)
        ok = (pos >= 0) & (rank >= 0) & (self.rows[pos_c] == rows) & (keys != NO_DAY)
        return np.where(ok, pos, -1)

    def find(self, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Position of the entry ``(rows[k], keys[k])`` (-1: absent)."""
        pos = self.at_or_before(rows, keys)
        ok = pos >= 0
        ok[ok] = self.keys[pos[ok]] == np.asarray(keys, dtype=np.int64)[ok]
        return np.where(ok, pos, -1)

    def term(self, rows: np.ndarray, keys: np.ndarray, carry: bool) -> np.ndarray:
        """``bias`` of the entry ``(row, key)``; with ``carry``, of the row's last entry when ``key`` is after it;
        0 otherwise."""
        pos = self.at_or_before(rows, keys)
        ok = pos >= 0
        p = pos[ok]
        take = self.keys[p] == np.asarray(keys, dtype=np.int64)[ok]
        if carry:
            nxt = np.minimum(p + 1, len(self.rows) - 1)
            row_last = (p == len(self.rows) - 1) | (self.rows[nxt] != self.rows[p])
            take |= row_last
        out = np.zeros(len(pos), dtype=np.float64)
        idx = np.flatnonzero(ok)[take]
        out[idx] = self.bias[pos[idx]]
        return out

    def take(self, sel: np.ndarray) -> Keyed:
        """The entries of the rows ``sel`` (sorted, unique), renumbered ``0 .. len(sel) - 1``."""
        sel = np.asarray(sel, dtype=np.int64)
        if len(sel) == 0 or len(self.rows) == 0:
            return Keyed.empty()
        local = np.searchsorted(sel, self.rows)
        mask = sel[np.minimum(local, len(sel) - 1)] == self.rows
        return Keyed(local[mask], self.keys[mask], self.bias[mask], self.n[mask])

    def put(self, sel: np.ndarray, sub: Keyed) -> Keyed:
        """This table with the entries of the rows ``sel`` replaced by ``sub`` (rows numbered as in ``sel``)."""
        sel = np.asarray(sel, dtype=np.int64)
        keep = ~np.isin(self.rows, sel)
        return Keyed(
            np.concatenate([self.rows[keep], sel[sub.rows]]),
            np.concatenate([self.keys[keep], sub.keys]),
            np.concatenate([self.bias[keep], sub.bias]),
            np.concatenate([self.n[keep], sub.n]),
        )

    def ensure(self, rows: np.ndarray, keys: np.ndarray) -> tuple[Keyed, np.ndarray]:
        """This table with an entry (bias 0, n 0) added for every absent ``(rows[k], keys[k])``, and the position
        of each pair in it."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = np.asarray(keys, dtype=np.int64)
        table = self
        missing = table.find(rows, keys) < 0
        if missing.any():
            pairs = np.unique(np.stack([rows[missing], keys[missing]]), axis=1)
            z = pairs.shape[1]
            table = Keyed(
                np.concatenate([self.rows, pairs[0]]),
                np.concatenate([self.keys, pairs[1]]),
                np.concatenate([self.bias, np.zeros(z)]),
                np.concatenate([self.n, np.zeros(z, np.int64)]),
            )
        return table, table.find(rows, keys)


@dataclass
class TimeState:
    """The time terms of a model, rows aligned with its user / item rows (see the module docstring)."""

    config: TimeConfig
    now: int
    t0: np.ndarray
    alpha: np.ndarray
    s: np.ndarray
    last: np.ndarray
    bins: Keyed
    days: Keyed

    @classmethod
    def empty(cls, config: TimeConfig, n_users: int, now: int = NO_DAY) -> TimeState:
        return cls(
            config,
            int(now),
            np.full(n_users, np.nan),
            np.zeros(n_users),
            np.zeros(n_users),
            np.full(n_users, NO_DAY, dtype=np.int64),
            Keyed.empty(),
            Keyed.empty(),
        )

    def copy(self) -> TimeState:
        return TimeState(
            self.config,
            self.now,
            self.t0.copy(),
            self.alpha.copy(),
            self.s.copy(),
            self.last.copy(),
            self.bins.copy(),
            self.days.copy(),
        )

    def user_term(self, u: np.ndarray, day: np.ndarray) -> np.ndarray:
        """``α_u · dev_u(min(day, last_u)) + b_{u,day}`` for user rows ``u`` (all >= 0) at days ``day``."""
        cfg = self.config
        out = drift_term(cfg, self.alpha[u], self.t0[u], self.last[u], day)
        if cfg.user_day:
            out = out + self.days.term(u, day, carry=False)
        return out

    def item_term(self, i: np.ndarray, day: np.ndarray) -> np.ndarray:
        """``b_{i,Bin(day)}`` with the carry rule of the module docstring, for item rows ``i`` (all >= 0)."""
        if not self.config.bin_days:
            return np.zeros(len(i), dtype=np.float64)
        return self.bins.term(i, bins_of(day, self.config.bin_days), carry=True)

    def take(self, user_rows: np.ndarray, item_rows: np.ndarray) -> TimeState:
        """The state of the given rows (sorted, unique), renumbered from 0 (a streaming update's sub-problem)."""
        return TimeState(
            self.config,
            self.now,
            self.t0[user_rows],
            self.alpha[user_rows],
            self.s[user_rows],
            self.last[user_rows],
            self.bins.take(item_rows),
            self.days.take(user_rows),
        )

    def put(self, user_rows: np.ndarray, item_rows: np.ndarray, sub: TimeState) -> None:
        """Write a sub-state from :meth:`take` back (in place); ``now`` becomes the later of the two."""
        self.t0[user_rows], self.alpha[user_rows] = sub.t0, sub.alpha
        self.s[user_rows], self.last[user_rows] = sub.s, sub.last
        self.bins = self.bins.put(item_rows, sub.bins)
        self.days = self.days.put(user_rows, sub.days)
        self.now = max(self.now, sub.now)

    # --- tables ---------------------------------------------------------------------------------------------
    def tables(self, user_ids: np.ndarray, item_ids: np.ndarray) -> dict[str, pa.Table]:
        """The three Arrow tables (``TIME_TABLES``) with the model's ids; users without a timed rating have no
        ``user_time`` row."""
        timed = np.flatnonzero(self.last != NO_DAY)
        cols = {
            "user_time": [
                user_ids[timed],
                self.t0[timed],
                self.alpha[timed],
                self.s[timed],
                self.last[timed],
            ],
            "item_bins": [item_ids[self.bins.rows], self.bins.keys, self.bins.bias, self.bins.n],
            "user_days": [user_ids[self.days.rows], self.days.keys, self.days.bias, self.days.n],
        }
        return {
            name: pa.Table.from_arrays(
                [pa.array(np.asarray(c), type=f.type) for c, f in zip(cols[name], schema, strict=True)],
                schema=schema,
            )
            for name, schema in TIME_TABLES.items()
        }

    @classmethod
    def from_tables(
        cls,
        config: TimeConfig,
        now: int,
        tables: dict[str, pa.Table],
        user_rows: Any,
        item_rows: Any,
        n_users: int,
    ) -> TimeState:
        """From the three tables; ``user_rows`` / ``item_rows`` map id arrays to model rows (-1: unknown id,
        refused: every id of a time table is an entity of the model)."""
        state = cls.empty(config, n_users, now)

        def col(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
            c = table.column(name)
            if c.null_count:
                raise ValueError(f"null values in column {name!r} of a time table")
            return np.asarray(c.to_numpy(), dtype=dtype)

        def rows_of(name: str, lookup: Any) -> tuple[pa.Table, np.ndarray]:
            t = tables[name]
            ids = col(t, "id", np.int64)
            rows = lookup(ids)
            if len(rows) and rows.min() < 0:
                bad = int(ids[np.flatnonzero(rows < 0)[0]])
                raise ValueError(f"{name}: id {bad} is not an entity of the model")
            return t, rows

        t, rows = rows_of("user_time", user_rows)
        state.t0[rows] = col(t, "t0", np.float64)
        state.alpha[rows] = col(t, "alpha", np.float64)
        state.s[rows] = col(t, "s", np.float64)
        state.last[rows] = col(t, "last", np.int64)
        t, rows = rows_of("item_bins", item_rows)
        state.bins = Keyed(rows, col(t, "bin", np.int64), col(t, "bias", np.float64), col(t, "n", np.int64))
        t, rows = rows_of("user_days", user_rows)
        state.days = Keyed(rows, col(t, "day", np.int64), col(t, "bias", np.float64), col(t, "n", np.int64))
        return state

    def manifest(self) -> dict:
        """What the manifest records of the time terms (besides their tables' files)."""
        return {"config": self.config.as_dict(), "now": None if self.now == NO_DAY else int(self.now)}

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

Generation is vectorised with numpy, one unit of ``_UNIT_USERS`` consecutive users at a time, each unit with
its own seeded stream (``SeedSequence([seed, 1, unit])``): the output depends only on the config, never on
the memory settings. :func:`write_dataset` never holds all ratings: each unit's ratings are spilled by time
window to binary files, then each window is sorted by ``(ts, user, item)`` and streamed to the output files,
so a 20M-rating data set needs memory for one unit and one window only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamrec.core.schema import HALF_STAR, RatingScale

__all__ = ["SynthConfig", "generate_frame", "write_dataset", "main"]

_UNIT_USERS = 1024  # users per random stream; part of the data definition (changing it changes the data)
_WINDOW_RATINGS = 1_000_000  # target ratings per time window sorted in memory by write_dataset
_HISTORY_FILE_ROWS = 2_000_000  # history larger than this is split into history/part-NNNNN files
_DAY = 86_400
_SPILL_DTYPE = np.dtype([("ts", "<i8"), ("user", "<i4"), ("item", "<i4"), ("idx", "<u2")])
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
class _Planted:
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
    def build(cls, cfg: SynthConfig) -> _Planted:
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


def _unique(a: np.ndarray) -> np.ndarray:
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
        keys = _unique(np.concatenate([keys, u * n_items + items]))
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
        keys = _unique(np.concatenate([keys, *extra]))
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
class _Unit:
    """The ratings of one unit of users (internal indices, rating as grid index)."""

    user: np.ndarray  # user index
    item: np.ndarray  # item index
    idx: np.ndarray  # grid index
    ts: np.ndarray
    sse: float  # sum of squared errors of the clipped noise-free prediction


def _units(cfg: SynthConfig, planted: _Planted) -> Iterator[_Unit]:
    scale = cfg.scale
    top = len(planted.grid) - 1
    for unit, lo in enumerate(range(0, cfg.n_users, _UNIT_USERS)):
        hi = min(cfg.n_users, lo + _UNIT_USERS)
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
        yield _Unit(user, item, idx, ts, float(err @ err))


def _sorted_order(ts: np.ndarray, user_id: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """The order by (ts, user id, item): two int64 keys (``user_id * n_items + item`` is unique)."""
    return np.lexsort((user_id.astype(np.int64) * n_items + item, ts))


def generate_frame(cfg: SynthConfig) -> pd.DataFrame:
    """All ratings in memory (small configs), sorted by ``(ts, user, item)``: columns ``user, item`` (int64
    ids, 1-based), ``rating`` (float64, on the scale grid), ``ts`` (int64 epoch seconds).

    Identical, row for row, to the concatenation of the files :func:`write_dataset` writes for ``cfg``.
    """
    planted = _Planted.build(cfg)
    parts = list(_units(cfg, planted))
    user = np.concatenate([u.user for u in parts]) if parts else np.zeros(0, np.int64)
    item = np.concatenate([u.item for u in parts]) if parts else np.zeros(0, np.int64)
    idx = np.concatenate([u.idx for u in parts]) if parts else np.zeros(0, np.uint16)
    ts = np.concatenate([u.ts for u in parts]) if parts else np.zeros(0, np.int64)
    uid = planted.user_ids[user]
    order = _sorted_order(ts, uid, item, cfg.n_items)
    return pd.DataFrame(
        {
            "user": uid[order].astype(np.int64),
            "item": item[order].astype(np.int64) + 1,
            "rating": planted.grid[idx[order]],
            "ts": ts[order],
        }
    )


# ----------------------------------------------------------------------------------------------------------
# Writing a data set: spill by time window, sort each window, stream to the output files
# ----------------------------------------------------------------------------------------------------------


class _Sink:
    """Writes sorted chunks into a planned sequence of files (relative path, rows), CSV or Parquet."""

    def __init__(self, out_dir: str, plan: list[tuple[str, int]], fmt: str, planted: _Planted) -> None:
        self.out_dir, self.plan, self.fmt, self.planted = out_dir, plan, fmt, planted
        self.grid_text = pa.array(planted.grid_text)
        self.file_no = -1
        self.left = 0
        self.writer: Any = None
        self.stream: Any = None
        self.seen = np.zeros(len(planted.user_ids), dtype=bool)
        self.summary: list[dict[str, Any]] = []
        self._next()

    def _next(self) -> None:
        self._close()
        self.file_no += 1
        while self.file_no < len(self.plan) and self.plan[self.file_no][1] == 0:
            self.file_no += 1
        if self.file_no >= len(self.plan):
            return
        rel, rows = self.plan[self.file_no]
        path = os.path.join(self.out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.left = rows
        self.summary.append(
            {"path": rel, "rows": rows, "ts_min": None, "ts_max": None, "users": 0, "new_users": 0}
        )
        self._users: list[np.ndarray] = []
        if self.fmt == "csv":
            self.stream = pa.OSFile(path, "wb")
            self.stream.write((",".join(CSV_COLUMNS) + "\n").encode())
            schema = pa.schema([(c, pa.string() if c == "rating" else pa.int64()) for c in CSV_COLUMNS])
            opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
            self.writer = pacsv.CSVWriter(self.stream, schema, write_options=opts)
        else:
            schema = pa.schema([(c, pa.float64() if c == "rating" else pa.int64()) for c in CSV_COLUMNS])
            self.writer = pq.ParquetWriter(path, schema)

    def _close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.writer = None
        users = _unique(np.concatenate(self._users)) if self._users else np.zeros(0, np.int64)
        info = self.summary[-1]
        info["users"] = int(users.size)
        info["new_users"] = int((~self.seen[users]).sum())
        self.seen[users] = True

    def write(self, user: np.ndarray, item: np.ndarray, idx: np.ndarray, ts: np.ndarray) -> None:
        """Append rows (already in output order: user indices, item indices, grid indices, ts)."""
        start = 0
        while start < len(ts):
            if self.writer is None:
                raise RuntimeError("more rows than planned")
            n = min(self.left, len(ts) - start)
            sl = slice(start, start + n)
            self._write_rows(user[sl], item[sl], idx[sl], ts[sl])
            self.left -= n
            start += n
            if self.left == 0:
                self._next()

    def _write_rows(self, user: np.ndarray, item: np.ndarray, idx: np.ndarray, ts: np.ndarray) -> None:
        info = self.summary[-1]
        info["ts_min"] = int(ts[0]) if info["ts_min"] is None else info["ts_min"]
        info["ts_max"] = int(ts[-1])
        self._users.append(_unique(user))
        rating = self.grid_text.take(pa.array(idx)) if self.fmt == "csv" else pa.array(self.planted.grid[idx])
        table = pa.table(
            [
                pa.array(self.planted.user_ids[user]),
                pa.array(item.astype(np.int64) + 1),
                rating,
                pa.array(ts),
            ],
            names=list(CSV_COLUMNS),
        )
        self.writer.write_table(table)

    def close(self) -> None:
        self._close()


def _split_sizes(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if j < extra else 0) for j in range(parts)]


def _plan(
    n: int,
    n_partitions: int,
    history_fraction: float,
    partition_size: int | None,
    history_file_rows: int,
    ext: str,
) -> list[tuple[str, int]]:
    """The output files in time order: history (one file, or parts when large), then the partitions."""
    n_hist = int(round(history_fraction * n))
    rest = n - n_hist
    plan: list[tuple[str, int]] = []
    if n_hist <= history_file_rows:
        plan.append((f"history/ratings.{ext}", n_hist))
    else:
        for j, rows in enumerate(_split_sizes(n_hist, math.ceil(n_hist / history_file_rows))):
            plan.append((f"history/part-{j:05d}.{ext}", rows))
    if partition_size is not None:
        if partition_size < 1:
            raise ValueError("partition_size must be >= 1")
        sizes = [min(partition_size, rest - s) for s in range(0, rest, partition_size)]
    else:
        if n_partitions < 1:
            raise ValueError("n_partitions must be >= 1")
        sizes = _split_sizes(rest, n_partitions)
    plan += [(f"partitions/p-{j + 1:05d}.{ext}", rows) for j, rows in enumerate(sizes)]
    return plan


def write_dataset(
    cfg: SynthConfig,
    out_dir: str,
    n_partitions: int = 5,
    history_fraction: float = 0.5,
    fmt: str = "csv",
    partition_size: int | None = None,
    history_file_rows: int = _HISTORY_FILE_ROWS,
) -> dict[str, Any]:
    """Write a time-ordered data set and its ``truth.json``; return the truth dict.

    Files (columns ``user,item,rating,timestamp``; CSV with that header, i.e. the loader's ``csv`` format, or
    Parquet with ``fmt="parquet"``), concatenated in this order they are sorted by ``(timestamp, user, item)``:

    * ``history/ratings.csv``: the first ``round(history_fraction * n_ratings)`` ratings (split into
      ``history/part-00000.csv``... of at most ``history_file_rows`` rows when larger);
    * ``partitions/p-00001.csv``...: the rest, in ``n_partitions`` equal parts, or parts of ``partition_size``
      ratings (the last one shorter) when given.

    ``truth.json`` holds the config, the planted ``mu`` and ``sigma``, ``best_rmse`` (RMSE of the noise-free
    planted prediction clipped to the scale against the written ratings: the best any model can do), the
    mean and sd of the ratings and, per file, rows, timestamp range, users and new users.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be csv or parquet, not {fmt!r}")
    if not 0.0 <= history_fraction <= 1.0:
        raise ValueError("history_fraction must be in [0, 1]")
    plan = _plan(cfg.n_ratings, n_partitions, history_fraction, partition_size, history_file_rows, fmt)
    os.makedirs(out_dir, exist_ok=True)
    planted = _Planted.build(cfg)
    n_windows = max(1, math.ceil(cfg.n_ratings / _WINDOW_RATINGS))
    edges = np.linspace(cfg.start_ts, cfg.end_ts + 1, n_windows + 1)
    spill = tempfile.mkdtemp(prefix=".spill-", dir=out_dir)
    sse, total, total_sq = 0.0, 0.0, 0.0
    window_rows = np.zeros(n_windows, dtype=np.int64)
    try:
        files = [open(os.path.join(spill, f"w{j:05d}.bin"), "wb") for j in range(n_windows)]  # noqa: SIM115
        try:
            for unit in _units(cfg, planted):
                sse += unit.sse
                values = planted.grid[unit.idx]
                total += float(values.sum())
                total_sq += float(values @ values)
                win = np.searchsorted(edges, unit.ts, side="right") - 1
                np.clip(win, 0, n_windows - 1, out=win)
                order = np.argsort(win, kind="stable")
                rec = np.empty(unit.ts.size, dtype=_SPILL_DTYPE)
                rec["ts"], rec["user"], rec["item"], rec["idx"] = unit.ts, unit.user, unit.item, unit.idx
                rec = rec[order]
                bounds = np.searchsorted(win[order], np.arange(n_windows + 1))
                for j in np.flatnonzero(np.diff(bounds)):
                    rec[bounds[j] : bounds[j + 1]].tofile(files[j])
                    window_rows[j] += bounds[j + 1] - bounds[j]
        finally:
            for f in files:
                f.close()
        sink = _Sink(out_dir, plan, fmt, planted)
        try:
            for j in range(n_windows):
                rec = np.fromfile(os.path.join(spill, f"w{j:05d}.bin"), dtype=_SPILL_DTYPE)
                os.remove(os.path.join(spill, f"w{j:05d}.bin"))
                if rec.size == 0:
                    continue
                order = _sorted_order(rec["ts"], planted.user_ids[rec["user"]], rec["item"], cfg.n_items)
                rec = rec[order]
                sink.write(rec["user"], rec["item"], rec["idx"], rec["ts"])
        finally:
            sink.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    n = cfg.n_ratings
    mean = total / n if n else float("nan")
    truth = {
        "config": cfg.to_dict(),
        "mu": cfg.mu,
        "sigma": cfg.sigma,
        "best_rmse": math.sqrt(sse / n) if n else float("nan"),
        "n_ratings": n,
        "n_users_rated": int((planted.counts > 0).sum()),
        "mean_rating": mean,
        "rating_sd": math.sqrt(max(0.0, total_sq / n - mean * mean)) if n else float("nan"),
        "format": fmt,
        "files": sink.summary,
        "chunks": {
            "user_units": math.ceil(cfg.n_users / _UNIT_USERS),
            "windows": n_windows,
            "max_window_rows": int(window_rows.max(initial=0)),
        },
    }
    with open(os.path.join(out_dir, "truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
    return truth


def main(argv: list[str] | None = None) -> int:
    """``python -m streamrec.core.synth --out DIR [...]``: write a data set, print its truth summary as JSON."""
    ap = argparse.ArgumentParser(prog="python -m streamrec.core.synth", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--users", type=int, default=SynthConfig.n_users)
    ap.add_argument("--items", type=int, default=SynthConfig.n_items)
    ap.add_argument("--ratings", type=int, default=SynthConfig.n_ratings)
    ap.add_argument("--partitions", type=int, default=5)
    ap.add_argument("--partition-size", type=int, default=None)
    ap.add_argument("--history-fraction", type=float, default=0.5)
    ap.add_argument("--rank", type=int, default=SynthConfig.rank)
    ap.add_argument("--sigma", type=float, default=SynthConfig.sigma)
    ap.add_argument("--seed", type=int, default=SynthConfig.seed)
    ap.add_argument(
        "--scale", type=RatingScale.parse, default=HALF_STAR, help="LOW:HIGH:STEP, e.g. 0.5:5:0.5"
    )
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    args = ap.parse_args(argv)
    cfg = SynthConfig(
        n_users=args.users,
        n_items=args.items,
        n_ratings=args.ratings,
        rank=args.rank,
        sigma=args.sigma,
        seed=args.seed,
        scale=args.scale,
    )
    truth = write_dataset(
        cfg,
        args.out,
        n_partitions=args.partitions,
        history_fraction=args.history_fraction,
        fmt=args.format,
        partition_size=args.partition_size,
    )
    summary = {k: v for k, v in truth.items() if k != "files"}
    summary["files"] = [f"{f['path']}: {f['rows']} rows, {f['new_users']} new users" for f in truth["files"]]
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

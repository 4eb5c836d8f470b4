"""Write a generated data set (:mod:`streamrec.core.synth`) to files: a time-ordered history and partitions, CSV or
Parquet, plus ``truth.json`` (``python -m streamrec.core.synth_files --out DIR``).

Bounded memory at any size: the generated ratings are spilled to one temp file per time window, each window is
sorted in memory (``_WINDOW_RATINGS`` ratings at a time) and streamed to the planned output files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from streamrec.core.schema import HALF_STAR, RatingScale
from streamrec.core.synth import CSV_COLUMNS, UNIT_USERS, Planted, SynthConfig, sorted_order, unique, units

_WINDOW_RATINGS = 1_000_000  # target ratings per time window sorted in memory by write_dataset
_HISTORY_FILE_ROWS = 2_000_000  # history larger than this is split into history/part-NNNNN files
_SPILL_DTYPE = np.dtype([("ts", "<i8"), ("user", "<i4"), ("item", "<i4"), ("idx", "<u2")])


# ----------------------------------------------------------------------------------------------------------
# Writing a data set: spill by time window, sort each window, stream to the output files
# ----------------------------------------------------------------------------------------------------------


class _Sink:
    """Writes sorted chunks into a planned sequence of files (relative path, rows), CSV or Parquet."""

    def __init__(self, out_dir: str, plan: list[tuple[str, int]], fmt: str, planted: Planted) -> None:
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
        users = unique(np.concatenate(self._users)) if self._users else np.zeros(0, np.int64)
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
        self._users.append(unique(user))
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
    planted = Planted.build(cfg)
    n_windows = max(1, math.ceil(cfg.n_ratings / _WINDOW_RATINGS))
    edges = np.linspace(cfg.start_ts, cfg.end_ts + 1, n_windows + 1)
    spill = tempfile.mkdtemp(prefix=".spill-", dir=out_dir)
    sse, total, total_sq = 0.0, 0.0, 0.0
    window_rows = np.zeros(n_windows, dtype=np.int64)
    try:
        files = [open(os.path.join(spill, f"w{j:05d}.bin"), "wb") for j in range(n_windows)]  # noqa: SIM115
        try:
            for unit in units(cfg, planted):
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
                order = sorted_order(rec["ts"], planted.user_ids[rec["user"]], rec["item"], cfg.n_items)
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
            "user_units": math.ceil(cfg.n_users / UNIT_USERS),
            "windows": n_windows,
            "max_window_rows": int(window_rows.max(initial=0)),
        },
    }
    with open(os.path.join(out_dir, "truth.json"), "w") as f:
        json.dump(truth, f, indent=2)
    return truth


def main(argv: list[str] | None = None) -> int:
    """``python -m streamrec.core.synth_files --out DIR [...]``: write a data set, print its truth summary as JSON."""
    ap = argparse.ArgumentParser(
        prog="python -m streamrec.core.synth_files", description=__doc__.splitlines()[0]
    )
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

"""Shared plumbing of the benchmark scripts: data loading (with a synthetic fallback), the fixed split, Spark
session setup, model materialisation, progress lines, stage timings from the Spark event log and the JSON line.

Every script prints progress lines and then exactly one JSON object on its last line of output.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))

from streamrec.core.schema import HALF_STAR, RatingScale  # noqa: E402
from streamrec.core.synth import SynthConfig, generate_frame  # noqa: E402
from streamrec.spark.model import FactorModel  # noqa: E402
from streamrec.spark.schema import RATINGS_SCHEMA  # noqa: E402
from streamrec.storage.ratings import read_ratings_pandas  # noqa: E402

DEFAULT_RATINGS = (REPO / ".." / "shared" / "data" / "ml-latest-small" / "ratings.csv").resolve()

# Same shape as ml-latest-small (610 users, 9,724 items, 100,836 ratings); used when no ratings file is found.
SYNTH_FALLBACK = SynthConfig(n_users=610, n_items=9724, n_ratings=100_836, seed=42)
# ``--smoke``: tiny generated data, so a script runs end to end in seconds (tests/test_bench.py); numbers meaningless.
SYNTH_SMOKE = SynthConfig(n_users=120, n_items=150, n_ratings=3_000, seed=42)

TEST_FRACTION = 0.2
SPLIT_SEED = 42

NOISE_NOTE = (
    "timings are wall-clock on a 2-core machine shared with other work (see loadavg): noisy, compare ratios "
    "within one run rather than absolute seconds across runs"
)

# /work/shared/REFERENCE.md, "Measured on this kind of machine (ml-latest-small, 2026-11-26)".
REFERENCE_LABEL = "reference, not measured here (REFERENCE.md, ml-latest-small, same split protocol)"
REFERENCE_ACCURACY = {
    "label": REFERENCE_LABEL,
    "dropped_test_rows": 798,
    "test_rmse": {
        "global_mean": 1.0424,
        "biases_only_reg_user15_reg_item10": 0.8679,
        "spark_als_defaults": 0.8816,
        "spark_als_best_grid_picked_on_test": 0.8696,
        "surprise_svd": 0.8769,
        "surprise_svdpp": 0.8661,
        "river_biasedmf_one_pass_time_order": 0.9421,
        "calibration_biases_reg5_plus_als_on_residuals_rank50_reg0.1_15it": 0.840,
        "calibration_same_rank100": 0.838,
    },
    "fit_seconds": {
        "biases_only": 0.006,
        "spark_als_defaults": 4.1,
        "surprise_svd": 0.26,
        "surprise_svdpp": 26.6,
    },
}
REFERENCE_STREAM = {
    "label": REFERENCE_LABEL,
    "bootstrap_ratings": 40_334,
    "partitions": 41,
    "validation_rmse_final": {
        "frozen_bootstrap_als": 0.9739,
        "full_als_refit_every_10_partitions": 0.8683,
        "talk_update_numpy_port_tuned": 0.8841,
        "talk_update_defaults_diverges": 2.358,
        "river_biasedmf": 0.9421,
    },
    "refit_fit_seconds_total": 16.4,
    "talk_update_tuned_seconds_total": 0.17,
    "prequential_rmse": {"talk_rule": 0.957, "river": 0.954, "frozen_or_refit": 1.035},
    "streamed_ratings_from_users_absent_from_bootstrap": 0.89,
    "median_distinct_users_per_1000": 21,
    "top_user_ratings_in_a_partition": 326,
}


# ---------------------------------------------------------------------------------------------------------------
# Progress and output
# ---------------------------------------------------------------------------------------------------------------


class Progress:
    """``[name +12.3s] message`` lines on stdout (flushed), so a long run can be followed."""

    def __init__(self, name: str) -> None:
        self.name, self.t0 = name, time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{self.name} +{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)


def _clean(x):
    """JSON-ready: numpy scalars to Python, floats rounded to 6 decimals, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        x = float(x)
        return round(x, 6) if math.isfinite(x) else None
    return x


def emit(result: dict) -> None:
    """Print the result as ONE JSON line (the last line of output)."""
    sys.stdout.flush()
    print(json.dumps(_clean(result), separators=(", ", ": ")), flush=True)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": list(os.getloadavg()), "note": NOISE_NOTE}


def code_version() -> dict:
    """The commit and the uncommitted changes under streamrec/ when the run started (the core is edited
    concurrently by others: numbers belong to this snapshot)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "streamrec").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_in_streamrec": dirty}


def seconds(t0: float) -> float:
    return time.perf_counter() - t0


def summary(values: list[float]) -> dict:
    """median / p90 / max / mean / total of a list of durations (empty list: Nones)."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "max": None, "mean": None, "total": 0.0}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "total": float(a.sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Data: load, split, to Spark
# ---------------------------------------------------------------------------------------------------------------


def add_data_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--ratings",
        default=str(DEFAULT_RATINGS) if DEFAULT_RATINGS.exists() else None,
        help="MovieLens ratings.csv, u.data, or CSV/Parquet user,item,rating[,timestamp] (file or folder); "
        f"default {DEFAULT_RATINGS} if it exists; absent or missing: synthetic data from streamrec.core.synth",
    )
    ap.add_argument(
        "--scale", type=RatingScale.parse, default=HALF_STAR, help="LOW:HIGH:STEP (default 0.5:5:0.5)"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny generated data and the cheapest settings (a check that the script runs; numbers meaningless)",
    )


@dataclass
class Data:
    ratings: pd.DataFrame  # user int64, item int64, rating float64, ts Int64 (file order)
    label: str
    scale: RatingScale


def load(path: str | None, scale: RatingScale, progress: Progress, smoke: bool = False) -> Data:
    """Ratings from ``path`` (``read_ratings_pandas``), or the synthetic fallback when the path is absent; with
    ``smoke``, the tiny ``SYNTH_SMOKE`` whatever the path."""
    if path and os.path.exists(path) and not smoke:
        progress(f"loading {path}")
        df = read_ratings_pandas(path, scale)
        return Data(df, os.path.abspath(path), scale)
    why = "--smoke" if smoke else "no --ratings given" if not path else f"--ratings {path} not found"
    cfg = SYNTH_SMOKE if smoke else SYNTH_FALLBACK
    progress(
        f"{why}: generating synthetic data {cfg.n_users} users x {cfg.n_items} items, {cfg.n_ratings} ratings"
    )
    df = generate_frame(cfg)
    df["ts"] = df["ts"].astype("Int64")
    label = (
        f"synthetic ({why}): streamrec.core.synth.generate_frame(SynthConfig(n_users={cfg.n_users}, "
        f"n_items={cfg.n_items}, n_ratings={cfg.n_ratings}, rank={cfg.rank}, seed={cfg.seed})), "
        "file order = time order"
    )
    return Data(df, label, cfg.scale)


@dataclass
class Split:
    train: pd.DataFrame  # the 80%, in file order
    test: pd.DataFrame  # the 20%, in file order, all rows
    test_known: pd.DataFrame  # the 20% without rows whose user or item is absent from train
    dropped: int


def split(ratings: pd.DataFrame, fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Split:
    """Rows in file order, ``default_rng(seed).permutation(n)``: the first ``round(fraction * n)`` are test."""
    n = len(ratings)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(fraction * n)
    test = ratings.iloc[np.sort(perm[:n_test])].reset_index(drop=True)
    train = ratings.iloc[np.sort(perm[n_test:])].reset_index(drop=True)
    known = test["user"].isin(train["user"].unique()) & test["item"].isin(train["item"].unique())
    return Split(train, test, test[known].reset_index(drop=True), int((~known).sum()))


def time_order(ratings: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by timestamp (ties keep file order; null timestamps last)."""
    return ratings.sort_values("ts", kind="stable", na_position="last").reset_index(drop=True)


def to_spark(spark, ratings: pd.DataFrame):
    """A pandas ratings frame as a Spark DataFrame with ``schema.RATINGS_SCHEMA``."""
    pdf = pd.DataFrame(
        {
            "user": ratings["user"].to_numpy(np.int64),
            "item": ratings["item"].to_numpy(np.int64),
            "rating": ratings["rating"].to_numpy(np.float64),
            "ts": ratings["ts"].astype("Int64")
            if "ts" in ratings
            else pd.array([pd.NA] * len(ratings), "Int64"),
        }
    )
    return spark.createDataFrame(pdf, schema=RATINGS_SCHEMA)


# ---------------------------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def spark_session(app: str, event_log: bool = True, extra_conf: dict | None = None) -> Iterator:
    """``streamrec.spark.session.get_session`` (local[2]) with a private checkpoint dir and event log, both removed on
    exit. Yields ``(spark, event_log_dir)``; read the event log after the session stops (``stage_summary``)."""
    from streamrec.spark.session import get_session

    work = tempfile.mkdtemp(prefix=f"streamrec-{app}-")
    ckpt, events = os.path.join(work, "ckpt"), os.path.join(work, "events")
    os.makedirs(events)
    conf = dict(extra_conf or {})
    conf["spark.eventLog.enabled"] = "false"  # explicitly: a reused JVM may have it on by default
    if event_log:
        conf.update(
            {
                "spark.eventLog.enabled": "true",
                "spark.eventLog.dir": "file://" + events,
                "spark.eventLog.compress": "false",
                "spark.eventLog.rolling.enabled": "false",
            }
        )
    spark = get_session(app, checkpoint_dir=ckpt, extra_conf=conf)
    label_checkpoint_stages()
    try:
        yield spark, events
    finally:
        with contextlib.suppress(Exception):
            spark.stop()
        # stage_summary is called by the script inside the block after stopping the session; clean up after.
        shutil.rmtree(work, ignore_errors=True)


def label_checkpoint_stages() -> None:
    """Instrumentation, this process only: name the Spark stages run by ``DataFrame.localCheckpoint`` /
    ``checkpoint`` after their Python caller (``localCheckpoint at streamrec/update.py:120``), as PySpark already
    does for ``first``/``collect``/``toPandas``; otherwise they all read ``localCheckpoint at
    NativeMethodAccessorImpl.java:0`` or ``... at CompletableFuture.java`` in the event log. Behaviour unchanged."""
    from pyspark.sql.classic.dataframe import DataFrame

    for name in ("localCheckpoint", "checkpoint"):
        orig = getattr(DataFrame, name)
        if getattr(orig, "_bench_labelled", False):
            continue

        def wrapped(self, *args, _orig=orig, _name=name, **kwargs):
            frame = sys._getframe(1)
            site = f"{_name} at {_short_path(frame.f_code.co_filename)}:{frame.f_lineno}"
            sc = self.sparkSession.sparkContext
            old = sc.getLocalProperty("callSite.short"), sc.getLocalProperty("callSite.long")
            sc.setLocalProperty("callSite.short", site)
            sc.setLocalProperty("callSite.long", site)
            try:
                return _orig(self, *args, **kwargs)
            finally:
                sc.setLocalProperty("callSite.short", old[0])
                sc.setLocalProperty("callSite.long", old[1])

        wrapped._bench_labelled = True  # type: ignore[attr-defined]
        setattr(DataFrame, name, wrapped)


def _short_path(path: str) -> str:
    return path.replace(str(REPO) + "/", "").replace("/work/main/", "")


def checkpoint_model(model: FactorModel) -> FactorModel:
    """Materialise both factor tables (eager ``localCheckpoint``, as the update job does after each partition)."""
    model.users = model.users.localCheckpoint()
    model.items = model.items.localCheckpoint()
    return model


def stage_summary(events_dir: str, windows: dict[str, list[tuple[float, float]]], top: int = 4) -> dict:
    """From the Spark event log: per phase (``name -> [(t0, t1), ...]`` epoch seconds), the stages that took the most
    time, grouped by stage name (PySpark names stages by their Python call site, e.g. ``first at update.py:95``).
    Stages run concurrently at times, so the per-stage seconds of a phase can add up to more than its wall time."""
    stages = []
    for path in glob.glob(os.path.join(events_dir, "*")):
        with open(path, errors="replace") as f:
            for line in f:
                if '"SparkListenerStageCompleted"' not in line:
                    continue
                info = json.loads(line).get("Stage Info", {})
                t0, t1 = info.get("Submission Time"), info.get("Completion Time")
                if t0 is None or t1 is None:
                    continue
                name = _short_path(info.get("Stage Name", "?"))
                stages.append((t0 / 1000.0, t1 / 1000.0, name, info.get("Number of Tasks", 0)))
    out = {}
    for phase, spans in windows.items():
        agg: dict[str, list] = {}
        for t0, t1, name, tasks in stages:
            if any(a <= t0 < b for a, b in spans):
                s = agg.setdefault(name, [0.0, 0, 0])
                s[0] += t1 - t0
                s[1] += 1
                s[2] += tasks
        ranked = sorted(agg.items(), key=lambda kv: -kv[1][0])
        out[phase] = {
            "stages": sum(v[1] for v in agg.values()),
            "stage_seconds": sum(v[0] for v in agg.values()),
            "top": [{"stage": k, "seconds": v[0], "count": v[1], "tasks": v[2]} for k, v in ranked[:top]],
        }
    return out


class Phases:
    """Wall-clock windows of named phases (epoch seconds; a phase may run many times), for ``stage_summary``."""

    def __init__(self) -> None:
        self.windows: dict[str, list[tuple[float, float]]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.windows.setdefault(name, []).append((t0, time.time()))

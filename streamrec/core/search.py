r"""Hyper-parameter search for the bootstrap and the streaming update (the talk's open "hyper-parameter
estimation" problem: the step size that suits one stream diverges on another).

Two searches, each a plain random search (Bergstra & Bengio 2012: with few trials and a few parameters that
matter, random points cover each important axis better than a grid of the same size):

**Bootstrap** over rank, λ (``reg``, ALS regParam on the bias residuals) and ``iterations``. Our model is biases
plus ALS on what they leave, so every trial is our own ``bootstrap.fit`` (Spark ML's ``TrainValidationSplit``
would tune plain ALS on raw ratings, a different model). Data: everything accepted so far (the current model's
``inputs``: history plus applied partitions) **minus the store's validation hold-out** (the rows the gate judges
models on must never pick a model: that would be choosing on the test set). What is left is split again, by a
deterministic hash of ``(user, item, seed, "streamrec-tuning")``: ``fraction`` of it scores the trials, the rest
fits them. The salt makes this split independent of the store's (same xxhash64, different input), so it is
never empty even when both seeds are equal, and a rerun with the same seed picks the same rows.

**Update** over γ (``lr``), λ (``reg``, the bias regulariser), ``passes`` and ``decay``, by prequential replay
(Dawid 1984; Gama et al. 2013): the last ``replay`` partitions of the current lineage are replayed in order on a
start model, each one *predicted before it is absorbed*; the score is the pooled RMSE of those predictions. The
start model is the ancestor version whose lineage is the current one minus the replayed partitions (the model
the stream really had then), or, when there is none (e.g. after a retrain), a bootstrap on the accepted data
before the replayed partitions. The store's hold-out rows of each partition are neither absorbed nor scored,
as in the real update job.

Trial 0 of each search is the *baseline*: the parameters the pipeline would use now (stored set, else the
built-in defaults).

**The guard: a trial is adopted only when it beats the baseline by more than the noise** (:func:`decide`).
A lower score on one split is not enough: 0.3 % of RMSE on 16k scoring rows is within that split's noise, and
a search that takes the lowest of 8 noisy scores takes the luckiest draw (the winner's curse). Every trial
therefore keeps its per-row squared errors on the scoring rows (``trials/<part>-<k>.errors.parquet``; the
replay's rows are the prequential predictions of every replayed partition), and trial *k* is compared with the
baseline on the *same* rows: with ``d_r = e_k(r)² − e_0(r)²`` for each scoring row r,

    D_k = mean_r d_r   (the difference of the two MSEs; < 0: trial k predicted these rows better)

and a **paired two-way cluster bootstrap** gives its standard error: a resample draws users *and* items with
replacement (the "pigeonhole" bootstrap of crossed data, Owen 2007; row r weighs ``w_user · w_item``), because
the rows of a user share that user's fitted factors and the rows of an item share the item's: neither is a
set of independent draws, and a row-level interval is too narrow. Trial k *passes* when the upper bound of the
one-sided ``1 − α/m`` interval, ``D_k + z_{1−α/m} · se_boot(D_k)``, is below 0 (α = 5 %, m = the number of
trials compared with the baseline: Bonferroni, so that the chance of adopting *any* trial that is only
noise-level better stays ≤ α however many trials ran; the normal form of the interval, with the bootstrap's
standard error, because a percentile at α/m would need tens of thousands of resamples). Of the trials that
pass, the lowest score is adopted; when none passes, the baseline is kept and stored unchanged. A trial whose
errors are missing or not on the same rows cannot pass.

**The fit's own noise is in the comparison.** A bootstrap trial k fits with ALS seed ``seed + k`` (trial 0:
the seed itself; :func:`fit_values`). Compared at the *same* seed, a trial that moves λ by 1 % gives nearly
the same model, its per-row differences are tiny and consistent, and any paired test calls a 0.1 % gain
certain, although a refit (other rows, so another local optimum) moves the score by ten times that. Measured
(150 users, 200 items, 6000 ratings, rank 4, 5 iterations): the seed alone moved the tuning RMSE between 0.667
and 0.686 and the hold-out RMSE of a refit between 0.654 and 0.681, unrelated to each other; a 1 % change of λ
at the same seed moved it by 0.05 %. With its own seed, a trial's differences carry that initialisation
noise, and resampling users and items turns it into width: over 7 seeds against seed 42, resampling users
alone passed one of them (upper bound −0.0002), resampling both passed none (smallest upper bound +0.017).
The seed is not a tuned value: the stored set never contains it. The update is deterministic (no random
draw), so its trials share the start model and differ only by their parameters.

**Budget.** ``deadline = start + budget_minutes``; a trial that has not started by then is skipped (not failed):
:func:`budget_allows` is checked at launch time (the DAG's trial operator) and by ``bench/tuning.py``. A trial
already running is not interrupted.

Layout (bucket keys)::

    reports/tuning/<run>/plan.json               what to search, the data, the deadline
    reports/tuning/<run>/trials/<part>-<k>.json  one per finished trial
    reports/tuning/<run>/trials/<part>-<k>.errors.parquet   its per-row squared errors (the guard's input)
    reports/tuning/<run>/result.json, index.html the report (streamrec.pipeline.tuning_report)
    tuning/<run>/data/...                        the run's scratch data (Parquet) and start model
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec.core.schema import ITEM, RATING, USER

PARTS = ("bootstrap", "update")
TUNING_SALT = "streamrec-tuning"
BUCKETS = 10_000
DEFAULT_HOLDOUT = {"fraction": 0.1, "seed": 42}
"""The store hold-out assumed when there is no model yet (the bootstrap DAG's defaults)."""


# ------------------------------------------------------------------------------------------------------------
# search spaces
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dim:
    """One searched parameter: ``choices``, or a range ``[low, high]`` (``log``: uniform in log space;
    ``integer``: rounded)."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def sample(self, rng: np.random.Generator) -> Any:
        if self.choices:
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        if self.integer:
            return int(min(self.high, max(self.low, round(x))))
        return float(f"{x:.4g}")  # 4 significant digits: readable, and as good as more

    def contains(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        return self.low <= value <= self.high


SPACES: dict[str, tuple[Dim, ...]] = {
    # rank: a choice (cost grows with rank^2..3; the values people try); reg around Spark's 0.1, log-uniform.
    "bootstrap": (
        Dim("rank", choices=(5, 10, 20, 30, 50, 80)),
        Dim("reg", 0.01, 1.0, log=True),
        Dim("iterations", 5, 20, integer=True),
        # the bias shrinkages b = Σ(r − mu) / (λ + n), around the default 5 (MovieLens' best biases-only: 10..15)
        Dim("reg_user", 0.5, 50.0, log=True),
        Dim("reg_item", 0.5, 50.0, log=True),
        # the time terms (docs/TEMPORAL.md): off or on, each on its own; their λs stay at the values chosen on
        # ml-latest-small's inner split (the measured gain is in the switches, not in those λs)
        Dim("time_bin_days", choices=(0, 500, 1500)),
        Dim("user_drift", choices=(0, 1)),
        Dim("user_day", choices=(0, 1)),
    ),
    # lr <= 1 keeps the NLMS step safe (streamrec.core.sgd); reg is the bias λ, per rating, log-uniform around 5.
    "update": (
        Dim("lr", 0.1, 1.0),
        Dim("reg", 0.5, 50.0, log=True),
        Dim("passes", 1, 10, integer=True),
        Dim("decay", 0.5, 1.0),
    ),
}


def tuned_fields(part: str) -> list[str]:
    return [d.name for d in SPACES[part]]


def fit_values(part: str, values: dict, index: int) -> dict:
    """The parameters trial ``index`` of ``part`` really fits with: ``values``, and for the bootstrap the ALS
    seed ``values["seed"] + index`` (module docstring: the initialisation noise belongs in the comparison)."""
    if part == "bootstrap" and index and "seed" in values:
        return {**values, "seed": int(values["seed"]) + int(index)}
    return dict(values)


def sample_trials(part: str, n: int, seed: int, baseline: dict) -> list[dict]:
    """``n`` trials (full parameter dicts) for ``part``: trial 0 is ``baseline`` itself, the others are
    ``baseline`` with the searched fields drawn from ``SPACES[part]`` (``default_rng(seed)``; draws that repeat
    an earlier trial are drawn again, up to a limit)."""
    if n < 1:
        return []
    rng = np.random.default_rng(seed)
    names = tuned_fields(part)
    out = [dict(baseline)]
    seen = {tuple(baseline.get(k) for k in names)}
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        attempts += 1
        draw = {d.name: d.sample(rng) for d in SPACES[part]}
        sig = tuple(draw[k] for k in names)
        if sig in seen:
            continue
        seen.add(sig)
        out.append({**baseline, **draw})
    return out


# ------------------------------------------------------------------------------------------------------------
# budget
# ------------------------------------------------------------------------------------------------------------
def deadline(start_ts: float, budget_minutes: float | None) -> float | None:
    """Epoch seconds after which no trial starts; None (no limit) when the budget is None or <= 0."""
    if budget_minutes is None or budget_minutes <= 0:
        return None
    return float(start_ts) + 60.0 * float(budget_minutes)


def budget_allows(deadline_ts: float | None, now: float | None = None) -> bool:
    """True when a trial may still start (no deadline, or ``now`` before it)."""
    if deadline_ts is None:
        return True
    return (time.time() if now is None else now) < deadline_ts


def pooled_rmse(parts: Sequence[dict]) -> float | None:
    """sqrt of the mean squared error over every rating of ``parts`` (``evaluate.rmse`` dicts)."""
    n = sum(p["n"] for p in parts if p.get("rmse") is not None)
    if not n:
        return None
    return math.sqrt(sum(p["n"] * p["rmse"] ** 2 for p in parts if p.get("rmse") is not None) / n)


def choose(trials: Sequence[dict]) -> dict | None:
    """The trial with the lowest score (``rmse``); ties go to the lower index (the baseline first). This is the
    *best-scoring* trial, not the one to adopt: :func:`decide` adopts it only when it also passes the guard."""
    scored = [t for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    if not scored:
        return None
    return min(scored, key=lambda t: (t["rmse"], t["index"]))


# ------------------------------------------------------------------------------------------------------------
# the guard: per-row errors, the paired cluster bootstrap, the decision
# ------------------------------------------------------------------------------------------------------------
ALPHA = 0.05
"""Family-wise level of the guard: P(adopting a trial that is only noise-level better) <= ALPHA."""
RESAMPLES = 1000
"""Bootstrap resamples per comparison (they estimate a standard error: 1000 give it to about 2 %)."""
ERRORS_MAX_ROWS = 200_000
"""Above this many scoring rows a trial keeps a deterministic hash sample of about this many (the same rows in
every trial: the sample depends on the row, not on the trial), so the errors file stays a few MB and a
comparison a few seconds (``RESAMPLES`` × rows multiply-adds)."""
ERRORS_SALT = "streamrec-tuning-errors"
SE = "se"
SEQ = "seq"


def errors_key(trial_key: str) -> str:
    """``.../trials/<part>-<k>.json`` -> ``.../trials/<part>-<k>.errors.parquet``."""
    if not trial_key.endswith(".json"):
        raise ValueError(f"not a trial key: {trial_key!r}")
    return trial_key[: -len(".json")] + ".errors.parquet"


def error_keys(frame: pd.DataFrame) -> list[str]:
    """The columns that name a scoring row: ``seq`` (replay: the partition's position) when present, then
    user, item and rating (the rating too, so that a duplicate (user, item) pair still pairs up: its rows are
    identical in every trial)."""
    return [c for c in (SEQ, USER, ITEM, RATING) if c in frame.columns]


def sort_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (key columns + ``se``) in key order, ``se`` as float32, index reset."""
    keys = error_keys(frame)
    out = frame[[*keys, SE]].sort_values([*keys, SE], kind="mergesort").reset_index(drop=True)
    return out.astype({SE: np.float32, RATING: np.float32} if RATING in out else {SE: np.float32})


def errors_to_parquet(frame: pd.DataFrame) -> bytes:
    """One trial's per-row squared errors as Parquet bytes (:func:`sort_errors` order)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(sort_errors(frame), preserve_index=False), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def errors_from_parquet(data: bytes) -> pd.DataFrame:
    return sort_errors(pq.read_table(pa.BufferReader(data)).to_pandas())


def paired_bootstrap(
    base_se: np.ndarray,
    trial_se: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    alpha: float = ALPHA,
    seed: int = 0,
    resamples: int = RESAMPLES,
) -> dict:
    r"""One-sided paired two-way cluster bootstrap of ``D = mean(trial_se − base_se)`` (the same rows in the same
    order; ``users`` / ``items`` the user and item of each row).

    A resample draws the U users and the I items with replacement (multiplicities ``a_u``, ``b_i``:
    multinomial) and weighs row r by ``a_{u(r)} · b_{i(r)}``; its statistic is ``Σ w_r d_r / Σ w_r``.
    ``upper = D + z_{1−alpha} · sd(statistics)``; ``better``: ``upper < 0``. Pass a constant ``items`` to
    resample users only (one-way)."""
    base = np.asarray(base_se, dtype=np.float64)
    trial = np.asarray(trial_se, dtype=np.float64)
    if not (base.ndim == 1 and base.shape == trial.shape == np.shape(users) == np.shape(items)):
        raise ValueError(
            f"paired rows needed: {base.shape}, {trial.shape}, users {np.shape(users)}, items {np.shape(items)}"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(base)
    out: dict[str, Any] = {"n": n, "users": 0, "items": 0, "mean_diff": None, "se": None, "upper": None}
    out.update(alpha=alpha, z=None, resamples=resamples, better=False)
    if n < 2:
        return out
    d = trial - base
    _, gu = np.unique(np.asarray(users), return_inverse=True)
    _, gi = np.unique(np.asarray(items), return_inverse=True)
    nu, ni = int(gu.max()) + 1, int(gi.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // max(n, nu, ni))
    stats = []
    for lo in range(0, resamples, chunk):
        c = min(chunk, resamples - lo)
        a = rng.multinomial(nu, np.full(nu, 1.0 / nu), size=c).astype(np.float64)
        b = rng.multinomial(ni, np.full(ni, 1.0 / ni), size=c).astype(np.float64)
        w = a[:, gu] * b[:, gi]
        total = w.sum(axis=1)
        ok = total > 0  # a resample may miss every row (tiny inputs only): it says nothing
        stats.append((w[ok] @ d) / total[ok])
    boot = np.concatenate(stats)
    mean = float(d.mean())
    se = float(boot.std(ddof=1)) if len(boot) > 1 else math.inf
    z = NormalDist().inv_cdf(1.0 - alpha)
    upper = mean + z * se
    out.update(users=nu, items=ni, mean_diff=mean, se=se, z=z, upper=upper, better=bool(upper < 0.0))
    return out


def pair(base: pd.DataFrame, trial: pd.DataFrame) -> tuple[np.ndarray, ...] | str:
    """``(base_se, trial_se, users, items)`` of two :func:`sort_errors` frames on the same rows, or why they
    are not on the same rows (then the trial cannot be compared)."""
    keys = error_keys(base)
    if error_keys(trial) != keys:
        return f"different row keys: {keys} vs {error_keys(trial)}"
    if len(base) != len(trial):
        return f"different scoring rows: {len(base)} vs {len(trial)}"
    for k in keys:
        if not np.array_equal(base[k].to_numpy(), trial[k].to_numpy()):
            return f"different scoring rows (column {k})"
    return (
        base[SE].to_numpy(np.float64),
        trial[SE].to_numpy(np.float64),
        base[USER].to_numpy(),
        base[ITEM].to_numpy(),
    )


def rule_text(alpha: float = ALPHA) -> str:
    return (
        "A trial is adopted only when it beats the baseline (trial 0, the current parameters) by more than the "
        "noise of the scoring rows: with d = (trial's squared error − baseline's squared error) on each scoring "
        "row, the upper bound of the one-sided (1 − α/m) paired bootstrap interval of mean d (resampling users "
        "and items; each bootstrap trial fitted with its own ALS seed, so the initialisation noise is in it) "
        f"must be below 0; α = {alpha:g}, m = the number of trials compared with the baseline (Bonferroni). "
        "Of the trials that pass, the lowest score is adopted; when none passes, the current parameters are "
        "kept."
    )


def decide(
    trials: Sequence[dict], errors: dict[int, pd.DataFrame | None], alpha: float = ALPHA, seed: int = 0
) -> dict:
    """Apply the guard (module docstring) to the finished ``trials`` (dicts with ``index`` and ``rmse``) given
    each one's per-row errors (``errors[index]``, :func:`sort_errors` frames; None or absent: not available).

    Returns ``{"chosen": the adopted trial, or the baseline, or None when the baseline has no score;
    "adopted": True when a trial other than the baseline was adopted; "best": the lowest-scoring trial
    (:func:`choose`); "tests": {index: paired_bootstrap(...) or {"better": False, "reason": ...}};
    "level": α/m; "compared": m; "reason": one sentence; "rule": :func:`rule_text`}``."""
    scored = [t for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    best = choose(scored)
    base = next((t for t in scored if t["index"] == 0), None)
    out: dict[str, Any] = {"best": best, "rule": rule_text(alpha), "tests": {}, "compared": 0, "level": None}
    if base is None:
        return {**out, "chosen": None, "adopted": False, "reason": "the baseline (trial 0) has no score"}
    others = [t for t in scored if t["index"] != 0]
    m = len(others)
    level = alpha / m if m else alpha
    out.update(compared=m, level=level)
    base_err = errors.get(0)
    for t in others:
        k = t["index"]
        err = errors.get(k)
        if base_err is None or err is None:
            missing = "the baseline's" if base_err is None else "this trial's"
            out["tests"][k] = {"better": False, "reason": f"{missing} per-row errors are missing"}
            continue
        paired = pair(base_err, err)
        if isinstance(paired, str):
            out["tests"][k] = {"better": False, "reason": paired}
            continue
        out["tests"][k] = paired_bootstrap(*paired, alpha=level, seed=seed * 1000 + k)
    passing = [t for t in others if out["tests"][t["index"]].get("better")]
    if passing:
        chosen = min(passing, key=lambda t: (t["rmse"], t["index"]))
        up = out["tests"][chosen["index"]]["upper"]
        reason = (
            f"trial {chosen['index']} beats the baseline beyond the noise (upper bound {up:.3g} < 0), "
            f"{len(passing)} of {m} compared trials passed"
        )
        return {**out, "chosen": chosen, "adopted": True, "reason": reason}
    reason = (
        "no trial was compared with the baseline"
        if not m
        else f"none of the {m} trials beats the baseline beyond the noise"
    )
    return {**out, "chosen": base, "adopted": False, "reason": reason}

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
built-in defaults), so the chosen set is never worse than the current one on the tuning score.

**Budget.** ``deadline = start + budget_minutes``; a trial that has not started by then is skipped (not failed):
:func:`budget_allows` is checked at launch time (the DAG's trial operator) and by ``bench/tuning.py``. A trial
already running is not interrupted.

Layout (bucket keys)::

    reports/tuning/<run>/plan.json               what to search, the data, the deadline
    reports/tuning/<run>/trials/<part>-<k>.json  one per finished trial
    reports/tuning/<run>/result.json, index.html the report (streamrec.pipeline.tuning_report)
    tuning/<run>/data/...                        the run's scratch data (Parquet) and start model
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    """The trial with the lowest score (``rmse``); ties go to the lower index (the baseline first)."""
    scored = [t for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    if not scored:
        return None
    return min(scored, key=lambda t: (t["rmse"], t["index"]))

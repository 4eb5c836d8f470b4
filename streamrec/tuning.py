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
    reports/tuning/<run>/result.json, index.html the report (streamrec.tuning_report)
    tuning/<run>/data/...                        the run's scratch data (Parquet) and start model
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streamrec import paramsets
from streamrec.bucket import Bucket

PARTS = paramsets.PARTS
REPORTS = "reports/tuning"
SCRATCH = "tuning"
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
    # lr <= 1 keeps the NLMS step safe (streamrec.sgd); reg is the bias λ, per rating, log-uniform around 5.
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


# ------------------------------------------------------------------------------------------------------------
# the tuning split (Spark)
# ------------------------------------------------------------------------------------------------------------
def tuning_flag(fraction: float, seed: int):
    """Boolean column: True for rows that score trials (salted hash, independent of the store's hold-out)."""
    from pyspark.sql import functions as F

    from streamrec.schema import ITEM, USER

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"tuning validation fraction must be in (0, 1), got {fraction}")
    h = F.pmod(F.xxhash64(F.col(USER), F.col(ITEM), F.lit(seed), F.lit(TUNING_SALT)), F.lit(BUCKETS))
    return h < F.lit(int(round(fraction * BUCKETS)))


def without_holdout(df, holdout: dict | None):
    """``df`` minus the store's validation rows (``streamrec.split`` with the lineage's fraction and seed)."""
    from streamrec import split

    if not holdout or not holdout.get("fraction"):
        return df
    return df.where(~split.holdout_flag(float(holdout["fraction"]), int(holdout["seed"])))


def tuning_split(df, fraction: float, seed: int, holdout: dict | None):
    """``(fit, score)``: ``df`` without the store's hold-out, split by :func:`tuning_flag`."""
    rest = without_holdout(df, holdout)
    flag = tuning_flag(fraction, seed)
    return rest.where(~flag), rest.where(flag)


# ------------------------------------------------------------------------------------------------------------
# one trial (Spark)
# ------------------------------------------------------------------------------------------------------------
def bootstrap_trial(fit_df, score_df, params, scale) -> dict:
    """Fit ``bootstrap.fit(fit_df, params)``; RMSE/MAE on ``score_df``; wall seconds of fit and score."""
    from streamrec import bootstrap, evaluate

    t0 = time.perf_counter()
    model = bootstrap.fit(fit_df, params)
    model.users, model.items = model.users.localCheckpoint(), model.items.localCheckpoint()
    fit_s = time.perf_counter() - t0
    m = evaluate.rmse(model, score_df, scale)
    return {
        "rmse": m["rmse"],
        "mae": m["mae"],
        "n": m["n"],
        "fallbacks": m["fallbacks"],
        "fit_seconds": round(fit_s, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def pooled_rmse(parts: Sequence[dict]) -> float | None:
    """sqrt of the mean squared error over every rating of ``parts`` (``evaluate.rmse`` dicts)."""
    n = sum(p["n"] for p in parts if p.get("rmse") is not None)
    if not n:
        return None
    return math.sqrt(sum(p["n"] * p["rmse"] ** 2 for p in parts if p.get("rmse") is not None) / n)


def replay_trial(start, partitions: Sequence[tuple[str, Any]], params, scale) -> dict:
    """Prequential replay: for each ``(id, ratings)`` in order, score ``start`` on it, then absorb it with
    ``update.apply(…, params)`` (``update.apply_many``: one Spark job). Returns the pooled RMSE and each
    partition's metrics."""
    from streamrec import update

    t0 = time.perf_counter()
    _, scores = update.apply_many(start, [df for _, df in partitions], params, scale)
    per = dict(zip([pid for pid, _ in partitions], scores, strict=True))
    parts = list(per.values())
    n = sum(p["n"] for p in parts)
    mae = sum(p["n"] * p["mae"] for p in parts if p["mae"] is not None) / n if n else None
    return {
        "rmse": pooled_rmse(parts),
        "mae": mae,
        "n": n,
        "per_partition": {pid: {"rmse": p["rmse"], "n": p["n"]} for pid, p in per.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ------------------------------------------------------------------------------------------------------------
# the plan (no Spark): what a tuning run searches, on which data
# ------------------------------------------------------------------------------------------------------------
def run_prefix(run: str) -> str:
    return f"{REPORTS}/{paramsets.check_name(run)}"


def plan_key(run: str) -> str:
    return f"{run_prefix(run)}/plan.json"


def trial_key(run: str, part: str, index: int) -> str:
    return f"{run_prefix(run)}/trials/{part}-{index:03d}.json"


def scratch(run: str, name: str) -> str:
    return f"{SCRATCH}/{paramsets.check_name(run)}/{name}"


def _start_version(store, lineage: dict, keep: list[str]) -> str | None:
    """The ancestor of the current version (following ``parent``) whose partitions are exactly ``keep``."""
    version: str | None = lineage["version"]
    seen = set()
    while version and version not in seen:
        seen.add(version)
        try:
            m = store.read_manifest(version)
        except LookupError:
            return None
        if list(m.get("partitions") or []) == keep:
            return version
        version = m.get("parent")
    return None


def make_plan(
    bucket: Bucket | str,
    run: str,
    part: str,
    n_trials: int,
    seed: int,
    budget_minutes: float | None,
    start_ts: float,
    replay: int = 5,
    fraction: float = 0.2,
    param_set: str | None = paramsets.DEFAULT_NAME,
    history: str = "ratings/history",
) -> dict:
    """Decide what the run does and write ``plan.json``: the data (inputs of the current model, its hold-out,
    the partitions to replay and where to start them), and each part's trials (``part``: bootstrap, update or
    both). A part that cannot run says why in ``notes`` and gets no trials."""
    from streamrec.store import ModelStore

    b = Bucket.from_uri(bucket)
    store = ModelStore(b)
    wanted = list(PARTS) if part == "both" else [part]
    if any(p not in PARTS for p in wanted):
        raise ValueError(f"part must be bootstrap, update or both, got {part!r}")
    if n_trials < 1:
        raise ValueError(f"trials must be >= 1, got {n_trials}")
    current = store.current()
    notes: list[str] = []
    if current:
        m = store.read_manifest(current)
        inputs = list(m.get("inputs") or [])
        applied = list(m.get("partitions") or [])
        holdout = m.get("holdout")
        scale = (m.get("params") or {}).get("scale") or "0.5:5:0.5"
    else:
        inputs, applied, holdout, scale = [b.spark_uri(history)], [], dict(DEFAULT_HOLDOUT), "0.5:5:0.5"
        notes.append(f"no published model: tuning on {history} with the default hold-out {DEFAULT_HOLDOUT}")
    holdout = {"fraction": holdout["fraction"], "seed": holdout["seed"]} if holdout else None
    part_uris = inputs[len(inputs) - len(applied) :] if applied else []
    stored = paramsets.load(b, param_set)
    plan: dict[str, Any] = {
        "run": run,
        "bucket": b.uri(),
        "part": part,
        "current": current,
        "scale": scale,
        "holdout": holdout,
        "fraction": fraction,
        "seed": seed,
        "budget_minutes": budget_minutes,
        "start_ts": start_ts,
        "deadline": deadline(start_ts, budget_minutes),
        "param_set": param_set,
        "param_set_digest": (stored or {}).get("digest"),
        "notes": notes,
        "trials": {p: [] for p in PARTS},
    }
    boot_base, _ = paramsets.resolve("bootstrap", None, stored)
    if "bootstrap" in wanted:
        plan["bootstrap"] = {
            "inputs": inputs,
            "fit": b.spark_uri(scratch(run, "data/fit")),
            "score": b.spark_uri(scratch(run, "data/score")),
        }
        plan["trials"]["bootstrap"] = sample_trials("bootstrap", n_trials, seed, boot_base.as_dict())
    if "update" in wanted:
        k = min(replay, len(applied))
        if k < 1:
            notes.append("update: the current model has absorbed no partition, nothing to replay: skipped")
        else:
            keep = applied[: len(applied) - k]
            start = _start_version(store, {"version": current}, keep)
            upd_base, _ = paramsets.resolve("update", None, stored)
            plan["update"] = {
                "replay": [
                    {"id": pid, "uri": uri, "data": b.spark_uri(scratch(run, f"data/replay/{i:03d}"))}
                    for i, (pid, uri) in enumerate(zip(applied[-k:], part_uris[-k:], strict=True))
                ],
                "start_version": start,
                "start_inputs": None if start else inputs[: len(inputs) - k],
                "start_params": None if start else boot_base.as_dict(),
                "start_store": b.spark_uri(scratch(run, "start")) if not start else None,
            }
            if not start:
                notes.append(
                    f"update: no ancestor holds exactly the lineage before the last {k} partitions: "
                    "the start model is a bootstrap on the data before them"
                )
            plan["trials"]["update"] = sample_trials("update", n_trials, seed + 1, upd_base.as_dict())
    b.write_json(plan_key(run), plan)
    return plan


# ------------------------------------------------------------------------------------------------------------
# prepare and run trials (Spark; jobs/tune_trial.py)
# ------------------------------------------------------------------------------------------------------------
def prepare(spark, bucket: Bucket | str, run: str) -> dict:
    """Materialise the run's data once: the bootstrap's fit/score split, each replayed partition without its
    hold-out, and (when no ancestor version fits) the replay's start model. Returns row counts."""
    from streamrec.loader import read_ratings
    from streamrec.model import BootstrapParams
    from streamrec.runs import bootstrap_version
    from streamrec.schema import RatingScale
    from streamrec.store import ModelStore

    b = Bucket.from_uri(bucket)
    plan = b.read_json(plan_key(run))
    scale = RatingScale.parse(plan["scale"])
    out: dict[str, Any] = {}
    if plan.get("bootstrap"):
        p = plan["bootstrap"]
        df = read_ratings(spark, p["inputs"], scale)
        fit, score = tuning_split(df, plan["fraction"], plan["seed"], plan["holdout"])
        fit.write.mode("overwrite").parquet(p["fit"])
        score.write.mode("overwrite").parquet(p["score"])
        out["bootstrap"] = {
            "fit_rows": spark.read.parquet(p["fit"]).count(),
            "score_rows": spark.read.parquet(p["score"]).count(),
        }
    if plan.get("update"):
        u = plan["update"]
        rows = {}
        for r in u["replay"]:
            df = without_holdout(read_ratings(spark, r["uri"], scale), plan["holdout"])
            df.write.mode("overwrite").parquet(r["data"])
            rows[r["id"]] = spark.read.parquet(r["data"]).count()
        out["update"] = {"replay_rows": rows}
        if not u["start_version"]:
            # train rows only: bootstrap_version's own hold-out (same fraction and seed) removes them again
            from streamrec.runs import Holdout

            h = plan["holdout"]
            hold = (
                Holdout(b.spark_uri(scratch(run, "start-validation")), h["fraction"], h["seed"])
                if h
                else None
            )
            m = bootstrap_version(
                spark,
                ModelStore(u["start_store"]),
                u["start_inputs"],
                BootstrapParams.from_dict(u["start_params"]),
                version="start",
                scale=scale,
                kind="bootstrap",
                holdout=hold,
            )
            out["update"]["start_model"] = {"n_ratings": m.get("n_ratings"), "store": u["start_store"]}
    b.write_json(f"{run_prefix(run)}/prepared.json", out)
    return out


def run_trial(spark, bucket: Bucket | str, run: str, part: str, index: int, params) -> dict:
    """Run trial ``index`` of ``part`` with ``params`` (a ``BootstrapParams`` / ``UpdateParams``) on the data
    :func:`prepare` wrote, write ``trials/<part>-<index>.json`` and return it."""
    from streamrec.schema import RatingScale
    from streamrec.store import ModelStore

    b = Bucket.from_uri(bucket)
    plan = b.read_json(plan_key(run))
    scale = RatingScale.parse(plan["scale"])
    t0 = time.time()
    if part == "bootstrap":
        p = plan["bootstrap"]
        fit = spark.read.parquet(p["fit"]).cache()
        score = spark.read.parquet(p["score"]).cache()
        scores = bootstrap_trial(fit, score, params, scale)
        fit.unpersist(), score.unpersist()
    elif part == "update":
        u = plan["update"]
        if u["start_version"]:
            start = ModelStore(b).load_model(spark, u["start_version"])
        else:
            start = ModelStore(u["start_store"]).load_model(spark, "start")
        parts = [(r["id"], spark.read.parquet(r["data"])) for r in u["replay"]]
        scores = replay_trial(start, parts, params, scale)
    else:
        raise ValueError(f"part must be bootstrap or update, got {part!r}")
    doc = {
        "run": run,
        "part": part,
        "index": index,
        "params": params.as_dict(),
        "tuned": {k: params.as_dict()[k] for k in tuned_fields(part)},
        "baseline": index == 0,
        "started_at": datetime.fromtimestamp(t0, UTC).isoformat(timespec="seconds"),
        **scores,
    }
    if doc.get("rmse") is not None and not math.isfinite(doc["rmse"]):
        doc["rmse"] = None
    b.write_json(trial_key(run, part, index), doc)
    return doc


# ------------------------------------------------------------------------------------------------------------
# choose, report, store (no Spark)
# ------------------------------------------------------------------------------------------------------------
def choose(trials: Sequence[dict]) -> dict | None:
    """The trial with the lowest score (``rmse``); ties go to the lower index (the baseline first)."""
    scored = [t for t in trials if t.get("rmse") is not None and math.isfinite(t["rmse"])]
    if not scored:
        return None
    return min(scored, key=lambda t: (t["rmse"], t["index"]))


def collect(bucket: Bucket | str, run: str) -> dict[str, list[dict]]:
    """The finished trials of a run, per part, by index."""
    b = Bucket.from_uri(bucket)
    out: dict[str, list[dict]] = {p: [] for p in PARTS}
    for obj in b.list(f"{run_prefix(run)}/trials"):
        if obj.key.endswith(".json"):
            t = b.read_json(obj.key)
            out.setdefault(t["part"], []).append(t)
    for trials in out.values():
        trials.sort(key=lambda t: t["index"])
    return out


def finish(
    bucket: Bucket | str, run: str, name: str | None = paramsets.DEFAULT_NAME, when: datetime | None = None
) -> dict:
    """Choose per part, write the report (``result.json`` + ``index.html``) and, when ``name`` is given and
    something was chosen, store the chosen values as parameter set ``name``. Returns the result document."""
    from streamrec import tuning_report

    b = Bucket.from_uri(bucket)
    plan = b.read_json(plan_key(run))
    found = collect(b, run)
    when = when or datetime.now(UTC)
    parts: dict[str, Any] = {}
    values: dict[str, dict] = {}
    tuning_meta: dict[str, dict] = {}
    for part in PARTS:
        planned = plan["trials"].get(part) or []
        if not planned:
            continue
        trials = found.get(part, [])
        done = {t["index"] for t in trials}
        best = choose(trials)
        baseline = next((t for t in trials if t["index"] == 0), None)
        parts[part] = {
            "planned": len(planned),
            "finished": len(trials),
            "not_run": [i for i in range(len(planned)) if i not in done],
            "space": [asdict(d) for d in SPACES[part]],
            "trials": trials,
            "chosen": best,
            "baseline": baseline,
            "improvement": (
                baseline["rmse"] - best["rmse"]
                if best and baseline and baseline.get("rmse") is not None
                else None
            ),
        }
        if best is not None:
            values[part] = dict(best["tuned"])
            tuning_meta[part] = {
                "run": run,
                "report": b.uri(f"{run_prefix(run)}/index.html"),
                "chosen_trial": best["index"],
                "score": best["rmse"],
                "baseline_score": baseline["rmse"] if baseline else None,
                "metric": "RMSE on the tuning split"
                if part == "bootstrap"
                else "pooled prequential RMSE of the replayed partitions",
                "trials": len(trials),
            }
    stored = None
    if name and str(name).strip().lower() not in paramsets.NO_SET and values:
        stored = paramsets.save(b, name, values, tuning_meta, when)
    result = {
        "run": run,
        "finished_at": when.astimezone(UTC).isoformat(timespec="seconds"),
        "plan": {k: v for k, v in plan.items() if k != "trials"},
        "parts": parts,
        "param_set": stored,
        "param_set_key": paramsets.key(name) if stored else None,
    }
    b.write_json(f"{run_prefix(run)}/result.json", result)
    result["report"] = b.uri(tuning_report.write(b, run, result))
    return result

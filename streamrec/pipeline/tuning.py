"""A tuning run as the DAG sees it: the plan (what to search, on which data), then, once the trials ran
(``jobs/tune_trial.py``, :mod:`streamrec.spark.tuning`), the choice, the report and the stored parameter set.
The search itself (spaces, sampling, budget, the choice rule and its guard) is :mod:`streamrec.core.search`.

The choice is guarded (``search.decide``): a trial is adopted only when its per-row squared errors beat the
baseline's on the same scoring rows by more than their noise; otherwise the baseline (the parameters in use
when the run started) is stored again, unchanged. So a tuning run never stores parameters that its own
held-back rows do not show to be better than the ones it started from.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from streamrec.core import layout
from streamrec.core.search import (
    ALPHA,
    DEFAULT_HOLDOUT,
    PARTS,
    SPACES,
    budget_allows,
    choose,
    deadline,
    decide,
    errors_from_parquet,
    errors_key,
    pooled_rmse,
    sample_trials,
    tuned_fields,
)
from streamrec.pipeline import tuning_report
from streamrec.storage import paramsets
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore

__all__ = [
    "budget_allows",
    "choose",
    "deadline",
    "decide",
    "pooled_rmse",
    "sample_trials",
    "tuned_fields",
    "SPACES",
]


# ------------------------------------------------------------------------------------------------------------
# the plan (no Spark): what a tuning run searches, on which data
# ------------------------------------------------------------------------------------------------------------
run_prefix = layout.tuning_run
plan_key = layout.tuning_plan
trial_key = layout.tuning_trial
scratch = layout.tuning_scratch


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
# collect, report, store
# ------------------------------------------------------------------------------------------------------------
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


def load_errors(bucket: Bucket | str, run: str, part: str, index: int):
    """The per-row squared errors a trial stored next to its JSON (``search.errors_key``), or None."""
    b = Bucket.from_uri(bucket)
    try:
        return errors_from_parquet(b.read_bytes(errors_key(trial_key(run, part, index))))
    except FileNotFoundError:
        return None


def finish(
    bucket: Bucket | str,
    run: str,
    name: str | None = paramsets.DEFAULT_NAME,
    when: datetime | None = None,
    alpha: float = ALPHA,
) -> dict:
    """Decide per part (``search.decide``: the guard), write the report (``result.json`` + ``index.html``) and,
    when ``name`` is given and a part has a decision, store it as parameter set ``name``: the adopted trial's
    values, or the baseline's (the parameters the run started from) when no trial passed the guard. Returns
    the result document."""
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
        errors = {t["index"]: load_errors(b, run, part, t["index"]) for t in trials}
        verdict = decide(trials, errors, alpha=alpha, seed=int(plan.get("seed") or 0))
        best, baseline = verdict["chosen"], next((t for t in trials if t["index"] == 0), None)
        for t in trials:
            t["guard"] = verdict["tests"].get(t["index"])
        parts[part] = {
            "planned": len(planned),
            "finished": len(trials),
            "not_run": [i for i in range(len(planned)) if i not in done],
            "space": [asdict(d) for d in SPACES[part]],
            "trials": trials,
            "chosen": best,
            "baseline": baseline,
            "best_score": verdict["best"],
            "adopted": verdict["adopted"],
            "reason": verdict["reason"],
            "rule": verdict["rule"],
            "compared": verdict["compared"],
            "level": verdict["level"],
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
                "adopted": verdict["adopted"],
                "reason": verdict["reason"],
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

"""Tuned vs default streaming update, by the tuning DAG's replay search and its guard, judged on later partitions.

    python bench/tuning_update.py [--ratings PATH] [--scale 1:5:1] [--trials 8] [--budget-minutes 10]
        [--batch-size 1000] [--replay 5] [--test-partitions 10] [--history-fraction 0.5] [--seed 42]

Protocol: every rating in time order (``common.time_order``, stable: file order for ties). The first
``--history-fraction`` is the history: ``bootstrap.fit`` (default ``BootstrapParams``) on it is the start model,
as the stream had it. The rest is cut into partitions of ``--batch-size`` ratings. The search replays the first
``--replay`` partitions, exactly as the tuning DAG's update trials do (``streamrec.spark.tuning.replay_trial``:
each partition predicted before it is absorbed; trial 0 the default ``UpdateParams``, the others drawn by
``sample_trials("update", …, seed + 1)``), and the guard (``streamrec.core.search.decide``: paired two-way
bootstrap of the per-row prequential squared errors against the baseline's) decides what is adopted. Held back:
the next ``--test-partitions`` partitions, which no trial saw. The default and the adopted parameters (and the
lowest-scoring trial, when the guard did not adopt it) each stream from the start model through the replayed
partitions and on through the held-back ones; the score is the pooled prequential RMSE of the held-back
partitions. Prints progress lines, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import os
import time

import common

from streamrec.core import search
from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.spark import bootstrap, tuning


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_data_args(ap)
    ap.add_argument("--trials", type=int, default=8, help="trials, the first one the defaults (default 8)")
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="no trial starts after this (0: none)")
    ap.add_argument("--seed", type=int, default=42, help="the draws use seed + 1, as the tuning DAG's plan")
    ap.add_argument("--batch-size", type=int, default=1000, help="ratings per partition")
    ap.add_argument("--replay", type=int, default=5, help="partitions the search replays")
    ap.add_argument("--test-partitions", type=int, default=10, help="held-back partitions after them")
    ap.add_argument("--history-fraction", type=float, default=0.5, help="share of the ratings bootstrapped")
    args = ap.parse_args(argv)
    code = common.code_version()
    say = common.Progress("tuning-update")
    load0 = common.machine()
    data = common.load(args.ratings, args.scale, say)
    scale = data.scale
    ordered = common.time_order(data.ratings)
    n_hist = int(len(ordered) * args.history_fraction)
    history, rest = ordered.iloc[:n_hist], ordered.iloc[n_hist:]
    bs = args.batch_size
    chunks = [rest.iloc[s : s + bs] for s in range(0, len(rest), bs)]
    need = args.replay + args.test_partitions
    if len(chunks) < need:
        raise SystemExit(f"{len(chunks)} partitions of {bs} after the history, {need} needed")
    replayed, held = chunks[: args.replay], chunks[args.replay : need]
    say(
        f"{len(ordered)} ratings: history {len(history)}, replayed {sum(map(len, replayed))} in {len(replayed)} "
        f"partitions, held back {sum(map(len, held))} in {len(held)}"
    )
    default = UpdateParams()
    with common.spark_session("bench-tuning-update", event_log=False) as (spark, _):
        t0 = time.perf_counter()
        start = common.checkpoint_model(bootstrap.fit(common.to_spark(spark, history), BootstrapParams()))
        start_seconds = common.seconds(t0)
        say(f"start model: bootstrap on the history ({start_seconds:.0f}s)")
        replay_parts = [(f"r{k}", common.to_spark(spark, c).cache()) for k, c in enumerate(replayed)]
        held_parts = [(f"h{k}", common.to_spark(spark, c).cache()) for k, c in enumerate(held)]

        t0 = time.perf_counter()
        deadline = search.deadline(time.time(), args.budget_minutes)
        trials, errors = [], {}
        for k, values in enumerate(
            search.sample_trials("update", args.trials, args.seed + 1, default.as_dict())
        ):
            tuned = {n: values[n] for n in search.tuned_fields("update")}
            if not search.budget_allows(deadline):
                say(f"trial {k} {tuned}: skipped (budget of {args.budget_minutes} min used)")
                trials.append({"index": k, "tuned": tuned, "rmse": None, "skipped": True})
                continue
            params = UpdateParams.from_dict(search.fit_values("update", values, k))
            res = tuning.replay_trial(start, replay_parts, params, scale, errors=True)
            errors[k] = res.pop("errors")
            trials.append({"index": k, "tuned": tuned, **res})
            say(f"trial {k} {tuned}: prequential RMSE {res['rmse']:.4f} ({res['seconds']:.1f}s)")
        verdict = search.decide(trials, errors)
        tuning_seconds = common.seconds(t0)
        best, adopted = verdict["best"], verdict["chosen"]
        assert adopted is not None, "the baseline (trial 0) must have run"
        for t in trials:
            t["guard"] = verdict["tests"].get(t["index"])
        say(
            f"lowest score: trial {best['index']} {best['tuned']}; {verdict['reason']} ({tuning_seconds:.0f}s)"
        )

        final = {}
        runs = [
            ("default", default),
            ("tuned", UpdateParams.from_dict({**default.as_dict(), **adopted["tuned"]})),
        ]
        if best["index"] not in (0, adopted["index"]):
            runs.append(("lowest_score", UpdateParams.from_dict({**default.as_dict(), **best["tuned"]})))
        for label, params in runs:
            if label == "tuned" and params == default:
                final[label] = {**final["default"], "same_as_default": True}
                say(
                    f"tuned = default (the guard kept the baseline): held-back RMSE {final[label]['rmse']:.4f}"
                )
                continue
            t1 = time.perf_counter()
            res = tuning.replay_trial(start, replay_parts + held_parts, params, scale)
            per = [res["per_partition"][pid] for pid, _ in held_parts]
            final[label] = {
                "params": params.as_dict(),
                "rmse": search.pooled_rmse(per),
                "n": sum(p["n"] for p in per),
                "per_partition": [p["rmse"] for p in per],
                "seconds": common.seconds(t1),
            }
            say(f"{label} {params}: held-back prequential RMSE {final[label]['rmse']:.4f}")

    result = {
        "data": data.label,
        "code": code,
        "protocol": (
            f"time order; history {args.history_fraction:g} bootstrapped (default BootstrapParams); partitions of "
            f"{bs}; replay {args.replay} (the search), held back the next {args.test_partitions}"
        ),
        "n_history": len(history),
        "n_replayed": sum(map(len, replayed)),
        "n_held_back": sum(map(len, held)),
        "start_model_seconds": start_seconds,
        "search": {
            "trials_requested": args.trials,
            "trials_run": sum(1 for t in trials if not t.get("skipped")),
            "trials_skipped_by_budget": sum(1 for t in trials if t.get("skipped")),
            "budget_minutes": args.budget_minutes,
            "seed": args.seed + 1,
            "score": "pooled prequential RMSE of the replayed partitions (tuning.replay_trial)",
            "rule": verdict["rule"],
            "compared": verdict["compared"],
            "level": verdict["level"],
            "trials": trials,
            "lowest_score": best,
            "adopted": verdict["adopted"],
            "chosen": adopted,
            "reason": verdict["reason"],
        },
        "tuning_wall_seconds": tuning_seconds,
        "held_back_rmse_default": final["default"]["rmse"],
        "held_back_rmse_tuned": final["tuned"]["rmse"],
        "held_back_rmse_gain": final["default"]["rmse"] - final["tuned"]["rmse"],
        "held_back_rmse_lowest_score_unguarded": final.get("lowest_score", final["tuned"])["rmse"]
        if best["index"]
        else final["default"]["rmse"],
        "tuned_not_worse_on_held_back": final["tuned"]["rmse"] <= final["default"]["rmse"],
        "final": final,
        "machine": {"start": load0, "end_loadavg_1_5_15": list(os.getloadavg())},
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

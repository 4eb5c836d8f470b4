"""Tuned vs default bootstrap on the accuracy benchmark's split, and what the tuning cost.

    python bench/tuning.py [--ratings PATH] [--scale 1:5:1] [--trials 8] [--budget-minutes 10] [--seed 42]

Split: ``common.split`` (the accuracy benchmark's: file order, ``default_rng(42).permutation(n)``, first 20 %
test, test rows with a user or item unseen in train dropped). The search sees **only the train 80 %**: it splits
it again with ``streamrec.spark.tuning.tuning_split`` (salted hash, ``--fraction`` scores the trials) and runs the
tuning DAG's random search in-process, with the same functions (``sample_trials``, ``budget_allows``,
``fit_values`` (each trial its own ALS seed), ``bootstrap_trial`` with its per-row errors, and the guard
``decide``): trial 0 is the default ``BootstrapParams``. Then the default and the *adopted* parameters (the
default itself when the guard kept it) are each fitted on the whole train 80 % and scored on the test 20 %,
which no trial ever saw; so is the lowest-scoring trial when it differs (what the search chose before the guard),
to show what the guard kept out. Prints progress lines, then one JSON object on the last line.

Last line: one JSON object with the top-level keys ``data``, ``code``, ``split``, ``n_train``, ``n_test``,
``search``, ``tuning_wall_seconds``, ``test_rmse_default``, ``test_rmse_tuned``, ``test_rmse_gain``, ``final``,
``machine``.

``--smoke``: tiny generated data (``common.SYNTH_SMOKE``) and a rank-4, 2-iteration default (trial 0; with
``--trials 1``: the test suite's check that the script runs, ``tests/test_bench.py``).
"""

from __future__ import annotations

import argparse
import os
import time

import common

from streamrec.core import search
from streamrec.core.params import BootstrapParams
from streamrec.spark import bootstrap, evaluate, tuning


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_data_args(ap)
    ap.add_argument("--trials", type=int, default=8, help="trials, the first one the defaults (default 8)")
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="no trial starts after this (0: none)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the draws and of the tuning split")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of train that scores the trials")
    args = ap.parse_args(argv)
    code = common.code_version()
    say = common.Progress("tuning")
    load0 = common.machine()
    data = common.load(args.ratings, args.scale, say, smoke=args.smoke)
    scale = data.scale
    sp = common.split(data.ratings)
    say(
        f"{len(data.ratings)} ratings: train {len(sp.train)}, test {len(sp.test_known)} (dropped {sp.dropped})"
    )
    default = BootstrapParams(rank=4, iterations=2) if args.smoke else BootstrapParams()
    with common.spark_session("bench-tuning", event_log=False) as (spark, _):
        train = common.to_spark(spark, sp.train).cache()
        test = common.to_spark(spark, sp.test_known).cache()
        fit, score = tuning.tuning_split(train, args.fraction, args.seed, holdout=None)
        fit, score = fit.cache(), score.cache()
        say(f"tuning split of train: fit {fit.count()}, score {score.count()}")

        t0 = time.perf_counter()
        deadline = search.deadline(time.time(), args.budget_minutes)
        trials, errors = [], {}
        for k, values in enumerate(
            search.sample_trials("bootstrap", args.trials, args.seed, default.as_dict())
        ):
            tuned = {n: values[n] for n in search.tuned_fields("bootstrap")}
            if not search.budget_allows(deadline):
                say(f"trial {k} {tuned}: skipped (budget of {args.budget_minutes} min used)")
                trials.append({"index": k, "tuned": tuned, "rmse": None, "skipped": True})
                continue
            params = BootstrapParams.from_dict(search.fit_values("bootstrap", values, k))
            res = tuning.bootstrap_trial(fit, score, params, scale, errors=True)
            errors[k] = res.pop("errors")
            trials.append({"index": k, "tuned": tuned, "fit_seed": params.seed, **res})
            say(f"trial {k} {tuned}: score RMSE {res['rmse']:.4f} ({res['seconds']:.1f}s)")
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
            ("tuned", BootstrapParams.from_dict({**default.as_dict(), **adopted["tuned"]})),
        ]
        if best["index"] not in (0, adopted["index"]):
            runs.append(("lowest_score", BootstrapParams.from_dict({**default.as_dict(), **best["tuned"]})))
        for label, params in runs:
            if label == "tuned" and params == default:
                final[label] = {**final["default"], "same_as_default": True}
                say(
                    f"tuned = default (the guard kept the baseline): test RMSE {final[label]['test_rmse']:.4f}"
                )
                continue
            t1 = time.perf_counter()
            model = common.checkpoint_model(bootstrap.fit(train, params))
            fit_s = common.seconds(t1)
            m = evaluate.rmse(model, test, scale)
            final[label] = {
                "params": params.as_dict(),
                "test_rmse": m["rmse"],
                "test_mae": m["mae"],
                "fit_seconds": fit_s,
            }
            say(f"{label} {params}: test RMSE {m['rmse']:.4f} (fit {fit_s:.1f}s)")

    result = {
        "data": data.label,
        "code": code,
        "split": "file order, numpy.random.default_rng(42).permutation(n), first round(0.2 n) test (bench/common.py)",
        "n_train": len(sp.train),
        "n_test": len(sp.test_known),
        "search": {
            "trials_requested": args.trials,
            "trials_run": sum(1 for t in trials if not t.get("skipped")),
            "trials_skipped_by_budget": sum(1 for t in trials if t.get("skipped")),
            "budget_minutes": args.budget_minutes,
            "seed": args.seed,
            "score": f"RMSE on a {args.fraction:g} salted-hash share of train (tuning.tuning_split)",
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
        "test_rmse_default": final["default"]["test_rmse"],
        "test_rmse_tuned": final["tuned"]["test_rmse"],
        "test_rmse_gain": final["default"]["test_rmse"] - final["tuned"]["test_rmse"],
        "test_rmse_lowest_score_unguarded": final.get("lowest_score", final["tuned"])["test_rmse"]
        if best["index"]
        else final["default"]["test_rmse"],
        "tuned_not_worse_on_test": final["tuned"]["test_rmse"] <= final["default"]["test_rmse"],
        "final": final,
        "machine": {"start": load0, "end_loadavg_1_5_15": list(os.getloadavg())},
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

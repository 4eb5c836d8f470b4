"""Tuned vs default bootstrap on the accuracy benchmark's split, and what the tuning cost.

    python bench/tuning.py [--ratings PATH] [--trials 8] [--budget-minutes 10] [--seed 42]

Split: ``common.split`` (the accuracy benchmark's: file order, ``default_rng(42).permutation(n)``, first 20 %
test, test rows with a user or item unseen in train dropped). The search sees **only the train 80 %**: it splits
it again with ``streamrec.spark.tuning.tuning_split`` (salted hash, ``--fraction`` scores the trials) and runs the
tuning DAG's random search in-process, with the same functions (``sample_trials``, ``budget_allows``,
``bootstrap_trial``, ``choose``): trial 0 is the default ``BootstrapParams``. Then the default and the chosen
parameters are each fitted on the whole train 80 % and scored on the test 20 %, which no trial ever saw.
Prints progress lines, then one JSON object on the last line.

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
from streamrec.spark import bootstrap, evaluate
from streamrec.spark import tuning as trials_spark


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
        fit, score = trials_spark.tuning_split(train, args.fraction, args.seed, holdout=None)
        fit, score = fit.cache(), score.cache()
        say(f"tuning split of train: fit {fit.count()}, score {score.count()}")

        t0 = time.perf_counter()
        deadline = search.deadline(time.time(), args.budget_minutes)
        trials = []
        for k, values in enumerate(
            search.sample_trials("bootstrap", args.trials, args.seed, default.as_dict())
        ):
            tuned = {n: values[n] for n in search.tuned_fields("bootstrap")}
            if not search.budget_allows(deadline):
                say(f"trial {k} {tuned}: skipped (budget of {args.budget_minutes} min used)")
                trials.append({"index": k, "tuned": tuned, "rmse": None, "skipped": True})
                continue
            res = trials_spark.bootstrap_trial(fit, score, BootstrapParams.from_dict(values), scale)
            trials.append({"index": k, "tuned": tuned, **res})
            say(f"trial {k} {tuned}: score RMSE {res['rmse']:.4f} ({res['seconds']:.1f}s)")
        best = search.choose(trials)
        tuning_seconds = common.seconds(t0)
        assert best is not None
        chosen = BootstrapParams.from_dict({**default.as_dict(), **best["tuned"]})
        say(f"chosen trial {best['index']}: {best['tuned']} after {tuning_seconds:.0f}s")

        final = {}
        for label, params in (("default", default), ("tuned", chosen)):
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
            "score": f"RMSE on a {args.fraction:g} salted-hash share of train (streamrec.spark.tuning.tuning_split)",
            "trials": trials,
            "chosen": best,
        },
        "tuning_wall_seconds": tuning_seconds,
        "test_rmse_default": final["default"]["test_rmse"],
        "test_rmse_tuned": final["tuned"]["test_rmse"],
        "test_rmse_gain": final["default"]["test_rmse"] - final["tuned"]["test_rmse"],
        "final": final,
        "machine": {"start": load0, "end_loadavg_1_5_15": list(os.getloadavg())},
    }
    common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

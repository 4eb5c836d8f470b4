"""Catch-up batching: N partitions folded as one batch (``update.apply_batch``, what a run with
``max_partitions_per_run`` = N does) against N updates of one partition (the default of 1 per run), in one
Python process, on generated data.

    .venv/bin/python bench/batch.py [--partitions 25] [--partition-size 500] [--history 20000]

Both start from the same bootstrapped model and apply the same partitions in the same order through
``runs.update_version`` (the update job's code); the batched model and the one-by-one model are then compared
(``bit_identical``: every id, count, bias, factor, mu and n equal; the largest absolute difference; the
validation RMSE of each), so the speed-up is shown to buy the same result. Only ``update_version`` is timed (not
the session start, not the evaluation). Prints one JSON object on its last line.

Last line: one JSON object with the top-level keys ``partitions``, ``partition_size``, ``history``,
``batched_s``, ``one_by_one_s``, ``speedup``, ``bit_identical``, ``max_abs_diff``, ``validation_rmse``,
``validation_rmse_diff``, ``machine``, ``code``.

``--smoke``: 2 partitions of 100 ratings after a history of 1,500 (100 users x 120 items), a rank-4,
2-iteration bootstrap: the test suite's check that the script runs (``tests/test_bench.py``), not a measurement.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from reliability_faults import compare  # noqa: E402  (the bit-for-bit model comparison of the fault benches)

SMOKE = {"partitions": 2, "partition_size": 100, "history": 1_500, "users": 100, "items": 120}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=25)
    ap.add_argument("--partition-size", type=int, default=500)
    ap.add_argument("--history", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds; numbers meaningless): see above")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    say = common.Progress("batch")

    from streamrec.core.params import BootstrapParams
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.spark import runs
    from streamrec.storage.store import ModelStore

    work = Path(tempfile.mkdtemp(prefix="streamrec-batch-"))
    try:
        total = args.history + args.partitions * args.partition_size
        cfg = SynthConfig(n_users=args.users, n_items=args.items, n_ratings=total, seed=args.seed)
        write_dataset(
            cfg, str(work / "data"), partition_size=args.partition_size, history_fraction=args.history / total
        )
        parts = [(p.stem, str(p)) for p in sorted((work / "data" / "partitions").iterdir())][
            : args.partitions
        ]
        history = [str(p) for p in sorted((work / "data" / "history").iterdir())]
        with common.spark_session("batch", event_log=False) as (spark, _):
            store = ModelStore(str(work / "bucket"))
            holdout = runs.Holdout(str(work / "bucket" / "validation"))
            runs.bootstrap_version(
                spark,
                store,
                history,
                BootstrapParams(rank=4 if args.smoke else 10, iterations=2 if args.smoke else 5),
                version="v0",
                holdout=holdout,
            )
            store.publish("v0")
            say(f"bootstrapped on {args.history} ratings; {len(parts)} partitions of {args.partition_size}")

            t0 = time.perf_counter()
            batched, _ = runs.update_version(spark, store, parts, base="v0", version="batched")
            batch_s = common.seconds(t0)
            say(f"one batch of {len(parts)}: {batch_s} s")

            t0 = time.perf_counter()
            base = "v0"
            for k, part in enumerate(parts):
                m, _ = runs.update_version(spark, store, [part], base=base, version=f"one-{k:04d}")
                base = m["version"]
            single_s = common.seconds(t0)
            say(f"{len(parts)} updates of one: {single_s} s")

            same = compare(store.load_arrays("batched"), store.load_arrays(base))
            assert same["same_ids"], same
            # validation on the same held-out rows: the batch's own (the one-by-one run wrote the same rows
            # partition by partition)
            rmse = {
                name: runs.evaluate_version(spark, store, vid, holdout=batched["validation"])["validation"][
                    "rmse"
                ]
                for name, vid in (("batched", "batched"), ("one_by_one", base))
            }
        common.emit(
            {
                "partitions": len(parts),
                "partition_size": args.partition_size,
                "history": args.history,
                "batched_s": batch_s,
                "one_by_one_s": single_s,
                "speedup": round(single_s / batch_s, 2),
                "bit_identical": same["exact"],
                "max_abs_diff": same["max_abs_diff"],
                "validation_rmse": rmse,
                "validation_rmse_diff": abs(rmse["batched"] - rmse["one_by_one"]),
                "machine": common.machine(),
                "code": common.code_version(),
            }
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

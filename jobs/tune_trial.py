"""One step of a tuning run (``streamrec.spark.tuning``): prepare the run's data, or run one trial.

    spark-submit --master local[2] jobs/tune_trial.py prepare   --bucket var/bucket --run RUN
    spark-submit --master local[2] jobs/tune_trial.py bootstrap --bucket var/bucket --run RUN --trial 3 \\
        --rank 20 --reg 0.05 --iterations 12 ...            (every BootstrapParams flag)
    spark-submit --master local[2] jobs/tune_trial.py update    --bucket var/bucket --run RUN --trial 3 \\
        --lr 0.6 --reg 3.0 --passes 4 --decay 0.8 ...       (every UpdateParams flag)

The run's plan (``reports/tuning/RUN/plan.json``, written by the tuning DAG's plan task) says which data to use.
A trial writes ``reports/tuning/RUN/trials/<part>-<trial>.json`` and prints it as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.spark import tuning
from streamrec.spark.runs import exit_on_user_error
from streamrec.spark.session import get_session


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    for step, cls in (("prepare", None), ("bootstrap", BootstrapParams), ("update", UpdateParams)):
        p = sub.add_parser(step)
        p.add_argument("--bucket", required=True, help="bucket root: a folder or s3://bucket[/prefix]")
        p.add_argument("--run", required=True, help="tuning run id (reports/tuning/RUN/plan.json)")
        p.add_argument("--checkpoint-dir", help="Spark checkpoint directory")
        if cls is not None:
            p.add_argument("--trial", required=True, type=int, help="trial index (0 = the baseline)")
            cls.add_arguments(p)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    spark = get_session(f"streamrec-tune-{args.step}", checkpoint_dir=args.checkpoint_dir)
    if args.step == "prepare":
        out = tuning.prepare(spark, args.bucket, args.run)
    else:
        cls = BootstrapParams if args.step == "bootstrap" else UpdateParams
        out = tuning.run_trial(spark, args.bucket, args.run, args.step, args.trial, cls.from_args(args))
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))

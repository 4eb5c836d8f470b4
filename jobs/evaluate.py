"""Evaluate a model version on held-out ratings and record the metrics in its manifest.

    spark-submit --master local[2] jobs/evaluate.py \\
        --bucket var/bucket --version v0002 [--holdout URI ...] [--train URI ...]

RMSE and MAE never NaN (unknown ids fall back to mu + b_i, mu + b_u or mu; the counts are reported);
precision@k and NDCG@k when ``--train`` is given. Without ``--holdout`` the version's own validation set is used
(the held-out share of every batch it absorbed). Prints the metrics as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamrec.core.schema import RatingScale
from streamrec.spark.runs import evaluate_version, exit_on_user_error
from streamrec.spark.session import get_session
from streamrec.storage.store import ModelStore


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument(
        "--holdout",
        action="append",
        default=[],
        help="held-out ratings (repeatable; default: the version's own)",
    )
    ap.add_argument("--train", action="append", default=[], help="training ratings, for ranking metrics")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--scale", type=RatingScale.parse, default=RatingScale(), help="LOW:HIGH:STEP")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    spark = get_session("streamrec-evaluate")
    metrics = evaluate_version(
        spark, ModelStore(args.bucket), args.version, args.holdout, args.train, scale=args.scale, k=args.k
    )
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))

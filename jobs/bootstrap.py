"""Bootstrap a biased factor model from a ratings history and write it as a candidate version.

    spark-submit --master local[2] jobs/bootstrap.py \\
        --bucket var/bucket --ratings var/bucket/ratings/history --version v0001 --rank 50 --iterations 15

Prints the candidate's manifest as JSON on the last line. See ``streamrec.spark.bootstrap`` for the math.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamrec.core.params import BootstrapParams, RankingRule
from streamrec.core.schema import RatingScale
from streamrec.spark.runs import Holdout, bootstrap_version, exit_on_user_error
from streamrec.spark.session import get_session
from streamrec.storage.paramsets import parse_lineage_arg
from streamrec.storage.store import ModelStore


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", required=True, help="bucket root: a folder or s3://bucket[/prefix]")
    ap.add_argument("--ratings", required=True, action="append", help="ratings file or folder (repeatable)")
    ap.add_argument("--version", help="version id to write (default: a fresh time-sortable id)")
    ap.add_argument("--kind", default="bootstrap", choices=["bootstrap", "retrain"])
    ap.add_argument("--partition-id", action="append", default=[], help="partition ids these ratings include")
    ap.add_argument("--scale", type=RatingScale.parse, default=RatingScale(), help="LOW:HIGH:STEP")
    ap.add_argument("--checkpoint-dir", help="Spark checkpoint directory")
    ap.add_argument(
        "--holdout-fraction", type=float, default=0.0, help="share of every batch kept for validation"
    )
    ap.add_argument("--holdout-seed", type=int, default=42)
    ap.add_argument("--validation-uri", help="where held-out rows go (default: BUCKET/validation)")
    ap.add_argument(
        "--param-set", help="NAME@DIGEST of the parameter set used (lineage, streamrec.storage.paramsets)"
    )
    BootstrapParams.add_arguments(ap)
    RankingRule.add_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    spark = get_session("streamrec-bootstrap", checkpoint_dir=args.checkpoint_dir)
    store = ModelStore(args.bucket)
    holdout = None
    if args.holdout_fraction > 0:
        uri = args.validation_uri or store.bucket.spark_uri("validation")
        holdout = Holdout(uri, args.holdout_fraction, args.holdout_seed)
    manifest = bootstrap_version(
        spark,
        store,
        args.ratings,
        BootstrapParams.from_args(args),
        version=args.version,
        scale=args.scale,
        kind=args.kind,
        partitions=args.partition_id,
        holdout=holdout,
        param_set=parse_lineage_arg(args.param_set),
        rule=RankingRule.from_args(args),
    )
    print(json.dumps(manifest, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))

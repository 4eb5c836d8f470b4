"""Fold one or more partitions of new ratings into a model version and write the result as a candidate.

    spark-submit --master local[2] jobs/update.py \\
        --bucket var/bucket --base v0001 --version v0002 \\
        --partition p-00001=var/bucket/ratings/incoming/p-00001.csv [--evaluate]

Partitions are ``ID=URI`` pairs applied in the order given; an ID already in the base's lineage is refused.
With ``--evaluate`` the candidate is also evaluated on its validation set in the same Spark application (what
``jobs/evaluate.py`` does, without a second JVM start-up: the update DAG's hot path). Prints the candidate's
manifest (with each partition's prequential RMSE) as JSON on the last line. See ``streamrec.spark.update`` /
``streamrec.core.sgd`` for the math.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamrec.core.params import UpdateParams
from streamrec.core.schema import RatingScale
from streamrec.spark.runs import evaluate_version, exit_on_user_error, update_version
from streamrec.spark.session import get_session
from streamrec.storage.paramsets import parse_lineage_arg
from streamrec.storage.store import ModelStore


def partition_arg(text: str) -> tuple[str, str]:
    pid, sep, uri = text.partition("=")
    if not sep or not pid or not uri:
        raise argparse.ArgumentTypeError(f"expected ID=URI, got {text!r}")
    return pid, uri


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", required=True, help="bucket root: a folder or s3://bucket[/prefix]")
    ap.add_argument("--base", help="version to update (default: the published one)")
    ap.add_argument(
        "--partition", required=True, action="append", type=partition_arg, help="ID=URI (repeatable)"
    )
    ap.add_argument("--version", help="version id to write (default: a fresh time-sortable id)")
    ap.add_argument("--scale", type=RatingScale.parse, default=RatingScale(), help="LOW:HIGH:STEP")
    ap.add_argument("--checkpoint-dir", help="Spark checkpoint directory")
    ap.add_argument(
        "--evaluate", action="store_true", help="also evaluate the candidate on its validation set"
    )
    ap.add_argument(
        "--param-set", help="NAME@DIGEST of the parameter set used (lineage, streamrec.storage.paramsets)"
    )
    UpdateParams.add_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    spark = get_session("streamrec-update", checkpoint_dir=args.checkpoint_dir)
    store = ModelStore(args.bucket)
    manifest, model = update_version(
        spark,
        store,
        args.partition,
        base=args.base,
        params=UpdateParams.from_args(args),
        version=args.version,
        scale=args.scale,
        param_set=parse_lineage_arg(args.param_set),
    )
    if args.evaluate:
        metrics = evaluate_version(spark, store, manifest["version"], scale=args.scale, model=model)
        manifest = {**manifest, "metrics": metrics}
    print(json.dumps(manifest, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_user_error(main))

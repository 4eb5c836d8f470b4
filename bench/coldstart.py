"""Where the update task's time goes: the same calls as ``jobs/update.py --evaluate``, timed step by step, cold
(first in a fresh process) and then warm (again, in the same session), on a copy of a bucket.

    .venv/bin/python bench/coldstart.py --bucket var/bucket --partition var/bucket/ratings/incoming/p-00001.csv

The bucket is copied to a temporary folder first (nothing is written to yours). The gap between the cold and
the warm column is what a long-lived Spark session (e.g. Spark Connect) would save per partition. Prints one
JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", required=True, help="a local bucket with a published model")
    ap.add_argument("--partition", required=True, help="a ratings file to fold in")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        out[name] = round(now - t0, 2)
        print(f"{out[name]:7.2f} s  {name}", flush=True)
        t0 = now

    from streamrec.core.schema import RatingScale
    from streamrec.spark import runs
    from streamrec.spark.session import get_session
    from streamrec.storage.store import ModelStore

    lap("imports")
    spark = get_session("streamrec-coldstart")
    lap("session (JVM start)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bucket"
        shutil.copytree(args.bucket, root)
        store = ModelStore(str(root))
        base = store.current()
        if base is None:
            print(f"no published model in {args.bucket}", file=sys.stderr)
            return 1
        part = str(Path(args.partition).resolve())
        for rnd in ("cold", "warm"):
            m, model = runs.update_version(
                spark, store, [(f"coldstart-{rnd}", part)], base=base, version=f"vcoldstart-{rnd}"
            )
            lap(f"update_version ({rnd})")
            runs.evaluate_version(spark, store, m["version"], scale=RatingScale(), model=model)
            lap(f"evaluate_version ({rnd})")
    spark.stop()
    print(json.dumps({"bench": "coldstart", "partition": args.partition, "seconds": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

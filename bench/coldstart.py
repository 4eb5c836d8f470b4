"""Where a classic (spark-submit) update job's time goes: the calls of ``jobs/update.py --evaluate``, timed step by
step, cold (first in a fresh process) and then warm (again, in the same session), on a copy of a bucket. (The
update DAG's task runs ``update_version`` only: its gate scores the candidate in numpy, so the
``evaluate_version`` rows are what ``--evaluate`` or ``jobs/evaluate.py`` add.)

    .venv/bin/python bench/coldstart.py --bucket var/bucket --partition var/bucket/ratings/incoming/p-00001.csv
    .venv/bin/python bench/coldstart.py --smoke

The bucket is copied to a temporary folder first (nothing is written to yours). The gap between the cold and
the warm column is what a long-lived Spark session (e.g. Spark Connect) would save per partition. Prints one
JSON object on its last line.

Last line: one JSON object with the top-level keys ``bench`` (``"coldstart"``), ``partition`` and ``seconds``
(step -> seconds: ``imports``, ``session (JVM start)``, then ``update_version (cold)``, ``evaluate_version
(cold)``, ``update_version (warm)``, ``evaluate_version (warm)``; with ``--smoke`` also ``smoke bucket``).

``--smoke``: no bucket needed: a tiny generated history is bootstrapped (rank 4, 2 iterations) into a temporary
bucket in the same session, and its one generated partition is folded in. The "cold" column is then not cold
(the bootstrap warmed the session up): a check that the script runs (``tests/test_bench.py``), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def smoke_bucket(spark, work: Path) -> tuple[str, str]:
    """(bucket, partition file): a tiny generated history bootstrapped and published into ``work/bucket``."""
    from streamrec.core.params import BootstrapParams
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.spark import runs
    from streamrec.storage.store import ModelStore

    data = work / "data"
    write_dataset(SynthConfig(n_users=100, n_items=120, n_ratings=2_000, seed=7), str(data), n_partitions=1)
    store = ModelStore(str(work / "bucket"))
    history = [str(p) for p in sorted((data / "history").iterdir())]
    runs.bootstrap_version(
        spark,
        store,
        history,
        BootstrapParams(rank=4, iterations=2),
        version="v0-smoke",
        holdout=runs.Holdout(str(work / "bucket" / "validation")),
    )
    store.publish("v0-smoke")
    return str(work / "bucket"), str(sorted((data / "partitions").iterdir())[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", help="a local bucket with a published model (required without --smoke)")
    ap.add_argument("--partition", help="a ratings file to fold in (required without --smoke)")
    ap.add_argument("--smoke", action="store_true", help="a tiny generated bucket and partition (see above)")
    args = ap.parse_args(argv)
    if not args.smoke and not (args.bucket and args.partition):
        ap.error("--bucket and --partition are required (or --smoke)")
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
        if args.smoke:
            args.bucket, args.partition = smoke_bucket(spark, Path(tmp) / "smoke")
            lap("smoke bucket")
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

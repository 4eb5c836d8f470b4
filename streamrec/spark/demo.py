"""The engine on its own, end to end, in one process: ``python -m streamrec.spark.demo``.

Generates a history and time-ordered partitions from the planted model (``streamrec.core.synth``), or cuts a real
ratings file (``--ratings``, e.g. MovieLens) the same way, then:

1. bootstraps a model on the history (10% of every batch held out for validation), evaluates and publishes it;
2. folds each partition in with the streaming update, evaluates the candidate on the grown validation set,
   applies the RMSE gate and publishes it when it passes;
3. prints RMSE as it goes and a summary (the planted noise floor, when the data is synthetic).

The Airflow pipeline does the same steps as separate tasks; this is the engine without the orchestration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from streamrec.core import gate
from streamrec.core.params import BootstrapParams
from streamrec.core.synth import SynthConfig
from streamrec.core.synth_files import write_dataset
from streamrec.spark import evaluate, runs
from streamrec.spark.model import load_model
from streamrec.spark.ratings import read_ratings
from streamrec.spark.session import get_session
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore


def _cut_real(ratings: str, out: str, n_partitions: int) -> dict:
    """History = first half in time order; the rest in ``n_partitions`` equal parts (loader's csv format)."""
    from streamrec.storage.ratings import read_ratings_pandas

    df = read_ratings_pandas(ratings).sort_values("ts", kind="mergesort").rename(columns={"ts": "timestamp"})
    half = len(df) // 2
    os.makedirs(f"{out}/history", exist_ok=True)
    os.makedirs(f"{out}/partitions", exist_ok=True)
    df.iloc[:half].to_csv(f"{out}/history/ratings.csv", index=False)
    for k, part in enumerate(np.array_split(df.iloc[half:], n_partitions), 1):
        part.to_csv(f"{out}/partitions/p-{k:05d}.csv", index=False)
    return {"source": ratings, "n_ratings": len(df)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="var/demo", help="working folder (wiped first)")
    ap.add_argument("--ratings", help="a real ratings file instead of generated data")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--n-ratings", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=5)
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--tolerance", type=float, default=0.01, help="gate: max relative RMSE worsening")
    ap.add_argument("--ceiling", type=float, default=1.2, help="gate: max RMSE")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    data = f"{args.out}/data"
    if args.ratings:
        truth = _cut_real(args.ratings, data, args.partitions)
    else:
        cfg = SynthConfig(n_users=args.users, n_items=args.items, n_ratings=args.n_ratings, seed=args.seed)
        truth = write_dataset(cfg, data, n_partitions=args.partitions)
        print(
            f"generated {cfg.n_ratings:,} ratings; planted noise floor (best achievable RMSE) "
            f"{truth['best_rmse']:.4f}"
        )
    bucket_root = os.path.abspath(f"{args.out}/bucket")
    bucket = Bucket.from_uri(bucket_root)
    for name in sorted(os.listdir(f"{data}/history")):
        with open(f"{data}/history/{name}", "rb") as f:
            bucket.write_bytes(f"ratings/history/{name}", f.read())
    parts = sorted(os.listdir(f"{data}/partitions"))
    for name in parts:
        with open(f"{data}/partitions/{name}", "rb") as f:
            bucket.write_bytes(f"ratings/incoming/{name}", f.read())

    spark = get_session("streamrec-demo")
    store = ModelStore(bucket)
    hold = runs.Holdout(bucket.spark_uri("validation"), args.holdout_fraction, args.seed)
    m = runs.bootstrap_version(
        spark, store, [bucket.spark_uri("ratings/history")], BootstrapParams(), holdout=hold
    )
    v = m["version"]
    metrics = runs.evaluate_version(spark, store, v)
    store.publish(v)
    print(f"{v}  bootstrap   validation RMSE {metrics['validation']['rmse']:.4f}  published")
    rows = [{"version": v, "kind": "bootstrap", "rmse": metrics["validation"]["rmse"], "published": True}]
    for name in parts:
        pid = name.rsplit(".", 1)[0]
        cur = store.current()
        cand, model = runs.update_version(spark, store, [(pid, bucket.spark_uri(f"ratings/incoming/{name}"))])
        cv = cand["version"]
        cm = runs.evaluate_version(spark, store, cv, model=model)
        # The published model judged on the candidate's (grown) validation set: same rows, fair comparison.
        pm = evaluate.rmse(load_model(store, spark, cur), read_ratings(spark, cand["validation"]))
        d = gate.decide(cm["validation"]["rmse"], pm["rmse"], ceiling=args.ceiling, tolerance=args.tolerance)
        if d.accepted:
            store.update_manifest(cv, gate=d.as_dict())
            store.publish(cv)
        else:
            store.reject(cv, "; ".join(d.reasons), gate=d.as_dict())
        preq = cm["prequential"][pid]["rmse"]
        print(
            f"{cv}  +{pid}  prequential RMSE {preq:.4f}  validation RMSE {cm['validation']['rmse']:.4f} "
            f"(published model on the same rows {pm['rmse']:.4f})  {'published' if d.accepted else 'REJECTED'}"
        )
        rows.append(
            {
                "version": cv,
                "kind": "update",
                "partition": pid,
                "prequential_rmse": preq,
                "rmse": cm["validation"]["rmse"],
                "published": d.accepted,
            }
        )
    summary = {
        "current": store.current(),
        "versions": rows,
        "best_achievable_rmse": truth.get("best_rmse"),
        "bucket": bucket_root,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

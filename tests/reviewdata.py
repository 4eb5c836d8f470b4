"""A bucket for the review page, made by the core calls the DAGs make (no Spark, no Airflow): small synthetic
ratings, a bootstrap version, one accepted streaming update, one candidate the gate rejects, one partition the
data contract quarantines (with Data Docs), the reports, and a MovieLens-style ``ratings/movies.csv``.

The models are fitted here with numpy (shrunk-mean biases, small seeded factors) and written with
``ModelStore.write_arrays``, so no JVM is needed; everything after that (metrics, gate, publish, reject,
contract check, quarantine, reports) is the pipeline's own code: ``pipeline.gate_numbers/decide/publish/reject/
write_reports``, ``pipeline.pending/check_and_select``.

``python tests/reviewdata.py BUCKET_URI WORK_DIR`` populates a bucket from the command line (the browser test
runs it in a subprocess) and prints the facts as JSON on its last line.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from streamrec import pipeline
from streamrec.core.arrays import ModelArrays
from streamrec.core.seen import SeenItems
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore

RANK = 4
NOW_TS = 1_790_000_000.0


def _biases(df: pd.DataFrame, reg: float = 5.0) -> tuple[float, pd.Series, pd.Series]:
    mu = float(df["rating"].mean())
    b_i = (df["rating"] - mu).groupby(df["item"]).sum() / (df.groupby("item").size() + reg)
    res = df["rating"] - mu - df["item"].map(b_i)
    b_u = res.groupby(df["user"]).sum() / (df.groupby("user").size() + reg)
    return mu, b_u, b_i


def _als(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_u: int, n_i: int, seed: int) -> tuple:
    """A few alternating ridge solves of the residuals ``r`` on rank-``RANK`` factors (dense, small data)."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.1, (n_u, RANK)), rng.normal(0, 0.1, (n_i, RANK))
    reg = 0.05 * np.eye(RANK)
    for _ in range(6):
        for rows, cols, a, b in ((u, i, p, q), (i, u, q, p)):
            for e in range(len(a)):
                m = rows == e
                if m.any():
                    x = b[cols[m]]
                    a[e] = np.linalg.solve(x.T @ x + reg * m.sum(), x.T @ r[m])
    return p, q


def fit_arrays(df: pd.DataFrame, seed: int, manifest: dict | None = None, flip: bool = False) -> ModelArrays:
    """Biases as shrunk means, factors by ALS on what they leave (``flip``: item biases negated, a damaged
    model)."""
    mu, b_u, b_i = _biases(df)
    n_u, n_i = df.groupby("user").size(), df.groupby("item").size()
    u = b_u.index.get_indexer(df["user"])
    i = b_i.index.get_indexer(df["item"])
    res = df["rating"].to_numpy(float) - mu - b_u.to_numpy()[u] - b_i.to_numpy()[i]
    p, q = _als(u, i, res, len(b_u), len(b_i), seed)
    return ModelArrays(
        mu=mu,
        rank=RANK,
        user_ids=b_u.index.to_numpy(np.int64),
        user_bias=b_u.to_numpy(float),
        user_factors=p,
        item_ids=b_i.index.to_numpy(np.int64),
        item_bias=(-1.0 if flip else 1.0) * b_i.to_numpy(float),
        item_factors=q,
        manifest=manifest or {},
        n=len(df),
        user_n=n_u.reindex(b_u.index).to_numpy(np.int64),
        item_n=n_i.reindex(b_i.index).to_numpy(np.int64),
    )


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    held = (df["user"] * 7919 + df["item"] * 104729) % 10 == 0
    return df[~held], df[held]


def _write_validation(bucket: Bucket, name: str, df: pd.DataFrame) -> str:
    buf = io.BytesIO()
    table = pa.table(
        {
            "user": df["user"].to_numpy(np.int64),
            "item": df["item"].to_numpy(np.int64),
            "rating": df["rating"].to_numpy(float),
        }
    )
    pq.write_table(table, buf)
    bucket.write_bytes(f"validation/{name}/part-00000.parquet", buf.getvalue())
    return bucket.spark_uri(f"validation/{name}")


def _seen(*frames: pd.DataFrame) -> SeenItems:
    """The seen table of a version: every rating it was built from, held-out ones included (as the jobs do)."""
    df = pd.concat(frames)
    return SeenItems.from_ratings(df["user"], df["item"], df["rating"], df["timestamp"])


def _candidate(store: ModelStore, arrays: ModelArrays, manifest: dict, version: str, seen: SeenItems) -> str:
    """Write a candidate with its seen table and record its validation metrics (what jobs/evaluate.py does)."""
    store.write_arrays(arrays, manifest, version, seen=seen)
    nums = pipeline.gate_numbers(store, version, None, baseline=False)
    store.update_manifest(
        version,
        metrics={
            **manifest.get("metrics", {}),
            "validation": {"rmse": nums["candidate_rmse"], "n": nums["validation_rows"]},
        },
    )
    return version


def _gate(bucket: Bucket, store: ModelStore, version: str, published: str | None) -> dict:
    decision = pipeline.decide(
        store, version, published, ceiling=1.2, tolerance=0.01, baseline=published is None
    )
    if decision["accepted"]:
        pipeline.publish(store, version, published)
    else:
        pipeline.reject(store, version, decision)
    pipeline.write_reports(bucket, store, version, published)
    return decision


def populate(uri: str, work: str | os.PathLike[str], docs: bool = True) -> dict:
    """Fill the bucket at ``uri`` (see the module docstring); ``work`` is a scratch folder. Returns the facts."""
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset

    bucket, store = pipeline.open_bucket(uri)
    data = Path(work) / "data"
    write_dataset(SynthConfig(n_users=150, n_items=120, n_ratings=6000, seed=7), str(data), 2, 0.6)
    hist = pd.concat(pd.read_csv(f) for f in sorted((data / "history").glob("*.csv")))
    p1 = pd.read_csv(data / "partitions" / "p-00001.csv")
    for f in sorted((data / "history").glob("*.csv")):
        bucket.write_bytes(f"ratings/history/{f.name}", f.read_bytes())
    titles = ["movieId,title,genres"] + [
        f'{i},"Movie {i}, The ({1990 + i % 30})",Drama' for i in range(1, 121)
    ]
    bucket.write_text("ratings/movies.csv", "\n".join(titles) + "\n")

    # bootstrap v0 (its validation set: 10 % of the history)
    train0, val0 = _split(hist)
    v0 = "v20261126T100000-boot-000000"
    _candidate(
        store,
        fit_arrays(train0, 1),
        {
            "kind": "bootstrap",
            "parent": None,
            "params": {"bootstrap": {"rank": RANK, "reg_bias": 5.0, "seed": 1}},
            "partitions": [],
            "validation": [_write_validation(bucket, "history", val0)],
        },
        v0,
        _seen(hist),
    )
    d0 = _gate(bucket, store, v0, None)

    # update v1: p-00001 absorbed (accepted)
    train1, val1 = _split(p1)
    v1 = "v20261126T110000-upd-p-00001-000001"
    _candidate(
        store,
        fit_arrays(pd.concat([train0, train1]), 2),
        {
            "kind": "update",
            "parent": v0,
            "params": {"bootstrap": {"rank": RANK}, "update": {"lr": 0.05, "passes": 3}},
            "partitions": ["p-00001"],
            "validation": [
                *store.read_manifest(v0)["validation"],
                _write_validation(bucket, "partitions/p-00001", val1),
            ],
            "metrics": {"prequential": {"p-00001": {"rmse": 0.95, "n": len(p1)}}},
        },
        v1,
        _seen(hist, p1),
    )
    d1 = _gate(bucket, store, v1, v0)

    # the stream: p-00001 (applied), p-bad (fails the contract), p-damage (rejected by the gate)
    incoming = "ratings/incoming"
    bucket.write_bytes(f"{incoming}/p-00001.csv", (data / "partitions" / "p-00001.csv").read_bytes())
    bad = pd.read_csv(data / "partitions" / "p-00002.csv").head(200)
    bad.loc[3, "rating"] = 7.0
    bucket.write_text(f"{incoming}/p-bad.csv", bad.to_csv(index=False))
    dmg = hist.sample(n=300, random_state=1).copy()
    dmg["rating"] = 5.5 - dmg["rating"]
    dmg["timestamp"] = int(hist["timestamp"].max()) + 1 + np.arange(len(dmg))
    bucket.write_text(f"{incoming}/p-damage.csv", dmg.to_csv(index=False))
    if bucket.uri().startswith("/"):  # local: make the arrival order explicit (S3 orders by PUT time)
        now = time.time()
        for k, name in enumerate(("p-00001.csv", "p-bad.csv", "p-damage.csv")):
            os.utime(bucket.uri(f"{incoming}/{name}"), (now + k, now + k))
    plan = pipeline.pending(bucket, store)
    sel = pipeline.check_and_select(bucket, store, plan, NOW_TS, build_docs=docs)
    assert sel["partitions"] and sel["partitions"][0]["id"] == "p-damage", sel

    # candidate v2 from p-damage: item biases flipped, the gate rejects it
    v2 = "v20261126T120000-upd-p-damage-000002"
    _candidate(
        store,
        fit_arrays(pd.concat([train0, train1, dmg]), 3, flip=True),
        {
            "kind": "update",
            "parent": v1,
            "params": {"bootstrap": {"rank": RANK}, "update": {"lr": 0.05, "passes": 3}},
            "partitions": ["p-00001", "p-damage"],
            "validation": store.read_manifest(v1)["validation"],
        },
        v2,
        _seen(hist, p1, dmg),
    )
    d2 = _gate(bucket, store, v2, v1)
    from streamrec.pipeline import reports

    reports.write_index(bucket, store)
    return {
        "versions": [v0, v1, v2],
        "decisions": [d0, d1, d2],
        "current": store.current(),
        "quarantined": "p-bad",
        "rejected": "p-damage",
        "users": sorted(int(u) for u in train0["user"].unique()[:20]),
        "heavy_user": int(pd.concat([hist, p1])["user"].value_counts().idxmax()),
    }


if __name__ == "__main__":
    facts = populate(sys.argv[1], sys.argv[2], docs=len(sys.argv) < 4 or sys.argv[3] != "--no-docs")
    print(json.dumps(facts, default=str))

"""Spark's own I/O on ``s3a://`` against a real moto server: the fetched hadoop-aws jars, the conf built by
``streamrec.launch.s3a`` from the environment, credentials only in the environment.

One scenario, two ways of running Spark, both in subprocesses (one SparkContext per JVM; the shared ``spark``
fixture was built without S3 settings):

* as plain Python (this file is the driver: ``python tests/test_s3a_spark.py BUCKET_URI``): ``get_session()``
  picks up the s3a conf by itself; ``streamrec.spark.ratings.read_ratings`` reads the ratings CSV from ``s3a://``;
  ``streamrec.spark.runs`` bootstraps (hold-out Parquet + factor tables written through s3a), the version is
  published, and one partition is folded in (the base model read back through s3a);
* through ``spark-submit`` with ``python -m streamrec.launch.s3a submit-args``: ``jobs/evaluate.py`` scores the update.

Then, in this process, with boto3 only (``streamrec.pipeline.lookup`` / ``ModelStore.load_arrays``): the factor tables
have one row per entity the data holds, and the RMSE recomputed with numpy from what boto3 reads equals the
Spark job's. Nowhere in the subprocesses' output or Spark's conf does the secret key appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.launch import jvm

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3a-test-secret-6f1d0c2b9e"


def _driver(bucket_uri: str) -> None:
    """Plain-Python Spark on s3a: read, bootstrap, publish, update. Prints one JSON line prefixed with @@."""
    from streamrec.core.params import BootstrapParams
    from streamrec.spark.ratings import read_ratings
    from streamrec.spark.runs import Holdout, bootstrap_version, update_version
    from streamrec.spark.session import get_session
    from streamrec.storage.store import ModelStore

    store = ModelStore(bucket_uri)
    b = store.bucket
    spark = get_session("streamrec-s3a-test", master="local[2]", shuffle_partitions=2)
    conf = dict(spark.sparkContext.getConf().getAll())
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    history = read_ratings(spark, b.spark_uri("ratings/history"))
    n_history = history.count()
    m0 = bootstrap_version(
        spark,
        store,
        [b.spark_uri("ratings/history")],
        BootstrapParams(rank=4, iterations=4),
        version="v0001",
        holdout=Holdout(b.spark_uri("validation"), fraction=0.1),
    )
    store.publish("v0001")
    # a batch of two, read through s3a in one job (each row told to its partition by Spark's file name)
    batch = [(f"p-0000{k}", b.spark_uri(f"ratings/incoming/p-0000{k}.csv")) for k in (1, 2)]
    m1, model = update_version(spark, store, batch)
    out = {
        "n_history": n_history,
        "m0": m0,
        "m1": m1,
        "n_users": model.users.count(),
        "n_items": model.items.count(),
        "endpoint": hconf.get("fs.s3a.endpoint"),
        "provider": hconf.get("fs.s3a.aws.credentials.provider"),
        "conf_values": sorted(str(v) for v in conf.values()),
    }
    spark.stop()
    print("@@" + json.dumps(out, default=str), flush=True)


@pytest.fixture
def s3a_env(s3_bucket_uri, tmp_path):
    """Subprocess environment: the moto endpoint, a recognisable secret, no stray AWS config."""
    from streamrec.launch import s3a

    if s3a.configured_jars() is None:
        pytest.skip(f"no hadoop-aws jars ({s3a.describe()}); `make setup` fetches them")
    empty = tmp_path / "aws-config"
    empty.write_text("")
    env = {
        **os.environ,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_CONFIG_FILE": str(empty),  # the v1 SDK warns (with a stack trace) on /dev/null
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "STREAMREC_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
    }
    return s3_bucket_uri, env


def test_spark_reads_and_writes_s3a_and_boto3_reads_it_back(s3a_env, tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from streamrec import pipeline
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.launch import s3a
    from streamrec.pipeline.lookup import Recommender
    from streamrec.storage.bucket import Bucket
    from streamrec.storage.store import ModelStore

    bucket_uri, env = s3a_env
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # this process's boto3: same identity as the jobs
    cfg = SynthConfig(n_users=120, n_items=90, n_ratings=4_000, rank=3, seed=5)
    write_dataset(cfg, str(tmp_path / "data"), n_partitions=2, history_fraction=0.7)
    b = Bucket.from_uri(bucket_uri)
    for f in sorted((tmp_path / "data" / "history").iterdir()):
        b.write_bytes(f"ratings/history/{f.name}", f.read_bytes())
    parts = [tmp_path / "data" / "partitions" / f"p-0000{k}.csv" for k in (1, 2)]
    for p in parts:
        b.write_bytes(f"ratings/incoming/{p.name}", p.read_bytes())
    history = pd.concat(pd.read_csv(f) for f in sorted((tmp_path / "data" / "history").glob("*.csv")))
    part = pd.concat(pd.read_csv(p) for p in parts)

    # 1. plain Python: get_session() with the s3a conf from the environment
    proc = subprocess.run(
        [sys.executable, __file__, bucket_uri], env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    assert res["endpoint"] == env["AWS_ENDPOINT_URL_S3"]
    assert res["provider"] == s3a.PROVIDERS_V1
    assert res["n_history"] == len(history)
    m0, m1 = res["m0"], res["m1"]
    assert m0["version"] == "v0001" and m0["validation"] == [f"{b.spark_uri('validation')}/history"]
    assert m1["parent"] == "v0001" and m1["partitions"] == ["p-00001", "p-00002"]
    assert m1["inputs"][-2:] == [b.spark_uri(f"ratings/incoming/p-0000{k}.csv") for k in (1, 2)]
    assert m1["validation"][0] == m0["validation"][0] and len(m1["validation"]) == 2
    assert m1["validation"][1].startswith(b.spark_uri("validation/batches/p-00001-n2-"))
    # every row of the batch is either trained on (scored with its own partition) or held out, once
    trained = [m1["metrics"]["prequential"][f"p-0000{k}"]["n"] for k in (1, 2)]
    held = pipeline.read_ratings_arrays(b, m1["validation"][1:])
    assert min(trained) > 0 and len(held["rating"]) > 0
    assert sum(trained) + len(held["rating"]) == len(part)
    both = pd.concat([history, part])
    assert res["n_users"] == both["user"].nunique() and res["n_items"] == both["item"].nunique()

    # 2. spark-submit: jars and non-secret conf on the line, credentials in the environment
    line = s3a.submit_args(env)
    assert not any(SECRET in a for a in line)
    sub = subprocess.run(
        [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            "--conf",
            f"spark.pyspark.python={sys.executable}",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            f"spark.driver.extraJavaOptions={jvm.driver_java_options()}",
            *line,
            str(REPO / "jobs" / "evaluate.py"),
            "--bucket",
            bucket_uri,
            "--version",
            m1["version"],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-6000:]
    metrics = json.loads(sub.stdout.strip().splitlines()[-1])
    spark_rmse = metrics["validation"]["rmse"]

    # 3. boto3 only: the tables Spark wrote through s3a, read back with pyarrow and scored with numpy
    store = ModelStore(bucket_uri)
    assert store.current() == "v0001"
    keys = [o.key for o in b.list(f"models/versions/{m1['version']}")]
    assert any(
        k.startswith(f"models/versions/{m1['version']}/users/") and k.endswith(".parquet") for k in keys
    )
    arrays = store.load_arrays(m1["version"])
    assert arrays.n_users == res["n_users"] and arrays.n_items == res["n_items"]
    assert sorted(arrays.user_ids.tolist()) == sorted(both["user"].unique().tolist())
    rec = Recommender(arrays)
    top = rec.recommend(int(part["user"].iloc[0]), k=5)
    assert len(top) == 5 and all(0.5 <= s <= 5.0 for _, s in top)
    rows = pipeline.read_ratings_arrays(b, store.read_manifest(m1["version"])["validation"])
    assert len(rows["rating"]) == metrics["validation"]["n"] > 0
    numpy_rmse = float(np.sqrt(np.mean((rec.predict_many(rows["user"], rows["item"]) - rows["rating"]) ** 2)))
    assert numpy_rmse == pytest.approx(spark_rmse, rel=1e-6)
    assert spark_rmse < float(both["rating"].std())  # a fitted model, not noise

    # 4. the secret went through the environment only
    for text in (proc.stdout, proc.stderr, sub.stdout, sub.stderr, *res["conf_values"]):
        assert SECRET not in text


if __name__ == "__main__":
    _driver(sys.argv[1])

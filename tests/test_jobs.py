"""The spark-submit entry points end to end on generated data: bootstrap, evaluate, publish, update, refuse a
partition applied twice, and RMSE that approaches the planted noise floor. Real spark-submit, real Parquet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.core.synth import SynthConfig
from streamrec.core.synth_files import write_dataset
from streamrec.launch import jvm
from streamrec.storage.store import ModelStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def submit(job: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    cmd = [
        str(SPARK_SUBMIT),
        "--master",
        "local[2]",
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        f"spark.driver.extraJavaOptions={jvm.driver_java_options()}",  # as the DAGs' spark jobs get them
        "--driver-memory",
        "1g",
        str(REPO / "jobs" / job),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{job} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n_users=400, n_items=300, n_ratings=24_000, rank=4, sigma=0.5, seed=11)
    truth = write_dataset(cfg, str(out), n_partitions=2)
    return out, truth


def test_bootstrap_update_evaluate_through_spark_submit(tmp_path, data):
    src, truth = data
    bucket = tmp_path / "bucket"
    params = ["--rank", "8", "--iterations", "8"]
    m0 = last_json(
        submit(
            "bootstrap.py",
            "--bucket",
            str(bucket),
            "--ratings",
            str(src / "history"),
            "--version",
            "v0001",
            "--holdout-fraction",
            "0.1",
            *params,
        )
    )
    assert m0["version"] == "v0001" and m0["status"] == "candidate" and m0["kind"] == "bootstrap"
    assert m0["validation"] and m0["params"]["bootstrap"]["rank"] == 8
    e0 = last_json(
        submit("evaluate.py", "--bucket", str(bucket), "--version", "v0001", "--holdout", m0["validation"][0])
    )
    store = ModelStore(str(bucket))
    store.publish("v0001")
    assert store.current() == "v0001"

    p1 = src / "partitions" / "p-00001.csv"
    m1 = last_json(
        submit(
            "update.py",
            *("--bucket", str(bucket), "--version", "v0002", "--partition", f"p-00001={p1}", "--evaluate"),
        )
    )
    assert m1["parent"] == "v0001" and m1["partitions"] == ["p-00001"]
    assert m1["inputs"][-1] == str(p1) and len(m1["validation"]) == 2  # history's share + p-00001's share
    assert m1["metrics"]["prequential"]["p-00001"]["rmse"] > 0
    # --evaluate: scored on its validation set in the same application, and recorded in the manifest
    e1 = m1["metrics"]
    assert store.read_manifest("v0002")["metrics"]["validation"] == e1["validation"]
    store.publish("v0002")

    # Applying the same partition again is refused, and nothing is written.
    again = submit(
        "update.py",
        "--bucket",
        str(bucket),
        "--version",
        "v0003",
        "--partition",
        f"p-00001={p1}",
        check=False,
    )
    # spark-submit merges the Python driver's stderr into its own stdout
    assert again.returncode == 2
    assert "streamrec: error: partition(s) ['p-00001'] already applied" in again.stdout + again.stderr
    assert [v["version"] for v in store.list_versions()] == ["v0001", "v0002"]

    # Accuracy: far below the global-mean spread, within reach of the planted noise floor.
    floor = truth["best_rmse"]
    assert e0["validation"]["rmse"] < truth["rating_sd"] * 0.85
    assert e1["validation"]["rmse"] < floor * 1.35, (e1, floor)
    assert e1["validation"]["fallbacks"]["both_unknown"] == 0

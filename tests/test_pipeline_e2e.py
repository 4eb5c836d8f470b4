"""End to end with real parts: Airflow's ``dag.test()`` (a real DagRun, tasks run for real), real ``spark-submit``
jobs, the real data contract, a local bucket.

bootstrap, then the update DAG over three partitions dropped in this order:

* ``p-00001`` (good): applied and published, in the lineage;
* ``p-bad`` (a rating of 7.0 and a user id 0): quarantined with its reason and report, never applied;
* ``p-damage``: for users with validation rows, every rating they gave in training is dropped again with the
  rating inverted (``low + high - r``, new timestamps). Those (user, item) pairs are training pairs, and the
  hold-out is decided by the (user, item) hash, so none of these rows reaches the validation set: the candidate
  is judged on unchanged rows it now predicts badly, and the gate rejects it (status rejected, not current).

One partition per update run, so: run 1 applies ``p-00001``; run 2 quarantines ``p-bad`` and rejects
``p-damage``; run 3 finds nothing and changes nothing. Then ``streamrec_retrain`` rebuilds from everything
accepted (the history and ``p-00001``, not the quarantined or rejected partitions) through the same gate.

Everything Airflow runs in a subprocess with its own ``AIRFLOW_HOME`` (this file is also the driver:
``python tests/test_pipeline_e2e.py DRIVER_ARGS``), so the test process's environment is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def airflow_env(home: Path, bucket: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-" + "x" * 60,
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
        "STREAMREC_BUCKET": str(bucket),
        "STREAMREC_PYTHON": sys.executable,
        "STREAMREC_DRIVER_MEMORY": "1g",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }


# ----------------------------------------------------------------------------------------------------------------
# the driver (runs inside the Airflow environment)
# ----------------------------------------------------------------------------------------------------------------
def _dags() -> dict:
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = str(REPO / "dags")
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name="dags-folder")
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _run(dag, conf: dict | None = None) -> dict:
    t0 = time.perf_counter()
    dr = dag.test(run_conf=conf or {})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    return {
        "dag": dag.dag_id,
        "state": str(dr.state),
        "tasks": states,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _make_data(data: Path, bucket: Path) -> None:
    from streamrec.synth import SynthConfig, write_dataset

    cfg = SynthConfig(n_users=300, n_items=400, n_ratings=20_000, seed=7)
    write_dataset(cfg, str(data), n_partitions=3, history_fraction=0.6)
    hist = bucket / "ratings" / "history"
    hist.mkdir(parents=True, exist_ok=True)
    for f in sorted((data / "history").iterdir()):
        (hist / f.name).write_bytes(f.read_bytes())
    (bucket / "ratings" / "incoming").mkdir(parents=True, exist_ok=True)


def _drop(bucket: Path, data: Path) -> None:
    """p-00001 (good), p-bad (contract failures), p-damage (inverted ratings on training pairs), in that order."""
    import pandas as pd
    import pyarrow.parquet as pq

    incoming = bucket / "ratings" / "incoming"
    good = (data / "partitions" / "p-00001.csv").read_text()
    bad = pd.read_csv(data / "partitions" / "p-00002.csv")
    bad.loc[3, "rating"] = 7.0
    bad.loc[5, "user"] = 0
    hist = pd.concat([pd.read_csv(f) for f in sorted((data / "history").glob("*.csv"))])
    held = pq.read_table(bucket / "validation" / "history").to_pandas()
    users = set(held["user"])
    pairs = set(zip(held["user"], held["item"], strict=True))
    dmg = hist[hist["user"].isin(users)]
    dmg = dmg[[(u, i) not in pairs for u, i in zip(dmg["user"], dmg["item"], strict=True)]]
    dmg = dmg.sample(n=min(3000, len(dmg)), random_state=1).copy()
    dmg["rating"] = 5.5 - dmg["rating"]
    dmg["timestamp"] = int(hist["timestamp"].max()) + 1 + pd.RangeIndex(len(dmg))
    now = time.time()
    for k, (name, write) in enumerate(
        [
            ("p-00001.csv", lambda p: p.write_text(good)),
            ("p-bad.csv", lambda p: bad.to_csv(p, index=False)),
            ("p-damage.csv", lambda p: dmg.to_csv(p, index=False)),
        ]
    ):
        path = incoming / name
        write(path)
        os.utime(path, (now + k, now + k))


def _snapshot(bucket: Path) -> dict:
    from streamrec import pipeline

    b, store = pipeline.open_bucket(str(bucket))
    return pipeline.summary(b, store)


def driver(work: Path) -> None:
    bucket, data = work / "bucket", work / "data"
    out: dict = {"runs": []}
    _make_data(data, bucket)
    dags = _dags()
    out["runs"].append(
        _run(dags["streamrec_bootstrap"], {"rank": 8, "iterations": 5, "reg": 0.1, "holdout_fraction": 0.1})
    )
    out["after_bootstrap"] = _snapshot(bucket)
    _drop(bucket, data)
    for _ in range(3):
        out["runs"].append(_run(dags["streamrec_update"]))
        out.setdefault("snapshots", []).append(_snapshot(bucket))
    out["runs"].append(_run(dags["streamrec_retrain"], {"rank": 8, "iterations": 5, "tolerance": 0.05}))
    out["after_retrain"] = _snapshot(bucket)
    print("@@" + json.dumps(out, default=str), flush=True)


# ----------------------------------------------------------------------------------------------------------------
# the test
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_bootstrap_then_three_partitions(tmp_path):
    env = airflow_env(tmp_path / "airflow", tmp_path / "bucket")
    (tmp_path / "airflow").mkdir()
    mig = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=900
    )
    assert mig.returncode == 0, mig.stderr[-3000:]
    log = tmp_path / "driver.log"
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, __file__, str(tmp_path)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]
    res = json.loads([ln for ln in text.splitlines() if ln.startswith("@@")][-1][2:])
    boot, run1, run2, run3, retrain = res["runs"]
    print(json.dumps(res["runs"], indent=1))

    # bootstrap: published
    assert boot["state"].endswith("success"), boot
    assert boot["tasks"]["publish"].endswith("success") and boot["tasks"]["reject"].endswith("skipped")
    v0 = res["after_bootstrap"]["current"]
    assert v0 and "-boot-" in v0

    # run 1: p-00001 applied and published, lineage = [p-00001]
    s1 = res["snapshots"][0]
    assert run1["state"].endswith("success"), run1
    assert run1["tasks"]["publish"].endswith("success"), run1
    assert s1["current"] != v0 and s1["applied"] == ["p-00001"]

    # run 2: p-bad quarantined with report; p-damage rejected by the gate, not published
    s2 = res["snapshots"][1]
    assert run2["state"].endswith("success"), run2
    assert run2["tasks"]["reject"].endswith("success") and run2["tasks"]["publish"].endswith("skipped"), run2
    assert "p-bad" in s2["quarantined"] and s2["quarantined"]["p-bad"] not in ("", "?")
    bucket = tmp_path / "bucket"
    assert (bucket / "quarantine" / "p-bad" / "report.json").exists()
    assert (bucket / "quarantine" / "p-bad" / "files" / "p-bad.csv").exists()
    assert (bucket / "ratings" / "incoming" / "p-bad.csv").exists(), "the raw file is never removed"
    assert (bucket / "reports" / "partitions" / "p-bad" / "report.json").exists()
    assert s2["current"] == s1["current"], "the damaging candidate must not be published"
    assert s2["applied"] == ["p-00001"]
    rejected = [v for v in s2["versions"] if v["status"] == "rejected"]
    assert len(rejected) == 1 and "p-damage" in rejected[0]["version"]
    assert "worse than the published model" in rejected[0]["reason"]
    assert s2["rejected"] == {"p-damage": rejected[0]["version"]}
    assert (bucket / "reports" / "gates" / f"{rejected[0]['version']}.html").exists()
    assert (bucket / "reports" / "index.html").exists()

    # run 3: nothing new, nothing changes
    s3 = res["snapshots"][2]
    assert run3["state"].endswith("success"), run3
    assert run3["tasks"]["find_new"].endswith("success")
    assert all(st.endswith("skipped") for t, st in run3["tasks"].items() if t != "find_new"), run3
    assert s3["versions"] == s2["versions"] and s3["current"] == s2["current"]

    # retrain: a fresh fit on the history + p-00001 (the accepted lineage), published through the gate
    sr = res["after_retrain"]
    assert retrain["state"].endswith("success"), retrain
    assert retrain["tasks"]["publish"].endswith("success"), retrain
    assert "-retrain-" in sr["current"] and sr["current"] != s3["current"]
    assert sr["applied"] == ["p-00001"], "the retrain keeps the lineage: quarantined and rejected stay out"
    from streamrec.store import ModelStore

    mr = ModelStore(str(bucket)).read_manifest(sr["current"])
    assert mr["kind"] == "retrain" and mr["retrained_from"] == s3["current"]
    assert not any("p-damage" in u or "p-bad" in u for u in mr["inputs"]), mr["inputs"]
    assert mr["validation"] == ModelStore(str(bucket)).read_manifest(s3["current"])["validation"]


if __name__ == "__main__":
    driver(Path(sys.argv[1]))

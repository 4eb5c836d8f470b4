"""The end-to-end scenario shared by ``tests/test_pipeline_e2e.py`` (a local bucket) and
``tests/test_pipeline_e2e_s3.py`` (``s3://`` on a moto server): Airflow's ``dag.test()`` (a real DagRun, tasks
run for real), real ``spark-submit`` jobs, the real data contract.

bootstrap, then the update DAG over three partitions dropped in this order:

* ``p-00001`` (good): applied and published, in the lineage;
* ``p-bad`` (a rating of 7.0 and a user id 0): quarantined with its reason and report, never applied;
* ``p-damage``: for users with validation rows, every rating they gave in training is dropped again with the
  rating inverted (``low + high - r``, new timestamps). Those (user, item) pairs are training pairs, and the
  hold-out is decided by the (user, item) hash, so none of these rows reaches the validation set: the candidate
  is judged on unchanged rows it now predicts badly, and the gate rejects it (status rejected, not current).

One partition per update run, so: run 1 applies ``p-00001``; run 2 quarantines ``p-bad`` and rejects
``p-damage``; run 3 finds nothing and changes nothing. With ``retrain``, ``streamrec_retrain`` then rebuilds from
everything accepted (the history and ``p-00001``, not the quarantined or rejected partitions) through the same
gate (the local-bucket test does it; the S3 test leaves it out to keep the suite short).

Everything Airflow runs in a subprocess with its own ``AIRFLOW_HOME`` (this file is the driver:
``python tests/e2e_support.py WORK BUCKET_URI``), so the test process's environment is untouched. The driver
reaches the bucket itself (data in, snapshots out) with the environment's AWS settings or, when there are none,
with the ``AIRFLOW_CONN_AWS_DEFAULT`` connection the DAGs use.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def airflow_env(home: Path, bucket: str | Path, **extra: str) -> dict[str, str]:
    """The Airflow subprocess's environment: its own home and SQLite database, local Spark, the bucket."""
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
        **extra,
    }


_MIGRATED: dict[str, Path] = {}


def _migrate(env: dict[str, str], home: Path) -> None:
    """``airflow db migrate``, once per test session: later homes get a copy of the first migrated SQLite file
    (the schema does not depend on the home; ~10 s saved per real-Airflow test)."""
    db = home / "airflow.db"
    template = _MIGRATED.get("sqlite")
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{db}" and template is not None:
        shutil.copyfile(template, db)
        return
    mig = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=900
    )
    assert mig.returncode == 0, mig.stderr[-3000:]
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{db}":
        keep = Path(tempfile.mkdtemp(prefix="streamrec-airflow-db-")) / "airflow.db"
        shutil.copyfile(db, keep)
        atexit.register(shutil.rmtree, keep.parent, ignore_errors=True)
        _MIGRATED["sqlite"] = keep


def run_driver(work: Path, env: dict[str, str], script: str | Path, *args: str) -> tuple[dict, str]:
    """``airflow db migrate`` in ``env``'s ``AIRFLOW_HOME``, then ``python script *args`` in a subprocess with
    that environment (output in ``work/driver.log``); returns (the JSON of its last ``@@`` line, its whole log).
    Every real-Airflow test drives its DAGs this way, so the test process's environment stays untouched."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    _migrate(env, home)
    log = work / "driver.log"
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, str(script), *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    res = json.loads([ln for ln in text.splitlines() if ln.startswith("@@")][-1][2:])
    return res, text


def run_scenario(work: Path, env: dict[str, str], bucket: str, retrain: bool = False) -> tuple[dict, str]:
    """The scenario's driver (this file) through :func:`run_driver`."""
    return run_driver(work, env, __file__, str(work), bucket, *(["--retrain"] if retrain else []))


# ----------------------------------------------------------------------------------------------------------------
# the driver (runs inside the Airflow environment)
# ----------------------------------------------------------------------------------------------------------------
def open_bucket(uri: str):
    """(Bucket, ModelStore) for the driver; an S3 bucket without ``AWS_*`` credentials in the environment uses
    the ``aws_default`` connection's (as the DAGs' tasks do)."""
    from streamrec import pipeline
    from streamrec.storage.bucket import Bucket, S3Bucket
    from streamrec.storage.store import ModelStore

    b = Bucket.from_uri(uri)
    conn = os.environ.get("AIRFLOW_CONN_AWS_DEFAULT")
    if isinstance(b, S3Bucket) and conn and not os.environ.get("AWS_ACCESS_KEY_ID"):
        import boto3
        from botocore.config import Config

        from streamrec.launch.s3a import env_from_connection

        c = json.loads(conn)
        aws = env_from_connection(c.get("login"), c.get("password"), c.get("extra"))
        b = S3Bucket(
            b.bucket,
            b.prefix,
            client=boto3.client(
                "s3",
                endpoint_url=aws.get("AWS_ENDPOINT_URL_S3"),
                region_name=aws.get("AWS_DEFAULT_REGION"),
                aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
                config=Config(s3={"addressing_style": "path"}),
            ),
        )
        return b, ModelStore(b)
    return pipeline.open_bucket(uri)


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


def _make_data(data: Path, b) -> None:
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.storage.bucket import LocalBucket

    cfg = SynthConfig(n_users=300, n_items=400, n_ratings=20_000, seed=7)
    write_dataset(cfg, str(data), n_partitions=3, history_fraction=0.6)
    for f in sorted((data / "history").iterdir()):
        b.write_bytes(f"ratings/history/{f.name}", f.read_bytes())
    if isinstance(b, LocalBucket):
        (b.root / "ratings" / "incoming").mkdir(parents=True, exist_ok=True)


def _drop(b, data: Path) -> None:
    """p-00001 (good), p-bad (contract failures), p-damage (inverted ratings on training pairs), in that order."""
    import pandas as pd

    from streamrec import pipeline
    from streamrec.storage.bucket import LocalBucket

    good = (data / "partitions" / "p-00001.csv").read_bytes()
    bad = pd.read_csv(data / "partitions" / "p-00002.csv")
    bad.loc[3, "rating"] = 7.0
    bad.loc[5, "user"] = 0
    hist = pd.concat([pd.read_csv(f) for f in sorted((data / "history").glob("*.csv"))])
    held = pipeline.read_ratings_arrays(b, [b.spark_uri("validation/history")])
    assert len(held["user"]) > 0, "the bootstrap wrote no validation rows"
    users = set(held["user"].tolist())
    pairs = set(zip(held["user"].tolist(), held["item"].tolist(), strict=True))
    dmg = hist[hist["user"].isin(users)]
    dmg = dmg[[(u, i) not in pairs for u, i in zip(dmg["user"], dmg["item"], strict=True)]]
    dmg = dmg.sample(n=min(3000, len(dmg)), random_state=1).copy()
    dmg["rating"] = 5.5 - dmg["rating"]
    dmg["timestamp"] = int(hist["timestamp"].max()) + 1 + pd.RangeIndex(len(dmg))
    now = time.time()
    files = [
        ("p-00001.csv", good),
        ("p-bad.csv", bad.to_csv(index=False).encode()),
        ("p-damage.csv", dmg.to_csv(index=False).encode()),
    ]
    for k, (name, body) in enumerate(files):
        key = f"{pipeline.INCOMING}/{name}"
        b.write_bytes(key, body)
        if isinstance(b, LocalBucket):
            os.utime(b.root / key, (now + k, now + k))
        else:  # S3 sets LastModified itself (1 s resolution): space the uploads out
            time.sleep(1.2)


def _snapshot(b, store) -> dict:
    from streamrec import pipeline

    return pipeline.summary(b, store)


def driver(work: Path, bucket_uri: str, retrain: bool = False) -> None:
    data = work / "data"
    b, store = open_bucket(bucket_uri)
    out: dict = {"runs": []}
    _make_data(data, b)
    dags = _dags()
    out["runs"].append(
        _run(dags["streamrec_bootstrap"], {"rank": 8, "iterations": 5, "reg": 0.1, "holdout_fraction": 0.1})
    )
    out["after_bootstrap"] = _snapshot(b, store)
    _drop(b, data)
    for _ in range(3):
        out["runs"].append(_run(dags["streamrec_update"]))
        out.setdefault("snapshots", []).append(_snapshot(b, store))
    if retrain:
        out["runs"].append(_run(dags["streamrec_retrain"], {"rank": 8, "iterations": 5, "tolerance": 0.05}))
        out["after_retrain"] = _snapshot(b, store)
        # the update DAG's requeue Param on a quarantined partition: checked again (and quarantined again)
        from streamrec.pipeline.review import events

        out["runs"].append(_run(dags["streamrec_update"], {"requeue": ["p-bad"]}))
        out["after_requeue"] = {**_snapshot(b, store), "events": events(b)}
    print("@@" + json.dumps(out, default=str), flush=True)


# ----------------------------------------------------------------------------------------------------------------
# the assertions (run in the test process)
# ----------------------------------------------------------------------------------------------------------------
def check_scenario(res: dict, b) -> None:
    """What both end-to-end tests assert; ``b`` is the bucket the run used (read with the test's own access)."""
    boot, run1, run2, run3 = res["runs"][:4]
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
    # no Spark evaluation in the update run: the gate scored the candidate and recorded its numbers
    from streamrec.storage.store import ModelStore

    m1 = ModelStore(b).read_manifest(s1["current"])
    assert m1["metrics"]["validation"]["rmse"] == m1["gate"]["candidate_rmse"] is not None
    assert m1["metrics"]["validation"]["n"] == m1["gate"]["validation_rows"] > 0
    assert m1["gate"]["spark_rmse"] is None and m1["write_seconds"]["recommendations"] > 0

    # run 2: p-bad quarantined with report; p-damage rejected by the gate, not published
    s2 = res["snapshots"][1]
    assert run2["state"].endswith("success"), run2
    assert run2["tasks"]["reject"].endswith("success") and run2["tasks"]["publish"].endswith("skipped"), run2
    assert "p-bad" in s2["quarantined"] and s2["quarantined"]["p-bad"] not in ("", "?")
    assert b.exists("quarantine/p-bad/report.json")
    assert b.exists("quarantine/p-bad/files/p-bad.csv")
    assert b.exists("ratings/incoming/p-bad.csv"), "the raw file is never removed"
    assert b.exists("reports/partitions/p-bad/report.json")
    assert s2["current"] == s1["current"], "the damaging candidate must not be published"
    assert s2["applied"] == ["p-00001"]
    rejected = [v for v in s2["versions"] if v["status"] == "rejected"]
    assert len(rejected) == 1 and "p-damage" in rejected[0]["version"]
    assert "worse than the published model" in rejected[0]["reason"]
    assert s2["rejected"] == {"p-damage": rejected[0]["version"]}
    assert b.exists(f"reports/gates/{rejected[0]['version']}.html")
    assert b.exists("reports/index.html")

    # run 3: nothing new, nothing changes
    s3 = res["snapshots"][2]
    assert run3["state"].endswith("success"), run3
    assert run3["tasks"]["find_new"].endswith("success")
    assert all(st.endswith("skipped") for t, st in run3["tasks"].items() if t != "find_new"), run3
    assert s3["versions"] == s2["versions"] and s3["current"] == s2["current"]


def check_retrain(res: dict, b) -> None:
    """After :func:`check_scenario`: the retrain was a fresh fit on the accepted lineage, published by the gate."""
    from streamrec.storage.store import ModelStore

    retrain, s3, sr = res["runs"][4], res["snapshots"][2], res["after_retrain"]
    assert retrain["state"].endswith("success"), retrain
    assert retrain["tasks"]["publish"].endswith("success"), retrain
    assert "-retrain-" in sr["current"] and sr["current"] != s3["current"]
    assert sr["applied"] == ["p-00001"], "the retrain keeps the lineage: quarantined and rejected stay out"
    store = ModelStore(b)
    mr = store.read_manifest(sr["current"])
    assert mr["kind"] == "retrain" and mr["retrained_from"] == s3["current"]
    assert not any("p-damage" in u or "p-bad" in u for u in mr["inputs"]), mr["inputs"]
    assert mr["validation"] == store.read_manifest(s3["current"])["validation"]

    # then the update DAG with {"requeue": ["p-bad"]}: released from the quarantine (a review-log event),
    # checked again by the contract, quarantined again; nothing else changes
    rq, sq = res["runs"][5], res["after_requeue"]
    assert rq["state"].endswith("success"), rq
    assert rq["tasks"]["validate"].endswith("success") and rq["tasks"]["update"].endswith("skipped"), rq
    [event] = [e for e in sq["events"] if e["action"] == "requeue"]
    assert event["partitions"] == ["p-bad"] and event["released"][0]["by"] == "quarantine", event
    assert "requeue Param of run" in event["reason"], event
    assert "p-bad" in sq["quarantined"] and sq["current"] == sr["current"], sq


if __name__ == "__main__":
    driver(Path(sys.argv[1]), sys.argv[2], retrain="--retrain" in sys.argv[3:])

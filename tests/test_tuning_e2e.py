"""The tuning DAG end to end with real parts: Airflow's ``dag.test()``, real ``spark-submit`` trials (mapped), a
local bucket holding a real lineage (a bootstrap and two applied partitions, built with ``streamrec.spark.runs``).

1. ``streamrec_tune`` with 2 trials per part: both mapped trial tasks run, the report and ``params/tuned.json``
   are written;
2. ``streamrec_bootstrap`` with an empty form: its hyper-parameters come from the stored set, and the new
   version's manifest names the set and its digest;
3. ``streamrec_tune`` with a budget that is over before any trial can start: every trial is *skipped*, none
   failed.

Same subprocess pattern as ``tests/test_pipeline_e2e.py`` (this file is also the driver).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_support import _dags, _run, airflow_env, run_driver  # noqa: E402


def _lineage(work: Path, bucket: Path) -> None:
    """Synthetic history + 2 partitions, bootstrapped and updated with the jobs' own functions, published."""
    from streamrec.core.synth import SynthConfig
    from streamrec.core.synth_files import write_dataset
    from streamrec.spark.runs import Holdout, bootstrap_version, update_version
    from streamrec.spark.session import get_session
    from streamrec.storage.store import ModelStore

    data = work / "data"
    write_dataset(SynthConfig(n_users=200, n_items=300, n_ratings=12_000, seed=3), str(data), 2, 0.7)
    hist = bucket / "ratings" / "history"
    hist.mkdir(parents=True)
    for f in sorted((data / "history").iterdir()):
        (hist / f.name).write_bytes(f.read_bytes())
    inc = bucket / "ratings" / "incoming"
    inc.mkdir(parents=True)
    spark = get_session("tune-e2e-setup", checkpoint_dir=str(work / "ckpt"))
    store = ModelStore(str(bucket))
    from streamrec.core.params import BootstrapParams

    m = bootstrap_version(
        spark,
        store,
        [str(hist)],
        BootstrapParams(rank=4, iterations=4),
        holdout=Holdout(str(bucket / "validation"), 0.1, 42),
    )
    store.publish(m["version"])
    for pid in ("p-00001", "p-00002"):
        (inc / f"{pid}.csv").write_bytes((data / "partitions" / f"{pid}.csv").read_bytes())
        m, _ = update_version(spark, store, [(pid, str(inc / f"{pid}.csv"))])
        store.publish(m["version"])
    spark.stop()


def driver(work: Path) -> None:
    bucket = work / "bucket"
    _lineage(work, bucket)
    dags = _dags()
    out: dict = {}
    conf = {"trials": 2, "part": "both", "budget_minutes": 0, "replay": 2, "seed": 5}
    out["tune"] = _run(dags["streamrec_tune"], conf)
    out["tuned"] = json.loads((bucket / "params" / "tuned.json").read_text())
    out["reports"] = sorted(str(p.relative_to(bucket)) for p in (bucket / "reports" / "tuning").rglob("*.*"))
    out["bootstrap"] = _run(dags["streamrec_bootstrap"], {"holdout_fraction": 0.1})
    current = json.loads((bucket / "models" / "CURRENT").read_text())["version"]
    out["manifest"] = json.loads((bucket / "models" / "versions" / current / "manifest.json").read_text())
    out["tune_no_budget"] = _run(
        dags["streamrec_tune"], {**conf, "budget_minutes": 0.001, "part": "bootstrap"}
    )
    print("@@" + json.dumps(out, default=str), flush=True)


@pytest.mark.integration
@pytest.mark.slow
def test_tune_then_bootstrap_uses_the_tuned_set(tmp_path):
    env = airflow_env(tmp_path / "airflow", tmp_path / "bucket")
    res, _ = run_driver(tmp_path, env, __file__, str(tmp_path))
    print(json.dumps({k: res[k] for k in ("tune", "bootstrap", "tune_no_budget")}, indent=1))

    tune = res["tune"]
    assert tune["state"].endswith("success"), tune
    for tid in ("prepare", "finish"):
        assert tune["tasks"][tid].endswith("success"), tune
    tuned = res["tuned"]
    assert set(tuned["bootstrap"]) == {
        "rank", "reg", "iterations", "reg_user", "reg_item", "time_bin_days", "user_drift", "user_day",
    }  # fmt: skip
    assert set(tuned["update"]) == {"lr", "reg", "passes", "decay"}
    assert tuned["tuning"]["bootstrap"]["trials"] == 2 and tuned["tuning"]["update"]["trials"] == 2
    run = tuned["tuning"]["bootstrap"]["run"]
    for name in (
        "index.html",
        "result.json",
        "plan.json",
        "trials/bootstrap-001.json",
        "trials/update-001.json",
    ):
        assert f"reports/tuning/{run}/{name}" in res["reports"], res["reports"]

    boot = res["bootstrap"]
    assert boot["state"].endswith("success"), boot
    params = res["manifest"]["params"]
    assert params["param_set"]["bootstrap"]["name"] == "tuned"
    assert len(params["param_set"]["bootstrap"]["digest"]) == 12
    for k, v in tuned["bootstrap"].items():
        assert params["bootstrap"][k] == v, (k, params["bootstrap"])

    nb = res["tune_no_budget"]
    trial_states = [s for t, s in nb["tasks"].items() if t == "bootstrap_trial"]
    assert trial_states and all(s.endswith("skipped") for s in trial_states), nb
    assert not any(s.endswith("failed") for t, s in nb["tasks"].items() if t.endswith("_trial")), nb


if __name__ == "__main__":
    driver(Path(sys.argv[1]))

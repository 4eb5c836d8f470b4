"""``streamrec.pipeline.plans`` with plain inputs (no Airflow, no Spark session): the plans the DAG tasks return
and the argv they hand the jobs, parsed back with the jobs' own parsers; hyper-parameter resolution (form >
parameter set > current model > built-in default) on a real bucket; the spark-submit conf added at launch."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from streamrec import pipeline
from streamrec.core.arrays import ModelArrays
from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.launch import jvm, s3a
from streamrec.pipeline import plans
from streamrec.storage import paramsets

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
NOW = 1_790_000_000.0
HEADER = "user,item,rating,timestamp\n"
GOOD = HEADER + "1,10,3.5,964982703\n2,11,4.0,964982800\n3,10,5,964982900\n"
BAD = HEADER + "1,10,7.0,964982703\n0,11,4.0,964982800\n"
V0 = "v20260101T000000-boot-000000"
FORM_BOOT = {  # the bootstrap form's values as Airflow hands them to a task (hyper-parameters left empty)
    **dict.fromkeys(BootstrapParams().as_dict()),
    "param_set": "tuned",
    "holdout_fraction": 0.1,
    "rmse_ceiling": 1.2,
    "scale": "0.5:5:0.5",
}
FORM_UPD = {
    **dict.fromkeys(UpdateParams().as_dict()),
    "param_set": "tuned",
    "rmse_ceiling": 1.2,
    "tolerance": 0.01,
}


def _job(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_streamrec_job_{name}_plans", REPO / "jobs" / f"{name}.py"
    )
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


@pytest.fixture(scope="module")
def jobs():
    return {name: _job(name) for name in ("bootstrap", "update", "evaluate", "tune_trial")}


def _arrays() -> ModelArrays:
    return ModelArrays(
        mu=3.5,
        rank=2,
        user_ids=np.array([1, 2, 3], np.int64),
        user_bias=np.zeros(3),
        user_factors=np.full((3, 2), 0.1),
        item_ids=np.array([10, 11], np.int64),
        item_bias=np.zeros(2),
        item_factors=np.full((2, 2), 0.1),
        n=10,
    )


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_BUCKET", str(tmp_path / "bucket"))
    return pipeline.open_bucket()


def _publish_base(store, **manifest) -> str:
    v0 = store.write_arrays(_arrays(), {"kind": "bootstrap", "partitions": [], **manifest}, V0)
    store.publish(v0)
    return v0


# ------------------------------------------------------------------------------------------------------------
# argv, parsed back by the jobs
# ------------------------------------------------------------------------------------------------------------
def test_bootstrap_argv_is_what_the_job_parses(jobs):
    hp = BootstrapParams(rank=7, iterations=3, reg=0.2, bias_iterations=4, seed=9)
    argv = plans.bootstrap_argv(
        "b",
        ["r1", "r2"],
        "v1",
        "1:5:1",
        hp,
        kind="retrain",
        partition_ids=["p1", "p2"],
        holdout_fraction=0.2,
        holdout_seed=5,
        validation_uri="/val",
        lineage={"name": "tuned", "digest": "abc123"},
    )
    ns = jobs["bootstrap"].parse(argv)
    assert BootstrapParams.from_args(ns) == hp
    assert (ns.bucket, ns.ratings, ns.version, ns.kind) == ("b", ["r1", "r2"], "v1", "retrain")
    assert ns.partition_id == ["p1", "p2"] and str(ns.scale) == "1:5:1"
    assert (ns.holdout_fraction, ns.holdout_seed, ns.validation_uri) == (0.2, 5, "/val")
    assert paramsets.parse_lineage_arg(ns.param_set) == {"name": "tuned", "digest": "abc123"}
    # no hold-out: no hold-out flags at all
    plain = jobs["bootstrap"].parse(plans.bootstrap_argv("b", ["r"], "v1", "0.5:5:0.5", BootstrapParams()))
    assert plain.holdout_fraction == 0.0 and plain.validation_uri is None and plain.param_set is None


def test_update_argv_keeps_the_partition_order(jobs):
    hp = UpdateParams(lr=0.3, passes=2, decay=0.7, reg=1.5, seed=3)
    parts = [("c", "/x/c.csv"), ("a", "/x/a.csv"), ("b", "/x/b")]
    ns = jobs["update"].parse(plans.update_argv("b", "v0", "v1", parts, "0.5:5:0.5", hp))
    assert ns.partition == parts and ns.evaluate and (ns.base, ns.version) == ("v0", "v1")
    assert UpdateParams.from_args(ns) == hp
    ns = jobs["update"].parse(plans.update_argv("b", "v0", "v1", parts[:1], "0.5:5:0.5", hp, evaluate=False))
    assert not ns.evaluate
    with pytest.raises(ValueError, match="at least one partition"):
        plans.update_argv("b", "v0", "v1", [], "0.5:5:0.5", hp)


def test_evaluate_and_tuning_argv(jobs):
    ns = jobs["evaluate"].parse(plans.evaluate_argv("b", "v1", "1:5:1"))
    assert (ns.bucket, ns.version, str(ns.scale)) == ("b", "v1", "1:5:1")
    ns = jobs["tune_trial"].parse(plans.prepare_argv("b", "run1"))
    assert (ns.step, ns.bucket, ns.run) == ("prepare", "b", "run1")
    values = BootstrapParams(rank=20, reg=0.05).as_dict()
    ns = jobs["tune_trial"].parse(plans.trial_argv("bootstrap", "b", "run1", 3, values))
    assert ns.step == "bootstrap" and ns.trial == 3 and BootstrapParams.from_args(ns).as_dict() == values
    with pytest.raises(ValueError, match="rank must be"):
        plans.trial_argv("bootstrap", "b", "run1", 4, {**values, "rank": 0})
    with pytest.raises(ValueError, match="part must be"):
        plans.trial_argv("both", "b", "run1", 0, values)


def test_tuning_jobs_one_spec_per_trial(jobs):
    boot = [BootstrapParams().as_dict(), BootstrapParams(rank=20, reg=0.3, iterations=12).as_dict()]
    upd = [UpdateParams(lr=0.5, passes=3).as_dict()]
    out = plans.tuning_jobs(
        {"trials": {"bootstrap": boot, "update": upd}, "deadline": 123.5}, "run1", "s3://b"
    )
    assert out["run"] == "run1" and out["prepare_args"] == ["prepare", "--bucket", "s3://b", "--run", "run1"]
    assert [s["trial_label"] for s in out["bootstrap_trials"]] == [
        "0: rank=50 reg=0.1 iterations=10 reg_user=5.0 reg_item=5.0 time_bin_days=0 user_drift=0 user_day=0",
        "1: rank=20 reg=0.3 iterations=12 reg_user=5.0 reg_item=5.0 time_bin_days=0 user_drift=0 user_day=0",
    ]
    assert out["update_trials"][0]["trial_label"] == "0: lr=0.5 reg=5.0 passes=3 decay=0.9"
    assert all(s["deadline"] == 123.5 for s in out["bootstrap_trials"] + out["update_trials"])
    ns = jobs["tune_trial"].parse(out["bootstrap_trials"][1]["application_args"])
    assert BootstrapParams.from_args(ns).as_dict() == boot[1] and ns.trial == 1 and ns.bucket == "s3://b"


# ------------------------------------------------------------------------------------------------------------
# the plans, on a real bucket
# ------------------------------------------------------------------------------------------------------------
def test_bootstrap_plan_form_over_set_over_default(bucket, jobs):
    b, store = bucket
    doc = paramsets.save(b, "tuned", {"bootstrap": {"rank": 20, "reg": 0.3}})
    form = {**FORM_BOOT, "rank": 7}
    plan = plans.bootstrap_plan(b, store, form, "v1-boot", rows=123)
    hyper = plan["hyper"]
    assert hyper["values"] == BootstrapParams(rank=7, reg=0.3).as_dict()
    assert hyper["sources"]["rank"] == "explicit" and hyper["sources"]["reg"] == "set"
    assert hyper["sources"]["iterations"] == "default" and hyper["sources"]["seed"] == "default"
    assert hyper["param_set"] == {
        "name": "tuned",
        "digest": doc["digests"]["bootstrap"],
        "overridden": ["rank"],
    }
    ns = jobs["bootstrap"].parse(plan["argv"])
    assert BootstrapParams.from_args(ns) == BootstrapParams(rank=7, reg=0.3)
    assert (
        ns.ratings == [b.spark_uri(pipeline.HISTORY)] and ns.kind == "bootstrap" and ns.version == "v1-boot"
    )
    assert (ns.holdout_fraction, ns.holdout_seed) == (0.1, 42), "the hold-out splits with the resolved seed"
    assert ns.param_set == f"tuned@{doc['digests']['bootstrap']}"
    assert plan["evaluate_argv"] == [
        "--bucket",
        pipeline.bucket_uri(),
        "--version",
        "v1-boot",
        "--scale",
        "0.5:5:0.5",
    ]
    assert (
        plan["bucket"] == pipeline.bucket_uri() and plan["rows"] == 123 and plan["expected_current"] is None
    )
    assert plan["gate"] == {"published": None, "ceiling": 1.2, "tolerance": 0.0, "baseline": True}
    # an explicit seed is the ALS seed and the hold-out seed
    seeded = plans.bootstrap_plan(b, store, {**FORM_BOOT, "seed": 7, "param_set": None}, "v2", rows=1)
    ns = jobs["bootstrap"].parse(seeded["argv"])
    assert ns.seed == 7 and ns.holdout_seed == 7 and seeded["hyper"]["param_set"] is None


def test_bootstrap_plan_refuses_out_of_bounds_values(bucket):
    b, store = bucket
    with pytest.raises(ValueError, match="rank must be in"):
        plans.bootstrap_plan(b, store, {**FORM_BOOT, "rank": 0}, "v1", rows=1)


def test_update_plan_from_the_real_selection(bucket, jobs):
    b, store = bucket
    v0 = _publish_base(store)
    paramsets.save(b, "tuned", {"update": {"lr": 0.6, "passes": 2}})
    for k, (name, body) in enumerate([("a", GOOD), ("bad", BAD), ("c", GOOD)]):
        key = f"{pipeline.INCOMING}/{name}.csv"
        b.write_text(key, body)
        os.utime(b.uri(key), (NOW - 100 + k, NOW - 100 + k))
    found = pipeline.pending(b, store)
    sel = pipeline.check_and_select(b, store, found, NOW, False, 2)
    plan = plans.update_plan(b, found, sel, {**FORM_UPD, "decay": 0.5}, "v1-upd")
    assert plan["partitions"] == ["a", "c"] and [r["id"] for r in plan["checked"]] == ["a", "bad", "c"]
    ns = jobs["update"].parse(plan["argv"])
    assert ns.partition == [
        ("a", b.spark_uri("ratings/incoming/a.csv")),
        ("c", b.spark_uri("ratings/incoming/c.csv")),
    ]
    # no Spark evaluation on the hot path: the gate scores the candidate's validation set itself
    assert ns.base == v0 and ns.version == "v1-upd" and not ns.evaluate
    assert UpdateParams.from_args(ns) == UpdateParams(lr=0.6, passes=2, decay=0.5)
    assert plan["hyper"]["sources"]["decay"] == "explicit" and plan["hyper"]["sources"]["lr"] == "set"
    assert plan["expected_current"] == v0
    assert plan["gate"] == {"published": v0, "ceiling": 1.2, "tolerance": 0.01, "baseline": False}


def test_retrain_plan_takes_the_lineage_and_the_models_parameters(bucket, jobs):
    b, store = bucket
    with pytest.raises(plans.NoModelError, match="run streamrec_bootstrap first"):
        plans.retrain_plan(b, store, FORM_BOOT, "v-retrain")
    inputs = ["/r/history", "/r/incoming/a.csv"]
    hold = {"fraction": 0.1, "seed": 5, "uri": "/b/validation"}
    v0 = _publish_base(
        store,
        inputs=inputs,
        partitions=["a"],
        holdout=hold,
        validation=["/b/validation/history"],
        params={"bootstrap": {"rank": 12, "seed": 5, "iterations": 4}, "scale": "1:5:1"},
    )
    form = {k: v for k, v in FORM_BOOT.items() if k not in ("scale", "holdout_fraction")}
    plan = plans.retrain_plan(
        b, store, {**form, "iterations": 6, "param_set": "none", "tolerance": 0.05}, "v-rt"
    )
    ns = jobs["bootstrap"].parse(plan["argv"])
    assert ns.kind == "retrain" and ns.ratings == inputs and ns.partition_id == ["a"]
    assert (ns.holdout_fraction, ns.holdout_seed, ns.validation_uri) == (0.1, 5, "/b/validation")
    assert BootstrapParams.from_args(ns) == BootstrapParams(rank=12, seed=5, iterations=6)
    assert (
        plan["hyper"]["sources"]["rank"] == "model" and plan["hyper"]["sources"]["iterations"] == "explicit"
    )
    assert plan["scale"] == "1:5:1" and str(ns.scale) == "1:5:1"
    assert plan["expected_current"] == v0 and plan["validation"] == ["/b/validation/history"]
    assert (plan["inputs"], plan["partitions"]) == (2, ["a"])
    assert plan["gate"] == {"published": v0, "ceiling": 1.2, "tolerance": 0.05, "baseline": True}
    assert jobs["evaluate"].parse(plan["evaluate_argv"]).version == "v-rt"


# ------------------------------------------------------------------------------------------------------------
# spark-submit conf added where the job starts
# ------------------------------------------------------------------------------------------------------------
def test_driver_java_options_added_unless_given():
    conf = plans.with_driver_java_options({"spark.ui.enabled": "false"})
    assert conf == {"spark.ui.enabled": "false", "spark.driver.extraJavaOptions": jvm.driver_java_options()}
    mine = {"spark.driver.extraJavaOptions": "-Xss4m"}
    assert plans.with_driver_java_options(mine) == mine
    assert plans.with_driver_java_options(None)["spark.driver.extraJavaOptions"] == jvm.driver_java_options()


def test_s3a_conf_and_jars_without_secrets(tmp_path):
    jar = tmp_path / "hadoop-aws-3.5.0.jar"
    jar.write_bytes(b"")
    env = {
        "STREAMREC_S3A_JARS": str(jar),
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        "AWS_SECRET_ACCESS_KEY": "very-secret-value",
    }
    conf, jars = plans.with_s3a({"spark.hadoop.fs.s3a.endpoint": "http://mine:1", "a": "b"}, "x.jar", env)
    assert jars == f"x.jar,{jar}"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://mine:1", "a key already set wins"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true" and conf["a"] == "b"
    assert "very-secret-value" not in repr(conf)
    conf, jars = plans.with_s3a(None, None, {"STREAMREC_S3A_JARS": "provided"})
    assert jars is None and "spark.jars" not in conf
    with pytest.raises(s3a.S3AUnavailable):
        plans.with_s3a({}, None, {"STREAMREC_S3A_JARS_DIR": str(tmp_path / "none")})
    assert plans.uses_s3("s3://b/x") and not plans.uses_s3("/tmp/b", None)
    assert plans.aws_env_from_connection("id", "secret", {"region_name": "eu-west-3"}) == {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "eu-west-3",
    }
    assert set(plans.AWS_SECRET_VARS) == {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


# ------------------------------------------------------------------------------------------------------------
# the ranking rule: form -> plan -> job argv -> RankingRule (streamrec.core.params)
# ------------------------------------------------------------------------------------------------------------
def test_the_ranking_rule_walks_from_the_form_to_the_job(bucket, jobs):
    from streamrec.core.params import RankingRule
    from streamrec.core.ranking import DEFAULT

    b, store = bucket
    # left empty: the built-in rule, spelled out on the job's argv
    plan = plans.bootstrap_plan(b, store, {**FORM_BOOT, "param_set": "none"}, "v-b", rows=3)
    assert RankingRule.from_args(jobs["bootstrap"].parse(plan["argv"])) == DEFAULT
    assert plan["ranking"] == DEFAULT.as_dict()
    # given: top_k 0 turns the exported recommendations off; a whole float (JSON) is an int
    form = {**FORM_BOOT, "param_set": "none", "top_k": 0.0, "popularity": 0.5}
    plan = plans.bootstrap_plan(b, store, form, "v-b", rows=3)
    ns = jobs["bootstrap"].parse(plan["argv"])
    assert RankingRule.from_args(ns) == RankingRule(popularity=0.5, top_k=0)
    assert "--top-k" in plan["argv"] and ns.top_k == 0
    with pytest.raises(ValueError, match="top_k must be in \\[0, 1000\\], got -1"):
        plans.bootstrap_plan(b, store, {**form, "top_k": -1}, "v-b", rows=3)
    # a retrain keeps the current model's rule (its manifest's ``ranking``, extra keys and all) unless given
    _publish_base(
        store,
        inputs=["/r/history"],
        params={"bootstrap": {"rank": 4}},
        ranking={"min_ratings": 5, "shrink": 0.0, "popularity": 1.0, "top_k": 20, "seen": True},
    )
    retrain_form = {k: v for k, v in FORM_BOOT.items() if k not in ("scale", "holdout_fraction")}
    retrain_form.update(param_set="none", tolerance=0.05)
    plan = plans.retrain_plan(b, store, retrain_form, "v-rt")
    kept = RankingRule(min_ratings=5, popularity=1.0, top_k=20)
    assert RankingRule.from_args(jobs["bootstrap"].parse(plan["argv"])) == kept
    plan = plans.retrain_plan(b, store, {**retrain_form, "top_k": 0}, "v-rt")
    assert RankingRule.from_args(jobs["bootstrap"].parse(plan["argv"])) == RankingRule(
        min_ratings=5, popularity=1.0, top_k=0
    )

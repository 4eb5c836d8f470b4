"""DAG integrity and house policy, with Airflow's own DagBag (no scheduler, no server, no database writes).

The DAGs are parsed in a subprocess with a throw-away ``AIRFLOW_HOME``, the way the DAG processor parses them
(``BundleDagBag`` puts the dags folder on ``sys.path``), and the subprocess reports what it found as JSON, including
which heavy modules the parse imported (none may be: pyspark, pandas, numpy, pyarrow, Great Expectations) and which
streamrec modules (only the trigger forms' Params: ``streamrec.pipeline.forms`` and the dataclasses it reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
EXPECTED = {"streamrec_bootstrap", "streamrec_update", "streamrec_retrain", "streamrec_tune"}
HEAVY = ("pyspark", "great_expectations", "pandas", "numpy", "pyarrow")
# what the DAG files may load of streamrec when they are parsed: the Params of the trigger forms, generated from
# the parameter dataclasses (streamrec.pipeline loads its task functions lazily)
PARSE_TIME_STREAMREC = {
    "streamrec",
    "streamrec.core",
    "streamrec.core.params",
    "streamrec.pipeline",
    "streamrec.pipeline.forms",
}

_PARSE = r"""
import json, sys
before = set(sys.modules)
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1], bundle_name="dags-folder")
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(sys.argv[2].split(",")))
ours = sorted(m for m in set(sys.modules) - before if m == "streamrec" or m.startswith("streamrec."))
out = {"import_errors": {k: v for k, v in bag.import_errors.items()}, "heavy": heavy, "streamrec": ours, "dags": {}}
for dag_id, d in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(d.tags or []),
        "catchup": d.catchup,
        "doc_md": d.doc_md or "",
        "schedule": repr(d.timetable),
        "max_active_runs": d.max_active_runs,
        "default_retries": (d.default_args or {}).get("retries"),
        "params": sorted(d.params.keys()),
        "param_defaults": {k: d.params[k] for k in d.params.keys()},
        "param_specs": {
            k: {"description": d.params.get_param(k).description, "schema": d.params.get_param(k).schema}
            for k in d.params.keys()
        },
        "tasks": {
            t.task_id: {
                "retries": t.retries,
                "upstream": sorted(t.upstream_task_ids),
                "type": type(t).__name__,
                "outlets": [getattr(o, "name", None) for o in t.outlets],
                "conn_id": getattr(t, "_conn_id", None),
                "conf": getattr(t, "conf", None),
                "max_active_tis_per_dag": getattr(t, "max_active_tis_per_dag", None),
                "partial_kwargs": {
                    k: v for k, v in (getattr(t, "partial_kwargs", None) or {}).items()
                    if k in ("conn_id", "application", "conf")
                },
            }
            for t in d.tasks
        },
    }
print("@@" + json.dumps(out, default=str))
"""


def _parse_dags(home, **extra_env: str) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        # the update DAG imports its asset watcher's trigger from plugins/ (on sys.path in every Airflow process)
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        **extra_env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE, str(DAGS), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    return _parse_dags(tmp_path_factory.mktemp("airflow_home"))


def test_every_dag_imports_without_errors(parsed):
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == EXPECTED


def test_no_heavy_import_at_parse_time(parsed):
    assert parsed["heavy"] == [], f"DAG files import {parsed['heavy']} at parse time: import them in tasks"
    extra = set(parsed["streamrec"]) - PARSE_TIME_STREAMREC
    assert not extra, f"DAG files import {sorted(extra)} at parse time: import them in tasks"
    assert "streamrec.pipeline.forms" in parsed["streamrec"], "the forms' Params come from the dataclasses"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_house_policy(parsed, dag_id):
    d = parsed["dags"][dag_id]
    assert d["tags"] and "streamrec" in d["tags"]
    assert d["catchup"] is False
    assert len(d["doc_md"]) > 200, "the module docstring is the DAG's doc_md"
    assert d["default_retries"] >= 1
    assert all(t["retries"] >= 1 for t in d["tasks"].values())
    assert d["max_active_runs"] == 1


def test_spark_jobs_use_the_connection_and_our_python(parsed):
    spark_tasks = [
        (dag_id, tid, t)
        for dag_id, d in parsed["dags"].items()
        for tid, t in d["tasks"].items()
        if t["type"] == "SparkSubmitOperator"
    ]
    assert {(d, t) for d, t, _ in spark_tasks} >= {
        ("streamrec_bootstrap", "bootstrap"),
        ("streamrec_bootstrap", "evaluate"),
        ("streamrec_update", "update"),
        ("streamrec_retrain", "retrain"),
        ("streamrec_retrain", "evaluate"),
        ("streamrec_tune", "prepare"),
    }
    for _, _, t in spark_tasks:
        assert t["conn_id"] == "spark_default"
        assert t["conf"]["spark.pyspark.python"]


def test_schedules(parsed):
    assert "NullTimetable" in parsed["dags"]["streamrec_bootstrap"]["schedule"]
    assert "NullTimetable" in parsed["dags"]["streamrec_retrain"]["schedule"]
    # event-driven: the incoming/ asset (its watcher's trigger runs in the triggerer) or a slow fallback
    update = parsed["dags"]["streamrec_update"]["schedule"]
    assert update.startswith("AssetOrTimeSchedule("), update
    assert "name='streamrec_incoming'" in update and "streamrec_trigger.IncomingPartitionsTrigger" in update
    assert "DeltaTriggerTimetable(" in update and "seconds=300" in update, update


def test_wiring(parsed):
    boot = parsed["dags"]["streamrec_bootstrap"]["tasks"]
    assert boot["bootstrap"]["upstream"] == ["validate_history"]
    assert "bootstrap" in boot["evaluate"]["upstream"]
    assert "evaluate" in boot["gate"]["upstream"]
    assert {"gate"} <= set(boot["publish"]["upstream"]) and {"gate"} <= set(boot["reject"]["upstream"])
    assert {"publish", "reject"} <= set(boot["report"]["upstream"])
    upd = parsed["dags"]["streamrec_update"]["tasks"]
    assert upd["validate"]["upstream"] == ["find_new"]
    assert upd["update"]["upstream"] == ["validate"]
    # no evaluate task: the gate scores the update's candidate on its validation set itself (numpy)
    assert "evaluate" not in upd
    assert "update" in upd["gate"]["upstream"]
    for dag_id, d in parsed["dags"].items():
        if dag_id == "streamrec_tune":  # publishes no model
            continue
        assert d["tasks"]["publish"]["outlets"] == ["streamrec_model"]
        assert d["tasks"]["reject"]["outlets"] == []
    assert set(parsed["dags"]["streamrec_bootstrap"]["params"]) >= {
        "rank",
        "iterations",
        "reg",
        "reg_user",
        "reg_item",
        "seed",
        "holdout_fraction",
        "rmse_ceiling",
    }
    assert {"tolerance", "requeue"} <= set(parsed["dags"]["streamrec_update"]["params"])


def test_bootstrap_flags_are_the_jobs_flags():
    """The argv the bootstrap DAG builds (``BootstrapParams.to_argv``) parses with the job's own parser."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_streamrec_job_bootstrap", REPO / "jobs" / "bootstrap.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    from streamrec.core.params import BootstrapParams

    hp = BootstrapParams(rank=7, iterations=3, reg=0.2, reg_user=3.0, reg_item=4.0, seed=9)
    ns = job.parse(["--bucket", "b", "--ratings", "r", *hp.to_argv()])
    assert BootstrapParams.from_args(ns) == hp


def test_tuning_dag_maps_trials_one_at_a_time(parsed):
    d = parsed["dags"]["streamrec_tune"]
    tasks = d["tasks"]
    for tid in ("bootstrap_trial", "update_trial"):
        t = tasks[tid]
        assert t["type"] == "MappedOperator", "each trial is its own task instance in the UI"
        assert t["max_active_tis_per_dag"] in (1, 2), "2 cores: one or two trials at a time"
        assert t["partial_kwargs"]["conn_id"] == "spark_default"
        assert t["partial_kwargs"]["application"].endswith("jobs/tune_trial.py")
        assert t["partial_kwargs"]["conf"]["spark.pyspark.python"]
        assert "prepare" in t["upstream"]
    assert {"bootstrap_trial", "update_trial", "plan"} <= set(tasks["finish"]["upstream"])
    assert tasks["prepare"]["upstream"] == ["plan"]
    assert {"trials", "budget_minutes", "seed", "part", "param_set"} <= set(d["params"])
    assert "NullTimetable" in d["schedule"]


@pytest.mark.parametrize(
    ("dag_id", "fields"),
    [
        ("streamrec_bootstrap", ["rank", "iterations", "reg", "reg_user", "reg_item"]),
        ("streamrec_update", ["lr", "reg", "reg_factors", "passes", "decay", "prior_weight", "fold_in_reg"]),
    ],
)
def test_hyper_parameters_default_to_the_parameter_set(parsed, dag_id, fields):
    """null = "not given": the stored parameter set, else the built-in default (streamrec.storage.paramsets)."""
    defaults = parsed["dags"][dag_id]["param_defaults"]
    assert all(defaults[f] is None for f in fields), {f: defaults[f] for f in fields}
    assert defaults["param_set"] == "tuned"


def test_tune_trial_flags_are_the_jobs_flags():
    """The argv the tuning DAG builds for a trial parses with jobs/tune_trial.py's own parser."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_streamrec_job_tune", REPO / "jobs" / "tune_trial.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    from streamrec.core.params import BootstrapParams, UpdateParams

    hp = BootstrapParams(rank=7, iterations=3, reg=0.2)
    ns = job.parse(["bootstrap", "--bucket", "b", "--run", "r", "--trial", "2", *hp.to_argv()])
    assert BootstrapParams.from_args(ns) == hp and ns.trial == 2
    up = UpdateParams(lr=0.3, passes=2, decay=0.7, reg=1.5)
    ns = job.parse(["update", "--bucket", "b", "--run", "r", "--trial", "1", *up.to_argv()])
    assert UpdateParams.from_args(ns) == up


def test_update_batch_size_param(parsed, tmp_path):
    """``max_partitions_per_run`` (catch-up batching): on the form, default 1 unless
    ``$STREAMREC_MAX_PARTITIONS_PER_RUN`` says otherwise when the DAG is parsed; a bad value falls back to 1
    instead of breaking the DAG's import."""
    if "STREAMREC_MAX_PARTITIONS_PER_RUN" not in os.environ:
        assert parsed["dags"]["streamrec_update"]["param_defaults"]["max_partitions_per_run"] == 1
    seven = _parse_dags(tmp_path / "a", STREAMREC_MAX_PARTITIONS_PER_RUN="7")
    assert seven["import_errors"] == {}
    assert seven["dags"]["streamrec_update"]["param_defaults"]["max_partitions_per_run"] == 7
    junk = _parse_dags(tmp_path / "b", STREAMREC_MAX_PARTITIONS_PER_RUN="lots")
    assert junk["import_errors"] == {}
    assert junk["dags"]["streamrec_update"]["param_defaults"]["max_partitions_per_run"] == 1


# the forms that fit or update a model: every field of the part's dataclass is on them
FORMS = {"streamrec_bootstrap": "bootstrap", "streamrec_retrain": "bootstrap", "streamrec_update": "update"}


@pytest.mark.parametrize("dag_id", sorted(FORMS))
def test_every_hyper_parameter_is_on_the_form_with_its_bounds(parsed, dag_id):
    """One Param per field of ``BootstrapParams`` / ``UpdateParams``, nullable, default null, with the field's
    type, bounds and description (``streamrec.core.params`` metadata, via ``streamrec.pipeline.forms``)."""
    from streamrec.core.params import BootstrapParams, UpdateParams, param_specs

    cls = {"bootstrap": BootstrapParams, "update": UpdateParams}[FORMS[dag_id]]
    on_form = parsed["dags"][dag_id]["param_specs"]
    defaults = parsed["dags"][dag_id]["param_defaults"]
    for spec in param_specs(cls):
        assert spec.name in on_form, f"{dag_id} has no Param for {cls.__name__}.{spec.name}"
        schema, description = on_form[spec.name]["schema"], on_form[spec.name]["description"]
        assert defaults[spec.name] is None
        assert schema["type"] == ["null", spec.kind], (spec.name, schema)
        assert schema.get("minimum") == spec.minimum, (spec.name, schema)
        assert schema.get("maximum") == spec.maximum, (spec.name, schema)
        assert schema.get("exclusiveMinimum") == spec.exclusive_minimum, (spec.name, schema)
        assert schema.get("exclusiveMaximum") == spec.exclusive_maximum, (spec.name, schema)
        assert schema["title"] == spec.title and spec.doc in description
        assert not spec.bounded or spec.rule() in description
    assert on_form["param_set"]["schema"]["type"] == ["null", "string"]


def test_airflow_refuses_out_of_bounds_hyper_parameters_on_the_forms(parsed):
    """Airflow's own Param validation, with the schemas the parsed DAGs carry: rank = 0 and lr = 1.5 are refused
    before a run starts (so is a fractional rank); empty (null) and in-bounds values pass."""
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    def param(dag_id: str, name: str) -> Param:
        p = parsed["dags"][dag_id]["param_specs"][name]
        return Param(None, description=p["description"], schema=p["schema"])

    for dag_id in ("streamrec_bootstrap", "streamrec_retrain"):
        with pytest.raises(ParamValidationError):
            param(dag_id, "rank").resolve(0)
        with pytest.raises(ParamValidationError):
            param(dag_id, "rank").resolve(2.5)
        assert param(dag_id, "rank").resolve(8) == 8 and param(dag_id, "rank").resolve(None) is None
        # the ranking rule's Params (streamrec.core.params.RankingRule): top_k 0 (no export) is allowed
        with pytest.raises(ParamValidationError):
            param(dag_id, "top_k").resolve(-1)
        assert param(dag_id, "top_k").resolve(0) == 0 and param(dag_id, "popularity").resolve(None) is None
    with pytest.raises(ParamValidationError):
        param("streamrec_update", "lr").resolve(1.5)
    with pytest.raises(ParamValidationError):
        param("streamrec_update", "decay").resolve(0)
    assert param("streamrec_update", "lr").resolve(1.0) == 1.0


def test_with_a_connect_server_the_update_attaches_to_it_and_the_batch_jobs_keep_spark_submit(tmp_path):
    """``$STREAMREC_SPARK_REMOTE`` where the DAGs are parsed (``make airflow-up``, ``make cluster-up``): the update
    task runs ``jobs/update.py`` as a Spark Connect client (a Python task, no JVM in the worker); bootstrap,
    retrain, evaluate and the tuning's preparation stay ``spark-submit`` jobs; still nothing heavy at parse time."""
    parsed = _parse_dags(tmp_path, STREAMREC_SPARK_REMOTE="sc://127.0.0.1:15002")
    assert parsed["import_errors"] == {} and parsed["heavy"] == []
    assert not set(parsed["streamrec"]) - PARSE_TIME_STREAMREC
    upd = parsed["dags"]["streamrec_update"]["tasks"]
    assert upd["update"]["type"] == "_PythonDecoratedOperator", upd["update"]
    assert upd["update"]["upstream"] == ["validate"] and "update" in upd["gate"]["upstream"]
    assert upd["update"]["retries"] >= 1  # a try that lost the server is retried (a fresh session)
    for dag_id, tid in [
        ("streamrec_bootstrap", "bootstrap"),
        ("streamrec_bootstrap", "evaluate"),
        ("streamrec_retrain", "retrain"),
        ("streamrec_tune", "prepare"),
    ]:
        assert parsed["dags"][dag_id]["tasks"][tid]["type"] == "SparkSubmitOperator", (dag_id, tid)

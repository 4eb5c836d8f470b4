"""What the streamrec DAGs share: defaults, the Spark job factory, the model Asset, the trigger-form Params.
Wiring only: what a task decides (argv, plans, the spark-submit conf) is ``streamrec.pipeline`` (``plans``).

Imported by the DAG files at parse time, so it imports nothing heavy: of streamrec only
``streamrec.pipeline.forms`` (the Params, generated from the parameter dataclasses; no numpy, pyspark, pandas or
GX: the tasks import those when they run). Listed in ``.airflowignore``: it defines no DAG.

Configuration (environment, read when a task runs unless noted):

* ``STREAMREC_BUCKET``   bucket root (folder, ``file://`` or ``s3://bucket[/prefix]``); default ``<repo>/var/bucket``
* ``STREAMREC_HOME``     the repository (where ``jobs/`` is); default: this file's parent folder (parse time)
* ``STREAMREC_PYTHON``   the interpreter Spark's Python runs (with streamrec's dependencies); default: the one
                         parsing the DAGs (parse time)
* the ``spark_default`` connection, e.g. ``AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type":"spark","host":"local[2]"}'``,
  and ``spark-submit`` on the workers' ``PATH``.
* S3 (``STREAMREC_BUCKET=s3://...``): the ``aws_default`` connection (``STREAMREC_AWS_CONN_ID``; login = access
  key id, password = secret, extra ``endpoint_url`` / ``region_name`` / ``aws_session_token``) if it exists,
  over the standard ``AWS_*`` variables of the workers; see :func:`use_s3` and ``docs/S3.md``.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param

from streamrec.pipeline import forms

HOME = Path(os.environ.get("STREAMREC_HOME") or Path(__file__).resolve().parent.parent)
JOBS = HOME / "jobs"
PYTHON = os.environ.get("STREAMREC_PYTHON") or sys.executable

MODEL_ASSET = Asset(name="streamrec_model", uri="streamrec://model/current", group="streamrec")
"""Updated by every publish; the event's ``extra`` carries ``version`` and ``rmse``."""


# --- S3: credentials and Spark's s3a conf, resolved when a task runs (docs/S3.md) -------------------------------
AWS_CONN_ID = os.environ.get("STREAMREC_AWS_CONN_ID", "aws_default")


def use_s3(context) -> None:
    """Part of every streamrec task's ``pre_execute`` (:func:`prepare_task`): with an ``s3://`` bucket, the AWS settings into the environment.

    The ``AWS_CONN_ID`` connection, if defined, wins over the worker's ``AWS_*`` variables (only the fields it
    sets). Secret values are registered with Airflow's log masker. For a ``SparkSubmitOperator`` it also adds
    the s3a jars and non-secret ``fs.s3a.*`` conf to the submit line (``streamrec.pipeline.plans.with_s3a``); the
    credentials reach spark-submit only through its environment (inherited from this process): never as
    ``--conf`` (the operator logs its command line) nor ``env_vars`` (a templated field shown in the UI; on
    YARN/Kubernetes it becomes ``--conf`` too).
    """
    from streamrec.pipeline import plans

    task = context["task"]
    if not plans.uses_s3(
        os.environ.get("STREAMREC_BUCKET"), *(getattr(task, "application_args", None) or [])
    ):
        return
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    try:
        conn = Connection.get(AWS_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        found = plans.aws_env_from_connection(conn.login, conn.password, conn.extra_dejson)
        os.environ.update(found)
        print(f"S3 settings from connection {AWS_CONN_ID!r}: {sorted(found)}")
    for var in plans.AWS_SECRET_VARS:
        if os.environ.get(var):
            mask_secret(os.environ[var], var)
    if isinstance(task, SparkSubmitOperator):
        task.conf, task.jars = plans.with_s3a(task.conf, task.jars)


# --- end S3 -----------------------------------------------------------------------------------------------------


def prepare_task(context) -> None:
    """``pre_execute`` of every streamrec task: the S3 settings (:func:`use_s3`) and, for a Spark job, the driver
    JVM's start-up options for this worker (``streamrec.pipeline.plans.with_driver_java_options``: the class-data
    archive recorded by ``make setup`` lives in the worker's virtualenv, so it is looked up where the task runs,
    not where the DAG is parsed)."""
    task = context["task"]
    if isinstance(task, SparkSubmitOperator):
        from streamrec.pipeline import plans

        task.conf = plans.with_driver_java_options(task.conf)
    use_s3(context)


DEFAULT_ARGS = {
    "owner": "streamrec",
    "retries": 1,
    "retry_delay": timedelta(seconds=20),
    "pre_execute": prepare_task,
}

SPARK_CONF = {
    # Python workers and the driver run the interpreter that has streamrec's dependencies, whatever python3 is
    # first on PATH (under spark-submit the JVM is already up: environment variables alone come too late).
    "spark.pyspark.python": PYTHON,
    "spark.pyspark.driver.python": PYTHON,
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
SPARK_ENV = {"SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"), "PYSPARK_PYTHON": PYTHON}


CONNECT_JOBS = ("update",)
"""Jobs that attach to the warm Spark Connect server when ``$STREAMREC_SPARK_REMOTE`` is set where the DAGs are
parsed (the stacks of ``make airflow-up`` and ``make cluster-up`` set it): the update's hot path. The batch jobs
(bootstrap, retrain, tuning, evaluation of a bootstrap) keep ``spark-submit``: minutes of ALS, where a JVM start
is noise and a job of its own keeps its memory apart from the stream's (docs/STREAMING.md)."""


def spark_job(task_id: str, job: str, application_args, **kwargs):
    """A ``jobs/<job>.py`` run through ``spark-submit`` on the ``spark_default`` connection or, for the
    :data:`CONNECT_JOBS` when a Connect server is configured, the same job and argv as a Connect client
    (:func:`connect_job`)."""
    if job in CONNECT_JOBS and os.environ.get("STREAMREC_SPARK_REMOTE"):
        return connect_job(task_id, job, application_args)
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / f"{job}.py"),
        conn_id="spark_default",
        name=f"streamrec-{job}",
        conf=dict(SPARK_CONF),
        env_vars=dict(SPARK_ENV),
        application_args=application_args,
        driver_memory=os.environ.get("STREAMREC_DRIVER_MEMORY", "2g"),
        **kwargs,
    )


def connect_job(task_id: str, job: str, application_args):
    """``jobs/<job>.py application_args`` run by plain Python, attached to the Spark Connect server at
    ``$STREAMREC_SPARK_REMOTE`` (``streamrec.pipeline.connect.run_job``: fails cleanly when the server is down,
    the task's lane of one long-lived session, what an earlier try left running interrupted first). No JVM in the
    Airflow worker."""
    from airflow.sdk import task

    @task(task_id=task_id)
    def run_connect_job(argv: list[str], ti=None) -> None:
        from streamrec.pipeline import connect

        connect.run_job(
            JOBS / f"{job}.py",
            argv,
            lane=connect.task_lane(ti.dag_id, ti.task_id),  # one at a time: max_active_runs=1
            attempt=ti.try_number,
            python=PYTHON,
            wait_seconds=float(os.environ.get("STREAMREC_CONNECT_WAIT_SECONDS", 30)),
        )

    return run_connect_job(application_args)


def gate_params(tolerance: bool = True) -> dict[str, Param]:
    """The gate's settings on a trigger form (one definition for every DAG that gates a candidate):
    ``rmse_ceiling`` always, ``tolerance`` where there is a published model to compare with."""
    out = {}
    if tolerance:
        out["tolerance"] = Param(
            0.01,
            type="number",
            minimum=0,
            description="relative RMSE worsening allowed vs the published model (0.01 = 1 %)",
        )
    out["rmse_ceiling"] = Param(1.2, type="number", exclusiveMinimum=0, description="the gate's absolute bar")
    return out


def hyper_params(part: str, exclude: tuple[str, ...] = (), retrain: bool = False) -> dict[str, Param]:
    """The hyper-parameters of ``part`` (``bootstrap`` | ``update``) on a trigger form, plus ``param_set``: one
    Param per field of ``BootstrapParams`` / ``UpdateParams`` with that field's type, bounds and description
    (``streamrec.pipeline.forms``), default ``null`` = "take it from the parameter set, else the built-in
    default" (``streamrec.storage.paramsets``; ``retrain``: else the current model's, then the built-in one)."""
    null_means = forms.NULL_MEANS_RETRAIN if retrain else forms.NULL_MEANS
    return {name: Param(**spec) for name, spec in forms.hyper_form(part, exclude, null_means).items()}


def ranking_params(retrain: bool = False) -> dict[str, Param]:
    """The ranking rule's Params (``streamrec.pipeline.forms.ranking_form``): which items a version recommends and
    how many per user its exported top-K keeps (``top_k`` 0: no export)."""
    return {name: Param(**spec) for name, spec in forms.ranking_form(retrain).items()}


def review_links(*keys: str) -> str:
    """Where a person reads these report keys: the streamrec review page (``plugins/streamrec_review.py``) serves
    the bucket's ``reports/`` behind Airflow's login, so the links work for a local folder and for ``s3://``.
    Printed in the task logs: the run's links to its reports."""
    base = os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")
    if not base:
        try:
            from airflow.configuration import conf

            base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        except Exception:  # noqa: BLE001 - a link is a convenience, never a task failure
            base = ""
    lines = [f"review page: {base}/streamrec/"]
    lines += [f"  {key}: {base}/streamrec/files/{key}" for key in keys]
    return "\n".join(lines)


def gate_and_publish(plan, after, fail_on_reject: bool):
    """``after`` >> gate (branch) -> publish (emits the model Asset) | reject -> report. Returns the last task.

    ``plan`` (a plan task's XCom) names the candidate (``version``), the ``bucket``, the version the pointer
    must still name at publish time (``expected_current``), the model the candidate is judged against
    (``published``: None for a fresh bootstrap) and the gate's settings (``ceiling``, ``tolerance``,
    ``baseline``). With ``fail_on_reject`` a rejected candidate fails the run (bootstrap, retrain: someone asked
    for that model); without it a rejection is a normal outcome (the stream carries on).
    """
    from airflow.sdk import task

    @task.branch(task_id="gate")
    def gate(plan: dict) -> str:
        from streamrec import pipeline

        _, store = pipeline.open_bucket(plan["bucket"])
        g = plan["gate"]
        d = pipeline.decide(
            store, plan["version"], g["published"], g["ceiling"], g["tolerance"], g["baseline"]
        )
        print(f"gate of {plan['version']}: {'ACCEPTED' if d['accepted'] else 'REJECTED'}: {d['reasons']}")
        return "publish" if d["accepted"] else "reject"

    @task(task_id="publish", outlets=[MODEL_ASSET])
    def publish(plan: dict, **context) -> dict:
        from streamrec import pipeline

        _, store = pipeline.open_bucket(plan["bucket"])
        m = pipeline.publish(store, plan["version"], plan["expected_current"])
        extra = pipeline.model_event_extra(m)
        context["outlet_events"][MODEL_ASSET].extra = extra
        print(f"published {m['version']}: {extra}")
        return extra

    @task(task_id="reject")
    def reject(plan: dict) -> dict:
        from streamrec import pipeline

        _, store = pipeline.open_bucket(plan["bucket"])
        m = pipeline.reject(store, plan["version"], store.read_manifest(plan["version"]).get("gate") or {})
        print(f"rejected {m['version']}: {m.get('reason')}")
        return {"version": m["version"], "reason": m.get("reason")}

    @task(task_id="report", trigger_rule="none_failed_min_one_success")
    def report(plan: dict) -> dict:
        from streamrec import pipeline

        bucket, store = pipeline.open_bucket(plan["bucket"])
        out = pipeline.write_reports(bucket, store, plan["version"], plan["gate"]["published"])
        print(f"gate report: {out['gate_report']}\nindex:       {out['index']}")
        print(review_links(f"reports/gates/{plan['version']}.html", "reports/index.html"))
        if fail_on_reject and out["status"] != "published":
            from airflow.sdk.exceptions import AirflowFailException

            reasons = (store.read_manifest(plan["version"]).get("gate") or {}).get("reasons")
            raise AirflowFailException(f"candidate {plan['version']} rejected by the gate: {reasons}")
        return out

    branch = gate(plan)
    after >> branch
    done = report(plan)
    branch >> [publish(plan), reject(plan)] >> done
    return done

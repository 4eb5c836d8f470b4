"""
### streamrec_retrain: rebuild the model from everything accepted so far, through the same gate

Triggered by hand. Reads the *current* model's manifest: its `inputs` (the history plus every applied
partition, in order) and its `partitions` (their ids), and fits a fresh model on them with `jobs/bootstrap.py
--kind retrain` (biases + ALS; each hyper-parameter from the form, else the named parameter set a tuning run
stored (`streamrec.storage.paramsets`), else the current model's bootstrap, else the built-in default). The held-out rows stay held out: the same deterministic split (`holdout` seed and fraction of the
lineage) excludes them from training, and the retrained candidate is judged on the current model's validation
set. Quarantined partitions and partitions held by rejected candidates are not inputs (they are not in the
lineage).

Gate: under `rmse_ceiling`, better than its biases-only baseline, and not worse than the published model by more
than `tolerance` on the same rows. Then publish (the `streamrec_model` Asset event) or reject (the run fails;
the candidate stays, marked rejected). The publish refuses to move the pointer if an update was published while
the retrain ran (the retrain would drop that partition from the lineage): run it again.
"""

from __future__ import annotations

from datetime import datetime

from _streamrec_common import DEFAULT_ARGS, gate_and_publish, gate_params, hyper_params, spark_job
from airflow.sdk import dag, task


@dag(
    dag_id="streamrec_retrain",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["streamrec", "spark", "model"],
    doc_md=__doc__,
    params={
        # empty = from the parameter set, else as the current model, else the built-in default
        **hyper_params("bootstrap", retrain=True),
        **gate_params(),
    },
)
def streamrec_retrain():
    @task
    def plan_retrain(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from streamrec import pipeline
        from streamrec.pipeline import plans

        bucket, store = pipeline.open_bucket()
        version = pipeline.version_id("retrain", dag_run.run_id, dag_run.run_after)
        try:
            plan = plans.retrain_plan(bucket, store, params, version)
        except plans.NoModelError as exc:
            raise AirflowFailException(str(exc)) from None
        print(f"parameters {plan['hyper']['values']} from {plan['hyper']['sources']}")
        print(f"parameter set {plan['hyper']['param_set']}")
        print(
            f"retrain of {plan['expected_current']}: {plan['inputs']} inputs, partitions {plan['partitions']}"
        )
        return plan

    @task
    def attach_validation(plan: dict) -> None:
        """A retrain re-reads rows whose held-out share is already stored: judge it on the lineage's set."""
        from streamrec import pipeline

        _, store = pipeline.open_bucket(plan["bucket"])
        store.update_manifest(
            plan["version"], validation=plan["validation"], retrained_from=plan["expected_current"]
        )

    plan = plan_retrain()
    fit = spark_job("retrain", "bootstrap", plan["argv"])
    evaluate = spark_job("evaluate", "evaluate", plan["evaluate_argv"])
    fit >> attach_validation(plan) >> evaluate
    gate_and_publish(plan, after=evaluate, fail_on_reject=True)


streamrec_retrain()

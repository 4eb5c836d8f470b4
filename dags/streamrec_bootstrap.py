"""
### streamrec_bootstrap: fit the first model (or a fresh one) from the ratings history

Triggered by hand (**Trigger** → the form below). Steps:

1. **validate_history**: the data contract (Great Expectations suite `expectations/ratings_partition.json`) on
   `ratings/history/` of the bucket; a failing history fails the run with the contract's one-line reason
   (report: `reports/partitions/history/report.json`, Data Docs: `reports/datadocs/history/index.html`).
2. **bootstrap**: `jobs/bootstrap.py` through `spark-submit` (connection `spark_default`): biases + ALS on the
   residuals; `holdout_fraction` of the rows go to `validation/history` and are never trained on. The version id
   comes from the run (`v<time>-boot-<hash of run id>`), so a retry rewrites the same candidate.
3. **evaluate**: `jobs/evaluate.py`, RMSE/MAE on the validation set, into the candidate's manifest.
4. **gate**: under `rmse_ceiling` and better than the biases-only baseline (the candidate with its factors
   zeroed, on the same rows). A bootstrap is a fresh start: it is not compared with a published model.
5. **publish** (pointer `models/CURRENT`, then the `streamrec_model` Asset event with `{version, rmse}`) or
   **reject** (the candidate stays under `models/versions/` with status `rejected`; the run fails).
6. **report**: `reports/gates/<version>.html` and the index `reports/index.html` (paths in the task log).

Hyper-parameters left empty in the form come from the parameter set named `param_set` (default `tuned`,
`params/tuned.json` in the bucket, written by `streamrec_tune`), else from the built-in defaults
(`streamrec.core.params.BootstrapParams`, whose bounds the form enforces); a value typed in the form always wins.
`seed` also splits the hold-out. The manifest records the set's name and digest under `params.param_set.bootstrap`.

Publishing a bootstrap starts a new lineage: partitions in `ratings/incoming/` that it does not hold are applied
on top of it by `streamrec_update`. The bucket is `$STREAMREC_BUCKET` (default `<repo>/var/bucket`).
"""

from __future__ import annotations

from datetime import datetime

from _streamrec_common import DEFAULT_ARGS, gate_and_publish, gate_params, hyper_params, spark_job
from airflow.sdk import Param, dag, task


@dag(
    dag_id="streamrec_bootstrap",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["streamrec", "spark", "model"],
    doc_md=__doc__,
    params={
        # every BootstrapParams field (seed too), default null = from the parameter set, else built-in
        **hyper_params("bootstrap"),
        "holdout_fraction": Param(
            0.1,
            type="number",
            minimum=0.01,
            maximum=0.5,
            description="share of every batch kept for validation, never trained on",
        ),
        **gate_params(tolerance=False),
        "scale": Param(
            "0.5:5:0.5",
            type="string",
            pattern=r"^[0-9.]+:[0-9.]+:[0-9.]+$",
            description="rating scale LOW:HIGH:STEP",
        ),
    },
)
def streamrec_bootstrap():
    @task
    def validate_history(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from streamrec import pipeline
        from streamrec.pipeline import plans
        from streamrec.pipeline.contract import check_partition

        bucket, store = pipeline.open_bucket()
        scale = pipeline.RatingScale.parse(params["scale"])
        check = check_partition(bucket, pipeline.HISTORY, scale, dag_run.run_after.timestamp())
        print(f"history: {check.reason} ({check.n_rows} rows); report {bucket.uri(check.report_key)}")
        if not check.ok:
            raise AirflowFailException(f"ratings history fails the data contract: {check.reason}")
        version = pipeline.version_id("boot", dag_run.run_id, dag_run.run_after)
        plan = plans.bootstrap_plan(bucket, store, params, version, rows=check.n_rows)
        print(f"parameters {plan['hyper']['values']} from {plan['hyper']['sources']}")
        print(f"parameter set {plan['hyper']['param_set']}")
        return plan

    plan = validate_history()
    fit = spark_job("bootstrap", "bootstrap", plan["argv"])
    evaluate = spark_job("evaluate", "evaluate", plan["evaluate_argv"])
    plan >> fit >> evaluate
    gate_and_publish(plan, after=evaluate, fail_on_reject=True)


streamrec_bootstrap()

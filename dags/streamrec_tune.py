"""
### streamrec_tune: estimate the hyper-parameters, store them as a named parameter set

Triggered by hand with a budget. The talk leaves hyper-parameter estimation open ("the step size that suits one
stream diverges on another"); this DAG searches, on the data the pipeline has accepted, and stores what it finds
as `params/<param_set>.json` in the bucket, which `streamrec_bootstrap` and `streamrec_update` then use for every
hyper-parameter left empty in their forms (explicit > stored set > built-in default; every version's manifest
records the set's name and digest under `params.param_set`).

1. **plan**: reads the current model's manifest (its inputs: the history and every applied partition, its
   hold-out) and writes `reports/tuning/<run>/plan.json`: the trials of each part (trial 0 = the parameters in
   use now, the baseline; the others random draws, seeded), the data, the deadline.
2. **prepare** (`jobs/tune_trial.py prepare`): the data once, as Parquet under `tuning/<run>/`: the accepted rows
   **without the store's validation rows** (those judge models at the gate: picking on them would be picking on
   the test set), split again by a salted deterministic hash into fit and score rows; the partitions to replay
   (without their hold-out); and, when no ancestor version is the right start, the replay's start model.
3. **bootstrap_trial** (mapped, one per trial; `jobs/tune_trial.py bootstrap`): random search over rank, λ (reg)
   and iterations; our own fit (biases + ALS on the residuals) on the fit rows, RMSE on the score rows.
4. **update_trial** (mapped; `jobs/tune_trial.py update`): random search over γ (lr), λ (reg), passes and decay by
   *prequential replay* of the last `replay` applied partitions: each is predicted before it is absorbed, from
   the model the stream had before them (the ancestor version), or a bootstrap on the data before them.
5. **finish**: per part, adopts the lowest-scoring trial only if it beats trial 0 (the current parameters) by
   more than the split's noise (paired bootstrap over users and items of the per-row errors, Bonferroni over
   the trials), else keeps the current values; writes `reports/tuning/<run>/index.html` (the rule, a guard table)
   and `result.json`, and stores the adopted values as the parameter set (link in the task log).

**Budget.** Trials run one at a time per kind (`max_active_tis_per_dag`, `$STREAMREC_TUNE_CONCURRENCY`, default
1: each trial is a `local[2]` Spark job on a 2-core machine), so at most two at once. Once `budget_minutes` have
passed since the run started, trials that have not started are **skipped** (not failed); a running trial
finishes. `finish` runs whatever happened and reports the trials that did not run.
"""

from __future__ import annotations

from datetime import datetime

from _streamrec_common import DEFAULT_ARGS, spark_job
from _streamrec_tuning import trial_operator
from airflow.sdk import Param, dag, task


@dag(
    dag_id="streamrec_tune",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["streamrec", "spark", "tuning"],
    doc_md=__doc__,
    params={
        "trials": Param(8, type="integer", minimum=1, maximum=200, description="trials per part"),
        "budget_minutes": Param(
            30, type="number", minimum=0, description="no trial starts after this (0: no limit)"
        ),
        "seed": Param(42, type="integer", description="seed of the draws and of the tuning split"),
        "part": Param(
            "both", type="string", enum=["bootstrap", "update", "both"], description="what to tune"
        ),
        "replay": Param(5, type="integer", minimum=1, description="update: applied partitions replayed"),
        "validation_fraction": Param(
            0.2,
            type="number",
            exclusiveMinimum=0,
            exclusiveMaximum=1,
            description="bootstrap: share of the accepted rows that scores the trials",
        ),
        "param_set": Param(
            "tuned",
            type=["null", "string"],
            description="store the result as params/<name>.json; also the baseline's source "
            "(empty or 'none': report only, store nothing)",
        ),
    },
)
def streamrec_tune():
    @task
    def plan(params=None, dag_run=None) -> dict:
        import time

        from streamrec import pipeline
        from streamrec.pipeline import plans, tuning

        bucket, _ = pipeline.open_bucket()
        run = pipeline.version_id("tune", dag_run.run_id, dag_run.run_after)
        start = dag_run.start_date.timestamp() if dag_run.start_date else time.time()
        p = tuning.make_plan(
            bucket,
            run,
            params["part"],
            params["trials"],
            params["seed"],
            params["budget_minutes"],
            start,
            replay=params["replay"],
            fraction=params["validation_fraction"],
            param_set=params.get("param_set"),
        )
        for note in p["notes"]:
            print(note)
        jobs = plans.tuning_jobs(p, run)
        print(
            f"run {run}: {len(jobs['bootstrap_trials'])} bootstrap and {len(jobs['update_trials'])} update "
            f"trials; deadline {p['deadline']}"
        )
        print(f"plan: {bucket.uri(tuning.plan_key(run))}")
        return jobs

    @task(trigger_rule="all_done")
    def finish(p: dict, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from streamrec import pipeline
        from streamrec.pipeline import tuning

        bucket, _ = pipeline.open_bucket()
        result = tuning.finish(bucket, p["run"], params.get("param_set"))
        for part, r in result["parts"].items():
            chosen = r["chosen"] or {}
            print(
                f"{part}: {r['finished']}/{r['planned']} trials; chosen trial {chosen.get('index')} "
                f"{chosen.get('tuned')} score {chosen.get('rmse')} (baseline {(r['baseline'] or {}).get('rmse')})"
            )
        print(f"tuning report: {result['report']}")
        if result["param_set"]:
            print(
                f"parameter set: {bucket.uri(result['param_set_key'])} digest {result['param_set']['digest']}"
            )
        if not any(r["chosen"] for r in result["parts"].values()):
            raise AirflowFailException(f"no trial finished; see {result['report']}")
        return {"report": result["report"], "param_set": result["param_set_key"]}

    @task
    def trials_of(p: dict, part: str) -> list[dict]:
        """The trial specs of one part, as a list a mapped task can expand over."""
        return p[f"{part}_trials"]

    p = plan()
    prepare = spark_job("prepare", "tune_trial", p["prepare_args"])
    boot_specs = trials_of.override(task_id="bootstrap_specs")(p, "bootstrap")
    upd_specs = trials_of.override(task_id="update_specs")(p, "update")
    boot = trial_operator("bootstrap_trial").expand_kwargs(boot_specs)
    upd = trial_operator("update_trial").expand_kwargs(upd_specs)
    prepare >> [boot, upd]
    [boot, upd] >> finish(p)


streamrec_tune()

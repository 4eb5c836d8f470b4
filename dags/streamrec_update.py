"""
### streamrec_update: fold each new partition into the published model, exactly once, in arrival order

Runs every 30 s; nobody starts it. Drop a partition (one file, or a folder of files that arrive together) into
`ratings/incoming/` of the bucket (`$STREAMREC_BUCKET`). Each run:

1. **find_new**: lists `incoming/` minus what the published model has absorbed, what is quarantined and what a
   rejected candidate holds; nothing new = the run ends here (the other tasks are skipped).
2. **validate**: the data contract (GX suite `expectations/ratings_partition.json`) on each pending partition,
   in arrival order: a failing one is copied to `quarantine/<id>/` with its reason (the raw file stays), and the
   first `max_partitions_per_run` that pass (default 1) are this run's batch.
3. **update**: `jobs/update.py` applies the batch to the published model, in order (10 % of each partition is
   held out into the validation set, never trained on), with the new version's seen items and recommendations;
   over the warm Spark Connect server when the stack runs one, else through `spark-submit`.
4. **gate**: scores the candidate and the published model on the candidate's validation set (numpy; the numbers
   become the candidate's validation metrics): its RMSE may not exceed the published model's on the same rows by
   more than `tolerance`, nor `rmse_ceiling`.
5. **publish** (pointer `models/CURRENT`, then the `streamrec_model` Asset event) or **reject** (the candidate
   stays under `models/versions/` as `rejected`; its partitions are held, the stream carries on).
6. **report**: `reports/gates/<version>.html` and `reports/index.html` (links in the task log).

**Re-queue** a partition held by a rejected candidate, a rollback or the quarantine: trigger with
`{"requeue": ["<partition id>"]}` (or use the review page, Browse → streamrec review).
**Catch up** on a backlog: raise `max_partitions_per_run` (the gate then judges the batch as a whole).
**Hyper-parameters** (γ, λ, passes, ...) left empty come from the parameter set `param_set` (default `tuned`,
written by `streamrec_tune`), else the built-in defaults; the form enforces their bounds.

Why it lists instead of using a sensor, why one partition per run by default, and how it stays exactly-once
after a crash: `docs/PIPELINE.md` in the streamrec repository.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from _streamrec_common import (
    DEFAULT_ARGS,
    gate_and_publish,
    gate_params,
    hyper_params,
    review_links,
    spark_job,
)
from airflow.sdk import Param, dag, task
from streamrec_trigger import update_schedule  # plugins/: the incoming/ asset watcher + fallback timetable

from streamrec.pipeline.forms import max_partitions_default


def _who(dag_run) -> str | None:
    """Who triggered the run (Airflow 3.1+ records it), for the review log."""
    return getattr(dag_run, "triggering_user_name", None)


@dag(
    dag_id="streamrec_update",
    schedule=update_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=30),
    tags=["streamrec", "spark", "model", "stream"],
    doc_md=__doc__,
    params={
        **gate_params(),
        "requeue": Param(
            [],
            type="array",
            items={"type": "string"},
            description="partition ids to offer again: held by a gate-rejected candidate, a rollback or the "
            "quarantine (logged in the review log, like the review page's re-queue)",
        ),
        "build_docs": Param(True, type="boolean", description="build GX Data Docs for every partition"),
        "max_partitions_per_run": Param(
            max_partitions_default(),
            type="integer",
            minimum=1,
            maximum=1000,
            description="contract-passing partitions applied per run, in arrival order, as one candidate "
            "(1: the gate judges each partition alone; more: catch up on a backlog). "
            "Default: $STREAMREC_MAX_PARTITIONS_PER_RUN, else 1",
        ),
        # every UpdateParams field, default null = from the parameter set, else built-in
        **hyper_params("update"),
    },
)
def streamrec_update():
    @task.short_circuit
    def find_new(params=None, dag_run=None) -> dict:
        from streamrec import pipeline

        bucket, store = pipeline.open_bucket()
        for pid in params.get("requeue") or []:  # whatever holds it: the gate, a rollback, the quarantine
            from streamrec.pipeline import review

            event = review.requeue(
                bucket, store, pid, f"requeue Param of run {dag_run.run_id}", _who(dag_run)
            )
            print(f"re-queued {pid}: released {event['released']} (review log event {event['id']})")
        found = pipeline.pending(bucket, store)
        print(
            f"base {found['base']}; pending {[p['id'] for p in found['pending']]}; skipped {found['skipped']}"
        )
        return found if found["pending"] else {}

    @task.short_circuit
    def validate(found: dict, params=None, dag_run=None) -> dict:
        from streamrec import pipeline
        from streamrec.pipeline import plans, reports

        bucket, store = pipeline.open_bucket()
        sel = pipeline.check_and_select(
            bucket,
            store,
            found,
            dag_run.run_after.timestamp(),
            build_docs=params.get("build_docs", True),
            max_partitions=params.get("max_partitions_per_run"),
        )
        for row in sel["checked"]:
            print(
                f"{row['id']}: {row['reason']} ({row['rows']} rows) report {row['report']}"
                + (f" -> quarantined in {row['quarantine']}" if "quarantine" in row else "")
            )
        if sel["checked"]:
            keys = [f"reports/partitions/{r['id']}/report.json" for r in sel["checked"]]
            keys += [f"reports/datadocs/{r['id']}/index.html" for r in sel["checked"] if r.get("docs")]
            print(review_links(*keys))
        if not sel["partitions"]:
            if sel["checked"]:
                print(f"index: {bucket.uri(reports.write_index(bucket, store))}")
            return {}
        ids = [part["id"] for part in sel["partitions"]]
        print(f"this run applies {len(ids)} partition(s), in arrival order: {ids}")
        version = pipeline.run_version_id("upd", dag_run, pipeline.batch_suffix(ids))
        plan = plans.update_plan(bucket, found, sel, params, version)
        print(f"parameters {plan['hyper']['values']} from {plan['hyper']['sources']}")
        print(f"parameter set {plan['hyper']['param_set']}")
        return plan

    plan = validate(find_new())
    update = spark_job("update", "update", plan["argv"])
    plan >> update
    gate_and_publish(plan, after=update, fail_on_reject=False)


streamrec_update()

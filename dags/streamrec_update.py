"""
### streamrec_update: fold each new partition into the published model, exactly once, in arrival order

Users drop partitions into `ratings/incoming/` of the bucket (`$STREAMREC_BUCKET`): one file, or one folder of
files that arrive together. No human starts this DAG.

**How new partitions are found: a 30 s schedule that lists what is new** (`max_active_runs=1`, `catchup=False`).
The first task lists `incoming/` and subtracts what the *current model's manifest* says it has absorbed
(`partitions`), what is quarantined, and what a gate-rejected candidate holds; when nothing is left it
short-circuits (the run ends in a second, everything else skipped). Why not the alternatives:

* *a deferrable sensor* (`S3KeySensor`, `FileSensor`): it answers "is there a key?", but the partitions stay in
  `incoming/` forever (raw files are never moved or deleted), so "new" can only mean "not in the model's
  lineage": that comparison is ours either way. A sensor also needs one provider per storage (amazon for S3,
  nothing for a local folder) and holds a run open while waiting, where the schedule needs nothing.
* *an `AssetWatcher`* on bucket notifications (S3 → SQS → `SqsSensorTrigger`): faster (seconds), but it needs an
  event pipeline per deployment, does not exist for a local folder, and an event that is lost or arrives twice
  still has to be reconciled against the lineage. It is the upgrade path; the listing stays the source of truth.
* Listing costs one `LIST` per 30 s; a detection delay of ≤ 30 s fits the freshness target (≤ 60 s).

**One partition per run by default; a batch to catch up** (Param `max_partitions_per_run`, default
`$STREAMREC_MAX_PARTITIONS_PER_RUN` read when the DAG is parsed, else 1: the analogue of Spark Structured
Streaming's `maxFilesPerTrigger`). Each run validates the pending partitions in arrival order, quarantining each
that fails the data contract (the run carries on with the next), and applies the *first N that pass*, in arrival
order, as one candidate: update (and evaluate) → gate → publish | reject. The next run (started right after this
one: the schedule is already due) takes the next ones; partitions after the batch are not even checked.

Why 1 stays the default: one partition per candidate means the gate judges one partition at a time (a damaging
partition cannot take good ones down with it), a rejected version names exactly the partition it held, and
every run's graph and logs are about one partition. At one run a minute that is plenty for a steady stream, but
not for a backlog (an outage, a bulk re-drop): 200 partitions would take over three hours. A batch pays the
JVM start-up, the scheduling gaps and the model's read and write once per N partitions instead of once per
partition; the cost is that the gate judges the batch as a whole (one damaging partition gets the whole batch
rejected and held; re-queueing any partition of a rejected batch releases all of them), so raise it to catch
up, not as the steady state. Memory stays bounded by N, not by the backlog: a run reads only its batch. The
partitions of a batch are applied in order inside one Spark application (`jobs/update.py --partition ID=URI`
repeated), each on the model the previous one left, so the resulting model does not depend on how the stream was
cut into runs (`tests/test_scheduler_restart.py`: two runs of two partitions, one of them killed and retried, give
bit for bit the arrays of one run of all four). Several partitions are a loop inside the `update` task rather
than mapped task instances: Airflow cannot order mapped instances, and the order is the point.

**Exactly once, even after a crash.** What is applied lives in the model: the published manifest's
`partitions`. A crash before the publish leaves the partition pending (the next run redoes it; the version id
comes from the run, so a retried task rewrites the same candidate); after it, the partition is in the lineage
and never offered again, and `jobs/update.py` refuses a partition already in its base's lineage anyway. The
publish task refuses to move the pointer if it no longer names the base the candidate was built on.

**Per partition:** the data contract (GX suite `expectations/ratings_partition.json`; report
`reports/partitions/<id>/report.json`, Data Docs `reports/datadocs/<id>/index.html`) → on failure a copy in
`quarantine/<id>/` with `reason.txt` (the raw file is never deleted or rewritten) → `jobs/update.py --base
<current> --partition ID=URI` (10 % of the partition is held out into `validation/partitions/<id>`, so the
validation set grows with the stream; `--evaluate` scores the candidate on its validation set in the same
Spark application: one JVM start-up per partition instead of two, the largest share of the freshness budget) →
**gate**: the candidate's RMSE on its validation set may not exceed the published model's RMSE *on the same rows* by more than `tolerance` (relative), nor
`rmse_ceiling` → publish (pointer, then the `streamrec_model` Asset event `{version, rmse}`) or reject →
`reports/gates/<version>.html` + `reports/index.html`.

**Hyper-parameters** (γ, λ, passes, ...) left empty come from the parameter set named `param_set` (default
`tuned`, `params/tuned.json`, written by `streamrec_tune`), else the built-in defaults (`UpdateParams`); a value
given in the run's conf wins. The manifest records the set under `params.param_set.update`.

**Rejected partitions** do not vanish: the candidate stays in `models/versions/<version>/` with status
`rejected`, its gate report and `new_partitions: [id, ...]`; the index lists it. The partition is not retried
by itself. To re-queue it (e.g. after tuning or a retrain), trigger this DAG with
`{"requeue": ["<partition id>"]}`: the rejected version gets `requeued_at` (it stays rejected, never published)
and the partition is pending again. The same Param releases a partition held by a rollback or the quarantine
(`streamrec.pipeline.review.requeue`, the review page's action; each re-queue is an event in the review log). A
quarantined partition is also checked again when a fixed file is dropped under the same name (its size or
mtime changed), or drop it under a new name. The review page (Browse → streamrec review) re-queues and rolls
back too.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from _streamrec_common import DEFAULT_ARGS, gate_and_publish, gate_params, review_links, spark_job
from _streamrec_tuning import UPDATE_FIELDS, hyper_params
from airflow.sdk import Param, dag, task
from streamrec_trigger import update_schedule  # plugins/: the incoming/ asset watcher + fallback timetable


def _who(dag_run) -> str | None:
    """Who triggered the run (Airflow 3.1+ records it), for the review log."""
    return getattr(dag_run, "triggering_user_name", None)


def _default_batch() -> int:
    """The form's default for ``max_partitions_per_run``: ``$STREAMREC_MAX_PARTITIONS_PER_RUN`` when it is a
    whole number >= 1, else 1 (a bad value must not break the DAG's import; the task re-checks the Param)."""
    text = os.environ.get("STREAMREC_MAX_PARTITIONS_PER_RUN", "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else 1


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
            _default_batch(),
            type="integer",
            minimum=1,
            maximum=1000,
            description="contract-passing partitions applied per run, in arrival order, as one candidate "
            "(1: the gate judges each partition alone; more: catch up on a backlog). "
            "Default: $STREAMREC_MAX_PARTITIONS_PER_RUN, else 1",
        ),
        # tuning: hyper-parameters default to null = from the parameter set, else built-in (streamrec.storage.paramsets)
        **hyper_params(UPDATE_FIELDS),
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
        from streamrec.pipeline import reports

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
        version = pipeline.version_id("upd", dag_run.run_id, dag_run.run_after, pipeline.batch_suffix(ids))
        argv = ["--bucket", pipeline.bucket_uri(), "--base", found["base"], "--version", version]
        for part in sel["partitions"]:
            argv += ["--partition", f"{part['id']}={bucket.spark_uri(part['key'])}"]
        argv += ["--scale", sel["scale"], "--evaluate"]
        # tuning: explicit form value > stored parameter set > built-in default
        from streamrec.storage import paramsets

        hp, lineage, sources = paramsets.resolve_in_bucket(
            bucket, params.get("param_set"), "update", {k: params.get(k) for k in UPDATE_FIELDS}
        )
        print(f"parameters {hp} from {sources}; parameter set {lineage}")
        argv += [*hp.to_argv(), *paramsets.lineage_argv(lineage)]
        return {
            "bucket": pipeline.bucket_uri(),
            "version": version,
            "scale": sel["scale"],
            "argv": argv,
            "partitions": ids,
            "expected_current": found["base"],
            "checked": sel["checked"],
            "gate": {
                "published": found["base"],
                "ceiling": params["rmse_ceiling"],
                "tolerance": params["tolerance"],
                "baseline": False,
            },
        }

    plan = validate(find_new())
    update = spark_job("update", "update", plan["argv"])
    plan >> update
    gate_and_publish(plan, after=update, fail_on_reject=False)


streamrec_update()

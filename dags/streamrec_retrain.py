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

from _streamrec_common import DEFAULT_ARGS, evaluate_args, gate_and_publish, gate_params, spark_job
from _streamrec_tuning import BOOTSTRAP_FIELDS, hyper_params
from airflow.sdk import Param, dag, task


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
        **hyper_params(BOOTSTRAP_FIELDS),
        "seed": Param(None, type=["null", "integer"], description="ALS seed (empty: as the current model)"),
        **gate_params(),
    },
)
def streamrec_retrain():
    @task
    def plan_retrain(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from streamrec import pipeline
        from streamrec.storage import paramsets

        bucket, store = pipeline.open_bucket()
        current = store.current()
        if current is None:
            raise AirflowFailException("no published model to retrain: run streamrec_bootstrap first")
        m = store.read_manifest(current)
        hold = m.get("holdout") or {}
        given = {k: params.get(k) for k in (*BOOTSTRAP_FIELDS, "seed")}
        hp, lineage, sources = paramsets.resolve_in_bucket(
            bucket,
            params.get("param_set"),
            "bootstrap",
            given,
            fallback=(m.get("params") or {}).get("bootstrap", {}),
        )
        print(f"parameters {hp} from {sources}; parameter set {lineage}")
        scale = str(pipeline.scale_of(store, current))
        version = pipeline.version_id("retrain", dag_run.run_id, dag_run.run_after)
        argv = [
            "--bucket",
            pipeline.bucket_uri(),
            "--version",
            version,
            "--kind",
            "retrain",
            "--scale",
            scale,
        ]
        for uri in m.get("inputs", []):
            argv += ["--ratings", uri]
        for pid in m.get("partitions", []):
            argv += ["--partition-id", pid]
        if hold:
            argv += [
                "--holdout-fraction",
                str(hold["fraction"]),
                "--holdout-seed",
                str(hold["seed"]),
                "--validation-uri",
                hold["uri"],
            ]
        argv += [*hp.to_argv(), *paramsets.lineage_argv(lineage)]
        print(
            f"retrain of {current}: {len(m.get('inputs', []))} inputs, partitions {m.get('partitions', [])}"
        )
        return {
            "bucket": pipeline.bucket_uri(),
            "version": version,
            "scale": scale,
            "argv": argv,
            "expected_current": current,
            "validation": m.get("validation", []),
            "gate": {
                "published": current,
                "ceiling": params["rmse_ceiling"],
                "tolerance": params["tolerance"],
                "baseline": True,
            },
        }

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
    evaluate = spark_job("evaluate", "evaluate", evaluate_args(plan))
    fit >> attach_validation(plan) >> evaluate
    gate_and_publish(plan, after=evaluate, fail_on_reject=True)


streamrec_retrain()

"""What the tuning DAG and the parameter-set wiring of the other DAGs share. Wiring only (no streamrec import at
parse time; listed in ``.airflowignore``).

* :class:`BudgetedSparkSubmitOperator`: a ``SparkSubmitOperator`` that, when its turn comes, first checks the
  tuning run's deadline and *skips* (``AirflowSkipException``) instead of starting a trial once it has passed.
  The check is at launch time on purpose: trials wait for a free slot (``max_active_tis_per_dag``), so a check in
  an upstream task would run long before the trial does.
* :func:`hyper_params`: the trigger-form Params of the hyper-parameters, all defaulting to ``null`` = "take it
  from the named parameter set, else the built-in default" (``streamrec.storage.paramsets``), plus the set's name.
"""

from __future__ import annotations

import os

from _streamrec_common import JOBS, SPARK_CONF, SPARK_ENV
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param

TRIAL_CONCURRENCY = int(os.environ.get("STREAMREC_TUNE_CONCURRENCY", "1"))
"""Trials of one kind running at once (each is a local[2] Spark job: on 2 cores, one at a time)."""

# name -> (JSON type, description); the fields of streamrec.core.params.BootstrapParams / UpdateParams (seed apart:
# it is not a tuned value and the forms keep their own)
BOOTSTRAP_FIELDS = {
    "rank": ("integer", "ALS rank (latent factors)"),
    "iterations": ("integer", "ALS iterations"),
    "reg": ("number", "ALS regParam λ (scaled per entity count)"),
    "reg_user": ("number", "shrinkage of the user biases"),
    "reg_item": ("number", "shrinkage of the item biases"),
}
UPDATE_FIELDS = {
    "lr": ("number", "step size γ in [0, 1]"),
    "reg": ("number", "λ of the biases, per rating"),
    "reg_factors": ("number", "λ' of the factors, per rating"),
    "passes": ("integer", "passes over the partition"),
    "decay": ("number", "step multiplier after each pass, in (0, 1]"),
    "prior_weight": ("number", "how strongly absorbed history holds an entity in place"),
    "fold_in_reg": ("number", "ridge of the fold-in of new ids"),
}
NULL_MEANS = "empty = from the parameter set, else the built-in default"


def hyper_params(fields: dict[str, tuple[str, str]], prefix: str = "") -> dict[str, Param]:
    """Nullable Params for ``fields`` plus ``param_set`` (the set's name, default ``tuned``)."""
    out = {
        prefix + name: Param(None, type=["null", kind], minimum=0, description=f"{desc} ({NULL_MEANS})")
        for name, (kind, desc) in fields.items()
    }
    out["param_set"] = Param(
        "tuned",
        type=["null", "string"],
        description="named parameter set params/<name>.json in the bucket, written by streamrec_tune "
        "(empty or 'none': built-in defaults only)",
    )
    return out


class BudgetedSparkSubmitOperator(SparkSubmitOperator):
    """``SparkSubmitOperator`` that skips when ``deadline`` (epoch seconds; None = no limit) has passed.

    ``trial_label`` names the trial in the UI (``map_index_template="{{ trial_label }}"``)."""

    def __init__(self, *, deadline: float | None = None, trial_label: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        self.trial_label = trial_label

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from streamrec.pipeline.tuning import budget_allows

        context["trial_label"] = self.trial_label
        if not budget_allows(self.deadline):
            raise AirflowSkipException(f"time budget exhausted: trial {self.trial_label} not started")
        return super().execute(context)


def trial_operator(task_id: str, **kwargs):
    """A mapped-ready (``.partial``) budgeted trial job: ``jobs/tune_trial.py``."""
    return BudgetedSparkSubmitOperator.partial(
        task_id=task_id,
        application=str(JOBS / "tune_trial.py"),
        conn_id="spark_default",
        name=f"streamrec-{task_id}",
        conf=dict(SPARK_CONF),
        env_vars=dict(SPARK_ENV),
        driver_memory=os.environ.get("STREAMREC_DRIVER_MEMORY", "2g"),
        max_active_tis_per_dag=TRIAL_CONCURRENCY,
        map_index_template="{{ trial_label }}",
        **kwargs,
    )

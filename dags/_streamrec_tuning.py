"""The tuning DAG's trial operator. Wiring only (listed in ``.airflowignore``; of streamrec it loads at parse time
only what ``_streamrec_common`` does).

* :class:`BudgetedSparkSubmitOperator`: a ``SparkSubmitOperator`` that, when its turn comes, first checks the
  tuning run's deadline and *skips* (``AirflowSkipException``) instead of starting a trial once it has passed.
  The check is at launch time on purpose: trials wait for a free slot (``max_active_tis_per_dag``), so a check in
  an upstream task would run long before the trial does.
* :func:`trial_operator`: the mapped trial job (``jobs/tune_trial.py``); its argv per trial comes from
  ``streamrec.pipeline.plans.tuning_jobs``.
"""

from __future__ import annotations

import os

from _streamrec_common import JOBS, SPARK_CONF, SPARK_ENV
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

TRIAL_CONCURRENCY = int(os.environ.get("STREAMREC_TUNE_CONCURRENCY", "1"))
"""Trials of one kind running at once (each is a local[2] Spark job: on 2 cores, one at a time)."""


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

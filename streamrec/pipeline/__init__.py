"""The pipeline-facing API of streamrec: what the Airflow DAGs' tasks, the review page and the command-line
scripts call. Nothing here imports pyspark or Airflow.

``from streamrec import pipeline`` gives the task functions (:mod:`streamrec.pipeline.tasks`: pending partitions,
gate, publish, reject, reports, summary); the sub-modules are the rest of the API:

* :mod:`~streamrec.pipeline.contract`: the data contract of a dropped partition (file rules + GX), quarantine
* :mod:`~streamrec.pipeline.plans`: the Spark jobs' argv and the Params of the DAGs' trigger forms
* :mod:`~streamrec.pipeline.review`, :mod:`~streamrec.pipeline.reviewlog`: the review page and its log
* :mod:`~streamrec.pipeline.reports`, :mod:`~streamrec.pipeline.tuning_report`: HTML and JSON reports
* :mod:`~streamrec.pipeline.lookup`: predict / recommend from a stored version with numpy
* :mod:`~streamrec.pipeline.tuning`: a tuning run's plan, choice and report

The DAG files and the plugin import nothing else of streamrec (``[tool.importlinter]`` in pyproject.toml).
"""

from streamrec.pipeline.tasks import (
    HISTORY,
    INCOMING,
    LAYOUT,
    MAX_PARTITIONS_ENV,
    QUARANTINE,
    REPO,
    VALIDATION,
    batch_suffix,
    bucket_uri,
    check_and_select,
    decide,
    gate_numbers,
    max_partitions_per_run,
    model_event_extra,
    new_partitions,
    open_bucket,
    pending,
    publish,
    quarantined,
    read_ratings_arrays,
    reject,
    rejected_partitions,
    requeue,
    rmse,
    rmse_of,
    scale_bounds,
    scale_of,
    summary,
    version_id,
    write_reports,
)

__all__ = [
    "HISTORY",
    "INCOMING",
    "QUARANTINE",
    "VALIDATION",
    "LAYOUT",
    "MAX_PARTITIONS_ENV",
    "REPO",
    "batch_suffix",
    "bucket_uri",
    "check_and_select",
    "decide",
    "gate_numbers",
    "max_partitions_per_run",
    "model_event_extra",
    "new_partitions",
    "open_bucket",
    "pending",
    "publish",
    "quarantined",
    "read_ratings_arrays",
    "reject",
    "rejected_partitions",
    "requeue",
    "rmse",
    "rmse_of",
    "scale_bounds",
    "scale_of",
    "summary",
    "version_id",
    "write_reports",
]

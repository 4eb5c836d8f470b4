"""The pipeline-facing API of streamrec: what the Airflow DAGs' tasks, the review page and the command-line
scripts call. Nothing here imports pyspark or Airflow.

``from streamrec import pipeline`` gives the task functions (:mod:`streamrec.pipeline.tasks`: pending partitions,
gate, publish, reject, reports, summary), the rating scale and the model store's errors; the sub-modules are the
rest of the API:

* :mod:`~streamrec.pipeline.forms`: the hyper-parameter Params of the DAGs' trigger forms (JSON Schema dicts
  generated from the parameter dataclasses; read when the DAGs are parsed, so it stays light)
* :mod:`~streamrec.pipeline.plans`: what a DAG task hands a Spark job: the jobs' argv, the plan dicts (XCom), the
  spark-submit conf (driver JVM options, s3a)
* :mod:`~streamrec.pipeline.contract`: the data contract of a dropped partition (file rules + GX), quarantine
* :mod:`~streamrec.pipeline.review`, :mod:`~streamrec.pipeline.reviewlog`: the review page and its log
* :mod:`~streamrec.pipeline.reports`, :mod:`~streamrec.pipeline.tuning_report`: HTML and JSON reports
* :mod:`~streamrec.pipeline.lookup`: predict / recommend from a stored version with numpy
* :mod:`~streamrec.pipeline.tuning`: a tuning run's plan, choice and report

The DAG files and the plugin import nothing else of streamrec (``[tool.importlinter]`` in pyproject.toml).

The names below are loaded on first use (PEP 562 ``__getattr__``): the DAG files import
:mod:`~streamrec.pipeline.forms` when Airflow parses them, and that must not load numpy, the bucket code or GX.
``from streamrec.pipeline import open_bucket`` and ``pipeline.open_bucket`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamrec.core.schema import RatingScale
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
    from streamrec.storage.store import StoreError, VersionNotFoundError

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
    "RatingScale",
    "StoreError",
    "VersionNotFoundError",
]

_WHERE: dict[str, str] = {
    **dict.fromkeys(__all__, "streamrec.pipeline.tasks"),
    "RatingScale": "streamrec.core.schema",
    "StoreError": "streamrec.storage.store",
    "VersionNotFoundError": "streamrec.storage.store",
}
"""Where each name of ``__all__`` is defined (loaded on first use)."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

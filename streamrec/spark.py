"""One place that builds the SparkSession, so jobs, tests and benchmarks run Spark the same way.

Local mode by default (``local[2]``, sized for a 2-core machine); under ``spark-submit`` the master and
resources come from the submit line and nothing here overrides them. A checkpoint directory is always set:
iterative ALS and long update lineages overflow the JVM stack without one (the talk's defect 4).
"""

from __future__ import annotations

import os
import sys
import tempfile

from pyspark.sql import SparkSession


def get_session(
    app_name: str = "streamrec",
    master: str | None = None,
    checkpoint_dir: str | None = None,
    shuffle_partitions: int | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active session or build one.

    ``master`` falls back to ``$STREAMREC_SPARK_MASTER`` then ``local[2]`` (ignored under spark-submit, which has
    already chosen one). ``checkpoint_dir`` falls back to ``$STREAMREC_CHECKPOINT_DIR`` then a temp folder.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (applyInPandas) must run the interpreter that has our dependencies, not whatever python3 is
    # first on PATH. Under spark-submit pass --conf spark.pyspark.python instead (the JVM is already running).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    active = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName(app_name)
    if active is None and not os.environ.get("SPARK_ENV_LOADED") and "spark.master" not in _submit_conf():
        builder = builder.master(master or os.environ.get("STREAMREC_SPARK_MASTER", "local[2]"))
    conf = {
        "spark.sql.shuffle.partitions": str(
            shuffle_partitions or os.environ.get("STREAMREC_SHUFFLE_PARTITIONS", 4)
        ),
        "spark.ui.enabled": os.environ.get("STREAMREC_SPARK_UI", "false"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.memory": os.environ.get("STREAMREC_DRIVER_MEMORY", "4g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.extraJavaOptions": "-Xss16m",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": os.environ.get("STREAMREC_SPARK_LOG_LEVEL", "WARN"),
    }
    conf.update(extra_conf or {})
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    ckpt = checkpoint_dir or os.environ.get("STREAMREC_CHECKPOINT_DIR")
    if not ckpt:
        ckpt = tempfile.mkdtemp(prefix="streamrec-ckpt-")
    spark.sparkContext.setCheckpointDir(ckpt)
    return spark


def _submit_conf() -> dict[str, str]:
    """Spark conf passed by spark-submit through the environment (empty when run as plain Python)."""
    raw = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    return {"spark.master": "x"} if "--master" in raw else {}

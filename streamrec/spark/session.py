"""One place that builds the SparkSession, so jobs, tests and benchmarks run Spark the same way.

Local mode by default (``local[2]``, sized for a 2-core machine); under ``spark-submit`` the master and
resources come from the submit line and nothing here overrides them. A checkpoint directory is always set:
iterative ALS and long update lineages overflow the JVM stack without one (the talk's defect 4).

``s3a://``: as plain Python (tests, benchmarks, the demo) the session gets :func:`streamrec.launch.s3a.spark_conf`
whenever the hadoop-aws jars are there (fetched by ``make setup``, or ``STREAMREC_S3A_JARS``); in local mode the
jars go on the driver's class path (the executors live in the driver's JVM) rather than ``spark.jars``, which
would copy 190 MB into every session's temp folder. Under spark-submit the JVM is already up: the submit line
carries the jars and conf (``python -m streamrec.launch.s3a submit-args``; the DAGs' ``spark_job`` adds them).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile

from pyspark.sql import SparkSession

from streamrec.launch import connect, jvm


def get_session(
    app_name: str = "streamrec",
    master: str | None = None,
    checkpoint_dir: str | None = None,
    shuffle_partitions: int | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active session or build one.

    With ``$STREAMREC_SPARK_REMOTE`` (and not under spark-submit) a Spark Connect client session on that server
    instead (:func:`_connect_session`; ``master`` and ``checkpoint_dir`` are then the server's).
    ``master`` falls back to ``$STREAMREC_SPARK_MASTER`` then ``local[2]`` (ignored under spark-submit, which has
    already chosen one). ``checkpoint_dir`` falls back to ``$STREAMREC_CHECKPOINT_DIR`` then a temp folder.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (applyInPandas) must run the interpreter that has our dependencies, not whatever python3 is
    # first on PATH. Under spark-submit pass --conf spark.pyspark.python instead (the JVM is already running).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    remote = connect.remote_url()
    if remote and not os.environ.get("SPARK_ENV_LOADED") and not _submit_conf():
        return _connect_session(remote, app_name, shuffle_partitions, extra_conf)
    active = SparkSession.getActiveSession()
    builder = SparkSession.builder.appName(app_name)
    plain_python = (
        active is None and not os.environ.get("SPARK_ENV_LOADED") and "spark.master" not in _submit_conf()
    )
    if plain_python:
        master = master or os.environ.get("STREAMREC_SPARK_MASTER", "local[2]")
        builder = builder.master(master)
    conf = {
        **_sql_conf(shuffle_partitions),
        "spark.ui.enabled": os.environ.get("STREAMREC_SPARK_UI", "false"),
        "spark.driver.memory": os.environ.get("STREAMREC_DRIVER_MEMORY", "4g"),
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": os.environ.get("STREAMREC_SPARK_LOG_LEVEL", "WARN"),
    }
    if plain_python:
        conf.update(_s3a_conf(master))
        # JVM start-up options and the class-data archive for this class path (streamrec.launch.jvm)
        conf["spark.driver.extraJavaOptions"] = jvm.driver_java_options(
            conf.get("spark.driver.extraClassPath", "")
        )
    conf.update(extra_conf or {})
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    ckpt = checkpoint_dir or os.environ.get("STREAMREC_CHECKPOINT_DIR")
    if not ckpt:  # ours: removed when this process exits (a configured folder is left to its owner)
        ckpt = tempfile.mkdtemp(prefix="streamrec-ckpt-")
        atexit.register(shutil.rmtree, ckpt, ignore_errors=True)
    spark.sparkContext.setCheckpointDir(ckpt)
    return spark


def _sql_conf(shuffle_partitions: int | None) -> dict[str, str]:
    """The session's SQL settings, the same for a classic session and a Connect client (runtime confs: the only
    ones a client may set)."""
    return {
        "spark.sql.shuffle.partitions": str(
            shuffle_partitions or os.environ.get("STREAMREC_SHUFFLE_PARTITIONS", 4)
        ),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def _connect_session(
    url: str, app_name: str, shuffle_partitions: int | None, extra_conf: dict[str, str] | None
) -> SparkSession:
    """A Spark Connect client session on the server at ``url`` (``streamrec.launch.connect``).

    Only runtime SQL confs can be set from a client; the master, memory, checkpoint folder, s3a and the UDF
    workers' Python are the server's (``connect.server_command``). With ``$STREAMREC_CONNECT_SESSION`` (a lane,
    set by ``streamrec.pipeline.connect.run_job``) the client attaches to the lane's long-lived session: it first
    interrupts what the lane still runs (a killed try's query goes on in the server until interrupted, and the
    lane runs one job at a time) and drops the lane's cache, and at exit it closes the client without releasing
    the session (``launch.connect``: why). Without a lane: a session of its own, released at exit.
    """
    lane = os.environ.get(connect.SESSION_TAG_ENV, "").strip()
    conf = {**_sql_conf(shuffle_partitions), **(extra_conf or {})}
    builder = SparkSession.builder.remote(url + (f"/;session_id={connect.session_id(lane)}" if lane else ""))
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.create()
    if lane:
        interrupted = spark.interruptAll()
        if interrupted:
            print(
                f"streamrec: interrupted {len(interrupted)} operation(s) an earlier job of lane {lane!r} left running",
                file=sys.stderr,
                flush=True,
            )
        spark.catalog.clearCache()
        spark.release_session_on_close = False  # the lane's session outlives this job
    spark.addTag(app_name)
    atexit.register(_close, spark)
    return spark


def _close(spark: SparkSession) -> None:
    with contextlib.suppress(Exception):  # the server may be gone
        spark.stop()


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect client session (no ``sparkContext``, no py4j gateway)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int:
    """``sparkContext.defaultParallelism`` (the cores); a Connect client has no ``sparkContext``: the session's
    shuffle partitions stand in."""
    if is_connect(spark):
        return int(spark.conf.get("spark.sql.shuffle.partitions") or 2)
    return spark.sparkContext.defaultParallelism


def local_extra_classpath() -> str:
    """The driver class path a plain local session adds (the s3a jars, when installed), else ``""``."""
    return _s3a_conf("local").get("spark.driver.extraClassPath", "")


def _s3a_conf(master: str) -> dict[str, str]:
    """``streamrec.launch.s3a.spark_conf()`` if the jars are there (else ``{}``); local mode: jars on the class path."""
    from streamrec.launch import s3a

    conf = s3a.spark_conf(require=False)
    if master.startswith("local") and "spark.jars" in conf:
        conf["spark.driver.extraClassPath"] = conf.pop("spark.jars").replace(",", os.pathsep)
    return conf


def _submit_conf() -> dict[str, str]:
    """Spark conf passed by spark-submit through the environment (empty when run as plain Python)."""
    raw = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    return {"spark.master": "x"} if "--master" in raw else {}

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
        "spark.sql.shuffle.partitions": str(
            shuffle_partitions or os.environ.get("STREAMREC_SHUFFLE_PARTITIONS", 4)
        ),
        "spark.ui.enabled": os.environ.get("STREAMREC_SPARK_UI", "false"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.memory": os.environ.get("STREAMREC_DRIVER_MEMORY", "4g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
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


def _connect_session(
    url: str, app_name: str, shuffle_partitions: int | None, extra_conf: dict[str, str] | None
) -> SparkSession:
    """A Spark Connect client session on the server at ``url`` (``streamrec.launch.connect``).

    Only runtime SQL confs can be set from a client; the master, memory, checkpoint folder, s3a and the UDF
    workers' Python are the server's (``connect.server_command``). With ``$STREAMREC_CONNECT_SESSION`` (``<tag>#<try>``,
    set by the launcher of a job try) the session id is derived from it, and what earlier tries of the same tag left
    running on the server (a killed client's query goes on) is interrupted and released first, so two tries never
    write the same candidate at once. The session is released when the process exits (its cached frames go).
    """
    tagged = connect.parse_session_tag(os.environ.get(connect.SESSION_TAG_ENV))
    params = ""
    if tagged:
        for old in connect.previous_session_ids(*tagged):
            _interrupt_session(url, old)
        params = f"/;session_id={connect.session_id(*tagged)}"
    conf = {
        "spark.sql.shuffle.partitions": str(
            shuffle_partitions or os.environ.get("STREAMREC_SHUFFLE_PARTITIONS", 4)
        ),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        **(extra_conf or {}),
    }
    try:
        spark = _connect_builder(url + params, conf).create()
    except Exception as exc:
        if "SESSION_CLOSED" not in str(exc):
            raise
        # this try's id was used and released already (a job re-run by hand with the same tag): a fresh one
        spark = _connect_builder(url, conf).create()
    spark.addTag(app_name)
    atexit.register(_release, spark)
    return spark


def _connect_builder(url: str, conf: dict[str, str]):
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    # a create() that failed (a closed session id) has already made its session the default and active one, and
    # pyspark.sql.functions would use it: forget it so the session created next is the one used
    with ConnectSession._lock:
        ConnectSession._default_session = None
    ConnectSession._active_session.session = None
    builder = SparkSession.builder.remote(url)
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder


def _interrupt_session(url: str, sid: str) -> None:
    """Interrupt every operation of session ``sid`` on the server and release it (gone already: nothing to do)."""
    try:
        old = SparkSession.builder.remote(f"{url}/;session_id={sid}").create()
    except Exception:  # noqa: BLE001 - a closed or unknown session: nothing of it runs
        return
    with contextlib.suppress(Exception):
        interrupted = old.interruptAll()
        if interrupted:
            print(
                f"streamrec: interrupted {len(interrupted)} operation(s) of an earlier try", file=sys.stderr
            )
    _release(old)


def _release(spark: SparkSession) -> None:
    with contextlib.suppress(Exception):  # the server may be gone; the session then times out there
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

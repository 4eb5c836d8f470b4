"""JVM start-up options for the Spark drivers streamrec starts, and the class-data archive that makes them fast.

Every ``spark-submit`` of a job and every plain-Python session starts a fresh driver JVM. On a small machine most
of a short job's time is that start-up: loading ~20 000 Spark classes and JIT-compiling them, before any data moves
(``bench/coldstart.py``). Three standard HotSpot options cut it, with no change to what the job computes:

* ``-XX:SharedArchiveFile=<archive>``: *class-data sharing* (JDK 13+ dynamic CDS). The classes a typical streamrec
  job loads are parsed and verified once, by ``python -m streamrec.spark.cds build`` (run by ``make setup``), and
  memory-mapped by every later JVM. The archive is tied to the JDK build and to the class path; a JVM that finds it
  stale or mismatched ignores it and starts the slow way (``-Xshare:auto``), so a wrong archive costs time, never a
  failure. One archive per class path: :func:`archive_path` keys it on pyspark's version, the ``java`` binary and
  any extra class path (the ``s3a`` jars put on the driver class path in local mode, :mod:`streamrec.spark.session`).
* ``-XX:TieredStopAtLevel=1``: compile with the quick C1 compiler only. A job of seconds to minutes never
  amortises C2's compile time on two cores; long heavy jobs may prefer it off (override below).
* ``-XX:+UseSerialGC``: one GC thread instead of one per core fighting the executor threads for the CPU.

Measured with ``bench/coldstart.py`` on 2 cores (session start / first update of a partition): 10.1 s / 30.8 s with
JDK defaults, 3.8 s / 15.7 s with all three.

``STREAMREC_DRIVER_JAVA_OPTIONS`` replaces the whole set (``-Xss16m`` included: keep it, ALS's lineage needs
the deep stack). ``STREAMREC_CDS_DIR`` moves the archives (default ``<sys.prefix>/spark-cds``: the virtualenv,
so a fresh ``.venv`` starts clean).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

STACK = "-Xss16m"
"""ALS and long update lineages overflow the default 512 KiB thread stack (the talk's defect 4)."""
FAST_START = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
RECORD_ENV = "STREAMREC_CDS_RECORD"


def cds_dir() -> Path:
    return Path(os.environ.get("STREAMREC_CDS_DIR") or Path(sys.prefix) / "spark-cds")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else (shutil.which("java") or "java")
    return os.path.realpath(java)


def archive_path(extra_classpath: str = "") -> Path:
    """Where the archive for a driver with this extra class path lives (whether or not it exists yet)."""
    version = importlib.metadata.version("pyspark")  # the distribution's, without importing pyspark
    key = "\n".join([version, _java(), extra_classpath])
    return cds_dir() / f"spark-{version}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsa"


def driver_java_options(extra_classpath: str = "") -> str:
    """``spark.driver.extraJavaOptions`` for a driver JVM started here (see the module docstring)."""
    override = os.environ.get("STREAMREC_DRIVER_JAVA_OPTIONS")
    if override is not None:
        return override
    opts = [STACK, FAST_START]
    archive = archive_path(extra_classpath)
    if os.environ.get(RECORD_ENV):
        opts.append(f"-XX:ArchiveClassesAtExit={os.environ[RECORD_ENV]}")
    elif archive.is_file():
        opts.append(f"-XX:SharedArchiveFile={archive}")
    return " ".join(opts)

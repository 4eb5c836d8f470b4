"""JVM start-up options for the Spark drivers streamrec starts, and the class-data archive that makes them fast.

Every ``spark-submit`` of a job and every plain-Python session starts a fresh driver JVM. On a small machine most
of a short job's time is that start-up: loading ~20 000 Spark classes and JIT-compiling them, before any data moves
(``bench/coldstart.py``). Three standard HotSpot options cut it, with no change to what the job computes:

* ``-XX:SharedArchiveFile=<archive>``: *class-data sharing* (JDK 13+ dynamic CDS). The classes a typical streamrec
  job loads are parsed and verified once, by ``python -m streamrec.jvm build`` (run by ``make setup``), and
  memory-mapped by every later JVM. The archive is tied to the JDK build and to the class path; a JVM that finds it
  stale or mismatched ignores it and starts the slow way (``-Xshare:auto``), so a wrong archive costs time, never a
  failure. One archive per class path: :func:`archive_path` keys it on pyspark's version, the ``java`` binary and
  any extra class path (the ``s3a`` jars put on the driver class path in local mode, :mod:`streamrec.spark`).
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

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STACK = "-Xss16m"
"""ALS and long update lineages overflow the default 512 KiB thread stack (the talk's defect 4)."""
FAST_START = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
_RECORD_ENV = "STREAMREC_CDS_RECORD"


def cds_dir() -> Path:
    return Path(os.environ.get("STREAMREC_CDS_DIR") or Path(sys.prefix) / "spark-cds")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else (shutil.which("java") or "java")
    return os.path.realpath(java)


def archive_path(extra_classpath: str = "") -> Path:
    """Where the archive for a driver with this extra class path lives (whether or not it exists yet)."""
    import pyspark

    key = "\n".join([pyspark.__version__, _java(), extra_classpath])
    return cds_dir() / f"spark-{pyspark.__version__}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsa"


def driver_java_options(extra_classpath: str = "") -> str:
    """``spark.driver.extraJavaOptions`` for a driver JVM started here (see the module docstring)."""
    override = os.environ.get("STREAMREC_DRIVER_JAVA_OPTIONS")
    if override is not None:
        return override
    opts = [STACK, FAST_START]
    archive = archive_path(extra_classpath)
    if os.environ.get(_RECORD_ENV):
        opts.append(f"-XX:ArchiveClassesAtExit={os.environ[_RECORD_ENV]}")
    elif archive.is_file():
        opts.append(f"-XX:SharedArchiveFile={archive}")
    return " ".join(opts)


def build(extra_classpaths: list[str], force: bool = False) -> list[Path]:
    """Record one archive per class path: run a small bootstrap + update + evaluate (``streamrec.demo``) in a
    child process whose JVM dumps the classes it loaded at exit. ~90 s each on 2 cores; skipped when the archive
    exists."""
    made = []
    for extra in extra_classpaths:
        target = archive_path(extra)
        if target.is_file() and not force:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with tempfile.TemporaryDirectory(prefix="streamrec-cds-") as work:
            env = {**os.environ, _RECORD_ENV: str(tmp), "STREAMREC_SPARK_LOG_LEVEL": "ERROR"}
            env.pop("STREAMREC_DRIVER_JAVA_OPTIONS", None)
            if not extra:  # a session without the s3a jars on its class path (they are on it by default)
                env["STREAMREC_S3A_JARS"] = "provided"
            cmd = [sys.executable, "-m", "streamrec.jvm", "_workload", "--out", work]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            tail = (done.stderr or done.stdout)[-2000:]
            raise RuntimeError(f"recording the class-data archive failed (exit {done.returncode}):\n{tail}")
        os.replace(tmp, target)
        made.append(target)
    return made


def default_classpaths(all_: bool = False) -> list[str]:
    """The driver class paths to record: Spark's own (every ``spark-submit`` job: ``--jars`` do not change it)
    and, with ``all_``, a plain local session's with the s3a jars (tests, benchmarks, ``make demo-engine``)."""
    from streamrec.spark import local_extra_classpath

    paths = [""]
    s3a = local_extra_classpath()
    if all_ and s3a:
        paths.append(s3a)
    return paths


def _workload(out: str) -> int:
    from streamrec import demo

    args = ["--out", out, "--users", "200", "--items", "100", "--n-ratings", "5000", "--partitions", "1"]
    return demo.main(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamrec.jvm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="record the class-data archives (make setup runs this)")
    b.add_argument("--force", action="store_true", help="record again even if present")
    b.add_argument(
        "--all", action="store_true", help="also the plain local session's class path (with s3a jars)"
    )
    sub.add_parser("options", help="print the driver options a job started here gets")
    w = sub.add_parser("_workload")
    w.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "options":
        print(driver_java_options())
        return 0
    if args.cmd == "_workload":
        return _workload(args.out)
    if os.environ.get("STREAMREC_CDS", "1") == "0":
        print("jvm: STREAMREC_CDS=0, no class-data archive")
        return 0
    made = build(default_classpaths(args.all), force=args.force)
    for path in made:
        print(f"jvm: recorded {path} ({path.stat().st_size // 2**20} MiB)")
    if not made:
        print(f"jvm: class-data archives up to date in {cds_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

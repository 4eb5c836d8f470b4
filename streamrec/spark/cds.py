"""Record the driver JVM's class-data archives (``python -m streamrec.spark.cds build``, run by ``make setup``).

The archive and the options that use it are :mod:`streamrec.launch.jvm`; this module runs a small bootstrap +
update + evaluate (:mod:`streamrec.spark.demo`) in a child JVM that dumps the classes it loaded at exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from streamrec.launch.jvm import RECORD_ENV, archive_path, cds_dir, driver_java_options
from streamrec.spark import demo
from streamrec.spark.session import local_extra_classpath


def build(extra_classpaths: list[str], force: bool = False) -> list[Path]:
    """Record one archive per class path: run a small bootstrap + update + evaluate (``streamrec.spark.demo``) in a
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
            env = {**os.environ, RECORD_ENV: str(tmp), "STREAMREC_SPARK_LOG_LEVEL": "ERROR"}
            env.pop("STREAMREC_DRIVER_JAVA_OPTIONS", None)
            if not extra:  # a session without the s3a jars on its class path (they are on it by default)
                env["STREAMREC_S3A_JARS"] = "provided"
            cmd = [sys.executable, "-m", "streamrec.spark.cds", "_workload", "--out", work]
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
    paths = [""]
    s3a = local_extra_classpath()
    if all_ and s3a:
        paths.append(s3a)
    return paths


def _workload(out: str) -> int:
    args = ["--out", out, "--users", "200", "--items", "100", "--n-ratings", "5000", "--partitions", "1"]
    return demo.main(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamrec.spark.cds", description=__doc__.splitlines()[0])
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

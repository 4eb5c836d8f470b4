"""Environment checks: ``python -m streamrec.spark.doctor [--quick]``.

The pyspark and pyspark-client distributions both install the ``pyspark/`` package; if their versions differ,
the Python side of Spark silently disagrees with the jars it drives. ``--quick`` compares the installed
distribution metadata with the version baked into the jars (no JVM start); the full check starts a session and
compares ``pyspark.__version__`` with the JVM's ``spark.version``.

It also reports how Spark would reach ``s3a://`` (``streamrec.launch.s3a``): the fetched hadoop-aws jars, provided
ones, or none. Missing jars are not a failure (S3 is optional; a local bucket needs none); jars that are there
but damaged are (the full check hashes them).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import zipfile
from importlib import metadata
from pathlib import Path


def jar_spark_version() -> str:
    """The Spark version recorded inside the bundled spark-core jar (no JVM needed)."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    core = sorted(jars.glob("spark-core_*.jar"))
    if not core:
        raise RuntimeError(f"no spark-core jar under {jars}: is pyspark (not only pyspark-client) installed?")
    with zipfile.ZipFile(core[0]) as zf:
        pom = [n for n in zf.namelist() if n.startswith("META-INF/maven/org.apache.spark/spark-core")]
        props = zf.read(next(n for n in pom if n.endswith("pom.properties"))).decode()
    for line in props.splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no version in {core[0]}")


def check(quick: bool = True) -> list[str]:
    """Return a list of problems (empty when the environment is consistent)."""
    import pyspark

    problems: list[str] = []
    dists = {}
    for name in ("pyspark", "pyspark-client"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            dists[name] = metadata.version(name)
    if "pyspark" not in dists:
        problems.append("pyspark is not installed (only pyspark-client?): the jars are missing")
    if len(set(dists.values())) > 1:
        problems.append(f"pyspark and pyspark-client versions differ: {dists}")
    jar = jar_spark_version()
    if pyspark.__version__ != jar:
        problems.append(f"pyspark.__version__ {pyspark.__version__} != jars {jar}")
    if not quick:
        from streamrec.launch import s3a

        if s3a.fetched_jars():
            problems += [f"s3a: {p}" for p in s3a.verify_jars()]
        from streamrec.spark.session import get_session

        spark = get_session("streamrec-doctor")
        if spark.version != pyspark.__version__:
            problems.append(f"JVM spark.version {spark.version} != pyspark.__version__ {pyspark.__version__}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="do not start a JVM")
    args = ap.parse_args(argv)
    problems = check(quick=args.quick)
    if problems:
        for p in problems:
            print(f"doctor: {p}", file=sys.stderr)
        return 1
    import pyspark

    from streamrec.launch import s3a

    print(f"doctor: ok (pyspark {pyspark.__version__}, python {sys.version.split()[0]})")
    print(f"doctor: s3a: {s3a.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

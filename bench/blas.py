"""Spark ALS's BLAS: which implementation the driver loaded, and the bootstrap fit time with it.

    python bench/blas.py [--ratings PATH] [--repeat 2] [--variant default|java|native|vector|native+vector]

The variants set only the driver JVM's options (``STREAMREC_DRIVER_JAVA_OPTIONS`` is built from
``streamrec.launch.jvm``'s defaults plus the variant's flags), so back-to-back runs compare like with like:

* ``default``: what ``streamrec.launch.jvm.driver_java_options()`` gives today;
* ``java``: native BLAS/LAPACK forced off (``-Ddev.ludovic.netlib.{blas,lapack}.nativeLib`` names a library that
  does not exist: netlib's ``dlopen`` fails and it falls back to its Java implementation, as on a machine without
  ``libblas.so.3``);
* ``native``: netlib's defaults (``dlopen("libblas.so.3")`` / ``liblapack.so.3``, e.g. Debian's OpenBLAS);
* ``vector``: ``java`` plus ``--add-modules=jdk.incubator.vector`` (netlib's ``VectorBLAS`` for the Java side);
* ``native+vector``: both.

Per run: the data (ml-latest-small by default) is read once, a warm-up fit of 1 iteration, then ``--repeat`` fits
of ``streamrec.spark.bootstrap.fit`` with the default ``BootstrapParams`` (each materialised); the fastest is
``fit_seconds``. ``blas``/``lapack``: the class names netlib's ``getInstance()`` returned in the driver.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JAVA_ONLY = "-Ddev.ludovic.netlib.blas.nativeLib=libstreamrec-no-blas.so -Ddev.ludovic.netlib.lapack.nativeLib=libstreamrec-no-lapack.so"
VECTOR = "--add-modules=jdk.incubator.vector"
VARIANTS = {"default": None, "java": JAVA_ONLY, "native": "", "vector": f"{JAVA_ONLY} {VECTOR}",
            "native+vector": VECTOR}  # fmt: skip


def variant_options(variant: str) -> str | None:
    """The ``STREAMREC_DRIVER_JAVA_OPTIONS`` for ``variant`` (None: leave the environment alone)."""
    extra = VARIANTS[variant]
    if extra is None:
        return None
    from streamrec.launch import jvm
    from streamrec.spark.session import local_extra_classpath

    os.environ.pop("STREAMREC_DRIVER_JAVA_OPTIONS", None)
    base = jvm.driver_java_options(local_extra_classpath())
    return " ".join(x for x in (base, extra) if x)


def measure(ratings: str, repeat: int) -> dict:
    sys.path.insert(0, str(REPO / "bench"))
    import common

    from streamrec.core.params import BootstrapParams
    from streamrec.spark import bootstrap

    data = common.load(ratings, common.HALF_STAR, common.Progress("blas"))
    out: dict = {"rows": len(data.ratings)}
    with common.spark_session("bench-blas", event_log=False) as (spark, _):
        jvm = spark.sparkContext._jvm
        out["blas"] = jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
        out["lapack"] = jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getName()
        out["java_blas"] = jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance().getClass().getName()
        train = common.to_spark(spark, data.ratings).cache()
        train.count()
        params = BootstrapParams()
        common.checkpoint_model(
            bootstrap.fit(train, BootstrapParams(**{**params.as_dict(), "iterations": 1}))
        )
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            common.checkpoint_model(bootstrap.fit(train, params))
            times.append(round(time.perf_counter() - t0, 2))
        out.update({"params": params.as_dict(), "fit_seconds": min(times), "fit_seconds_runs": times})
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "bench"))
    import common

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_data_args(ap)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.ratings, args.repeat)))
        return 0
    # one fresh Python (and driver JVM) per run: the JVM options only take effect at its start
    env = dict(os.environ)
    opts = variant_options(args.variant)
    if opts is not None:
        env["STREAMREC_DRIVER_JAVA_OPTIONS"] = opts
    load0 = os.getloadavg()
    cmd = [sys.executable, __file__, "--child", "--repeat", str(args.repeat)]
    if args.ratings:
        cmd += ["--ratings", args.ratings]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    res = json.loads(lines[-1])
    netlib = [ln for ln in proc.stderr.splitlines() if "netlib" in ln.lower()]
    res.update(
        {
            "bench": "blas",
            "variant": args.variant,
            "driver_java_options": opts if opts is not None else "(default)",
            "netlib_log": netlib[:4],
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Spark ML's BLAS: with Debian's OpenBLAS installed (``scripts/install-openblas``, run by ``scripts/setup.sh`` as
root), the driver's netlib loads the native BLAS and LAPACK (``JNIBLAS``/``JNILAPACK``) instead of its Java
fallback; the JDK's vector API backs the Java side (Spark 4's launcher adds ``--add-modules=jdk.incubator.vector``).
Without the libraries the native checks skip, naming the fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _known(lib: str) -> bool:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return False
    return any(line.strip().startswith(f"{lib} ") for line in out.splitlines())


NATIVE = _known("libblas.so.3") and _known("liblapack.so.3")
NO_NATIVE = "no libblas.so.3/liblapack.so.3: run scripts/install-openblas as root (apt-get install libopenblas0-pthread)"


@pytest.mark.spark
@pytest.mark.skipif(not NATIVE, reason=NO_NATIVE)
def test_the_driver_loads_native_blas_and_lapack(spark):
    jvm = spark.sparkContext._jvm
    assert jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getSimpleName() == "JNIBLAS"
    assert jvm.dev.ludovic.netlib.lapack.LAPACK.getInstance().getClass().getSimpleName() == "JNILAPACK"


@pytest.mark.spark
def test_the_java_side_uses_the_vector_api(spark):
    jvm = spark.sparkContext._jvm
    assert jvm.dev.ludovic.netlib.blas.JavaBLAS.getInstance().getClass().getSimpleName() == "VectorBLAS"


@pytest.mark.unit
@pytest.mark.skipif(not NATIVE, reason=NO_NATIVE)
def test_install_script_is_idempotent():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-openblas")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "libblas.so.3 and liblapack.so.3 are there" in proc.stdout, proc.stdout

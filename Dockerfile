# syntax=docker/dockerfile:1
# The one streamrec image: Airflow (api-server, scheduler, dag-processor, triggerer), the Spark standalone
# master and workers, and the Spark driver/executors all run it, so the versions of Python, pyspark, the Spark
# jars, numpy/pandas/pyarrow and streamrec itself are the same everywhere by construction.
#
#   docker build -t streamrec:0.1.0-airflow3.3.2-spark4.2.0 .      (docker compose build does this)
#
# Needs internet at build time: PyPI (the locked environment) and Maven Central (the s3a jars, checked
# against pinned SHA-1s). It was written on a machine without a Docker engine or Maven Central, so it has not
# been built there; the build fails loudly (version asserts, checksum mismatch) rather than produce a wrong image.
#
# OpenShift / arbitrary UIDs: everything runs as uid 50000, gid 0; the folders a process writes are owned by
# group 0 and group-writable, and the entrypoint adds a passwd entry for a UID it does not know (Hadoop's login
# needs a user name).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

# Versions this image promises; the build asserts each against what was actually installed, and
# tests/test_compose.py asserts them against requirements.lock and the jars pyspark bundles.
ARG AIRFLOW_VERSION=3.3.2
ARG SPARK_VERSION=4.2.0
ARG HADOOP_VERSION=3.5.0
# hadoop-aws 3.5.0's POM depends on the AWS SDK v2 "bundle" 2.35.4 and on analyticsaccelerator-s3 1.3.1
# (compile scope). SHA-1s are Maven Central's published .sha1 of each jar.
ARG AWS_SDK_BUNDLE_VERSION=2.35.4
ARG ANALYTICS_ACCELERATOR_VERSION=1.3.1
ARG HADOOP_AWS_SHA1=9e594525d264c0db653c7f68da98b245f7d61ea5
ARG AWS_SDK_BUNDLE_SHA1=7252265e3970b214708e68a8b74a8fa8c875af1e
ARG ANALYTICS_ACCELERATOR_SHA1=6c9bd0f6c440c9a78e82d272f5f0252d942419f6
ARG MAVEN_REPO=https://repo1.maven.org/maven2
ARG UV_VERSION=0.13.9

LABEL org.opencontainers.image.title="streamrec" \
      org.opencontainers.image.description="streamrec: Airflow ${AIRFLOW_VERSION} + Spark ${SPARK_VERSION} (pyspark) + hadoop-aws ${HADOOP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    SPARK_CONF_DIR=/opt/streamrec/docker/spark-conf \
    AIRFLOW_HOME=/opt/airflow \
    STREAMREC_HOME=/opt/streamrec \
    STREAMREC_PYTHON=/opt/venv/bin/python \
    STREAMREC_CHECKPOINT_DIR=/var/lib/streamrec/checkpoints \
    STREAMREC_S3A_JARS=provided \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/streamrec/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/streamrec/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PYARROW_IGNORE_TIMEZONE=1

# JDK 17 (Spark 4 needs Java 17+), tini as PID 1, procps (Spark's scripts call ps), curl for healthchecks.
# (The JDK's postinst links man pages into /usr/share/man/man1, which slim images do not have.)
RUN apt-get update \
 && mkdir -p /usr/share/man/man1 \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless tini procps curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")" /usr/lib/jvm/java-17 \
 && "$JAVA_HOME/bin/java" -version

# The locked environment, exactly as `make setup` builds .venv (same uv, same lock; it includes the PostgreSQL
# drivers), plus the image-only extras of docker/requirements-image.txt if any. Byte-compiled here: with
# PYTHONDONTWRITEBYTECODE every task and Spark Python worker would
# otherwise compile Airflow, pyspark and pandas from source again (~7 s of CPU each). requirements.lock already satisfies Airflow's constraints for this Python.
COPY requirements.lock /tmp/requirements.lock
COPY docker/requirements-image.txt /tmp/requirements-image.txt
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}" \
 && uv venv --python "$(command -v python3.11)" /opt/venv \
 && uv pip sync --no-cache --compile-bytecode --python /opt/venv/bin/python /tmp/requirements.lock \
 && if grep -qv '^[[:space:]]*\(#\|$\)' /tmp/requirements-image.txt; then \
      uv pip install --no-cache --compile-bytecode --python /opt/venv/bin/python -r /tmp/requirements-image.txt; fi \
 && /opt/venv/bin/python - <<EOF
import importlib.metadata as md
import pyspark
want = {"apache-airflow": "${AIRFLOW_VERSION}", "pyspark": "${SPARK_VERSION}", "pyspark-client": "${SPARK_VERSION}"}
got = {name: md.version(name) for name in want}
assert got == want, f"installed {got}, the image promises {want}"
assert pyspark.__version__ == "${SPARK_VERSION}", pyspark.__version__
print("versions ok:", got)
EOF

# s3a:// for Spark: hadoop-aws of exactly the Hadoop that pyspark bundles, and its AWS SDK, put in Spark's
# own jars/ folder so the driver, the master, the workers and the executors all have them on the classpath.
RUN set -eu; \
    jars="$SPARK_HOME/jars"; \
    test -f "$jars/hadoop-client-api-${HADOOP_VERSION}.jar" \
      || { echo "pyspark ${SPARK_VERSION} does not bundle Hadoop ${HADOOP_VERSION}:" $(ls "$jars" | grep hadoop-client); exit 1; }; \
    fetch() { \
      curl -fsSL --retry 5 -o "$jars/$(basename "$1")" "${MAVEN_REPO}/$1"; \
      echo "$2  $jars/$(basename "$1")" | sha1sum -c -; \
    }; \
    fetch "org/apache/hadoop/hadoop-aws/${HADOOP_VERSION}/hadoop-aws-${HADOOP_VERSION}.jar" "${HADOOP_AWS_SHA1}"; \
    fetch "software/amazon/awssdk/bundle/${AWS_SDK_BUNDLE_VERSION}/bundle-${AWS_SDK_BUNDLE_VERSION}.jar" "${AWS_SDK_BUNDLE_SHA1}"; \
    fetch "software/amazon/s3/analyticsaccelerator/analyticsaccelerator-s3/${ANALYTICS_ACCELERATOR_VERSION}/analyticsaccelerator-s3-${ANALYTICS_ACCELERATOR_VERSION}.jar" "${ANALYTICS_ACCELERATOR_SHA1}"

# The non-root user (uid 50000 like Airflow's image, primary group 0 for OpenShift) and the folders it writes.
# They must exist here: a new named volume copies the owner of the folder it is mounted on (else: root).
RUN useradd --uid 50000 --gid 0 --home-dir /home/streamrec --create-home --shell /bin/bash streamrec \
 && mkdir -p /opt/airflow/logs /opt/airflow/auth /opt/streamrec/plugins \
             /var/lib/streamrec/checkpoints /var/lib/streamrec/spark-work \
 && chown -R 50000:0 /opt/airflow /var/lib/streamrec /home/streamrec \
 && chmod -R g=u /opt/airflow /var/lib/streamrec /home/streamrec \
 && chmod g+w /etc/passwd

# streamrec itself last (it changes most): the code at STREAMREC_HOME, installed editable so that the
# docker-compose bind mounts of streamrec/, jobs/, dags/ ... over these folders are what runs.
COPY --chown=50000:0 . /opt/streamrec
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/streamrec-entrypoint
RUN uv pip install --no-cache --python /opt/venv/bin/python --no-deps -e /opt/streamrec \
 && mkdir -p /opt/streamrec/plugins \
 && chmod -R g=u /opt/streamrec \
 && /opt/venv/bin/python -m streamrec.spark.doctor --quick \
 && STREAMREC_CHECKPOINT_DIR=/tmp/streamrec-cds-ckpt /opt/venv/bin/python -m streamrec.spark.cds build \
 && rm -rf /tmp/streamrec-cds-ckpt
# (streamrec.spark.cds build: the Spark driver's class-data archive, in /opt/venv/spark-cds: every spark-submit in a
#  container starts ~6 s faster; a JVM that finds it stale ignores it)

USER 50000:0
WORKDIR /opt/streamrec
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/streamrec-entrypoint"]
CMD ["airflow", "version"]

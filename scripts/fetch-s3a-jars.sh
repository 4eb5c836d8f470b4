#!/usr/bin/env bash
# Put the two jars Spark needs for s3a:// (hadoop-aws 3.3.1 + aws-java-sdk-bundle 1.11.901) into .venv/s3a-jars/.
# Idempotent (present and the right size: nothing downloaded). Source: the PyPI sdist sagemaker-pyspark==1.4.5
# (hash-pinned; the one source reachable where Maven Central is not), see streamrec/s3a.py and docs/S3.md.
#   STREAMREC_S3A_FETCH=0          skip (a local bucket needs no jars)
#   STREAMREC_S3A_SDIST=/path.tgz  use an already downloaded sdist instead of PyPI
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${STREAMREC_S3A_FETCH:-1}" = "0" ]; then
  echo "s3a: STREAMREC_S3A_FETCH=0: not fetching the hadoop-aws jars (Spark cannot read s3:// buckets)"
  exit 0
fi
exec .venv/bin/python -m streamrec.launch.s3a fetch "$@"

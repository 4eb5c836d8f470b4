#!/usr/bin/env bash
# Entrypoint of the streamrec image (under tini). Two chores, then exec the command:
#  1. An arbitrary UID (OpenShift, `docker run --user`) has no /etc/passwd entry; Hadoop's login (Spark) and
#     getpass need a user name, so add one (the image makes /etc/passwd group-0 writable for this).
#  2. SPARK_LOCAL_IP=auto becomes this container's own address, so that a Spark driver started here (client
#     mode, by SparkSubmitOperator) binds to an address the executors on other containers can reach, and
#     keeps doing so when the service is scaled or runs as a Kubernetes pod.
set -euo pipefail

if ! whoami >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "streamrec-$(id -u):x:$(id -u):0:streamrec (arbitrary uid):${HOME:-/home/streamrec}:/bin/bash" >> /etc/passwd
fi

#     The same address becomes SPARK_LOCAL_HOSTNAME, i.e. what the driver advertises (by default Spark would
#     advertise the reverse-resolved name, a container id that other containers may not resolve).
if [ "${SPARK_LOCAL_IP:-}" = "auto" ]; then
  SPARK_LOCAL_IP=$(hostname -i | awk '{print $1}')
  export SPARK_LOCAL_IP
  export SPARK_LOCAL_HOSTNAME=${SPARK_LOCAL_HOSTNAME:-$SPARK_LOCAL_IP}
fi

exec "$@"

#!/usr/bin/env bash
# Entrypoint of the streamrec image (run under tini). Chores, then the command:
#  1. An arbitrary UID (OpenShift, `docker run --user`) has no /etc/passwd entry; Hadoop's login (Spark) and
#     getpass need a user name, so add one (the image makes /etc/passwd group-0 writable for this).
#  2. SPARK_LOCAL_IP=auto becomes this container's own address, so that a Spark driver started here (client
#     mode, by SparkSubmitOperator) binds to an address the executors on other containers can reach, and
#     keeps doing so when the service is scaled or runs as a Kubernetes pod. The same address becomes
#     SPARK_LOCAL_HOSTNAME, i.e. what the driver advertises (by default Spark would advertise the
#     reverse-resolved name, a container id that other containers may not resolve).
#  3. Spark on Kubernetes starts its pods with the argument `driver` or `executor` and describes the process
#     in SPARK_* variables (the contract of Spark's own image entrypoint); those two are translated here, so
#     this image can be spark.kubernetes.container.image. Anything else is exec'd as given.
#  (And before 3: SPARK_AUTH_SECRET into a private SPARK_CONF_DIR, see below.)
set -euo pipefail

if ! whoami >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "streamrec-$(id -u):x:$(id -u):0:streamrec (arbitrary uid):${HOME:-/home/streamrec}:/bin/bash" >> /etc/passwd
fi

if [ "${SPARK_LOCAL_IP:-}" = "auto" ]; then
  SPARK_LOCAL_IP=$(hostname -i | awk '{print $1}')
  export SPARK_LOCAL_IP
  export SPARK_LOCAL_HOSTNAME=${SPARK_LOCAL_HOSTNAME:-$SPARK_LOCAL_IP}
fi

# Spark's shared secret (spark.authenticate, docs/CLUSTER.md): SPARK_AUTH_SECRET (from .env) is written into a
# private copy of SPARK_CONF_DIR (folder 700, file 600; STREAMREC_SPARK_CONF_RUNTIME or a fresh temp folder) that
# this process and everything it starts use, and removed from the environment: the Spark master, the workers
# (which hand it to their executors) and every driver spark-submit starts read it from that file. Never on a
# command line, never in the environment of a task.
if [ -n "${SPARK_AUTH_SECRET:-}" ]; then
  case "$SPARK_AUTH_SECRET" in
    change-me*) echo "entrypoint: SPARK_AUTH_SECRET is the placeholder of .env.example; run 'make compose-env'" >&2; exit 1;;
  esac
  src=${SPARK_CONF_DIR:-${SPARK_HOME:-}/conf}
  runtime=${STREAMREC_SPARK_CONF_RUNTIME:-}
  [ -n "$runtime" ] || runtime=$(mktemp -d "${TMPDIR:-/tmp}/streamrec-spark-conf.XXXXXX")
  (
    umask 077
    mkdir -p "$runtime"
    chmod 700 "$runtime"
    for f in "$src"/*; do
      [ -f "$f" ] && [ "$(basename "$f")" != spark-defaults.conf ] && cat "$f" > "$runtime/$(basename "$f")"
    done
    { [ -f "$src/spark-defaults.conf" ] && cat "$src/spark-defaults.conf"
      printf '\n# added by the entrypoint from SPARK_AUTH_SECRET\nspark.authenticate true\nspark.authenticate.secret %s\n' \
        "$SPARK_AUTH_SECRET"
    } > "$runtime/spark-defaults.conf.tmp"
    mv "$runtime/spark-defaults.conf.tmp" "$runtime/spark-defaults.conf"
  )
  export SPARK_CONF_DIR=$runtime
  unset SPARK_AUTH_SECRET
fi

spark_classpath() {
  local cp="${SPARK_HOME}/jars/*"
  [ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && cp="$cp:$SPARK_EXTRA_CLASSPATH"
  [ -n "${HADOOP_CONF_DIR:-}" ] && cp="$HADOOP_CONF_DIR:$cp"
  echo "${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$cp"
}

case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:?}" --deploy-mode client "$@"
    ;;
  executor)
    shift
    # SPARK_JAVA_OPT_0, _1, ... in numeric order (the driver passes the executors' JVM options this way)
    java_opts=()
    while IFS= read -r opt; do
      java_opts+=("$opt")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY:?}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "$(spark_classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL:?}" \
      --executor-id "${SPARK_EXECUTOR_ID:?}" \
      --cores "${SPARK_EXECUTOR_CORES:?}" \
      --app-id "${SPARK_APPLICATION_ID:?}" \
      --hostname "${SPARK_EXECUTOR_POD_IP:?}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME:-}"
    ;;
esac

exec "$@"

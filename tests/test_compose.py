"""The docker-compose deployment: what would break silently, checked without a Docker engine.

Nothing here can build the image or start a container (no engine on CI). What it can do is read
``docker-compose.yaml``, ``Dockerfile``, ``.env.example`` and ``requirements.lock`` and hold them to the promises
that otherwise fail only at run time, on someone else's cluster: an image tag that floats, a Spark on the workers
that is not the driver's, an ``hadoop-aws`` that does not match the Hadoop inside pyspark, a service nobody waits
for, a code mount that differs between Airflow and Spark (the driver would run one ``jobs/`` and the executors
import another ``streamrec``), a secret typed into a tracked file.

When ``docker-compose`` (1.29, Debian's package) or Compose v2 is installed, the file is also validated by it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
LOCK = REPO / "requirements.lock"

ONE_SHOT = {"airflow-init", "minio-init"}
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SPARK_SERVICES = {"spark-master", "spark-worker"}
CONNECT = "spark-connect"
"""The warm Spark of the update path: a Spark Connect server, a driver application of the master."""
CODE_DIRS = ("streamrec", "jobs", "dags", "plugins", "expectations")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.I)
INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?])[^}]*)?\}$")
"""A whole value that is one ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` or ``${VAR:?message}``."""


# --------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile_args() -> dict[str, str]:
    """``ARG NAME=value`` of the Dockerfile (the versions the image promises)."""
    return dict(re.findall(r"^ARG\s+([A-Z0-9_]+)=(\S+)\s*$", DOCKERFILE.read_text(encoding="utf-8"), re.M))


def locked(name: str) -> str:
    """The exact version of ``name`` pinned in requirements.lock."""
    m = re.search(rf"^{re.escape(name)}==(\S+)", LOCK.read_text(encoding="utf-8"), re.M)
    assert m, f"{name} is not pinned in {LOCK.name}"
    return m.group(1)


def default_of(value: str) -> str:
    """What compose makes of a ``${VAR:-default}`` / ``${VAR-default}`` value when VAR is unset."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", value)
    return m.group(1) if m else value


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def bind_mounts(service: dict) -> dict[str, str]:
    """Host-path volumes of a service: ``{source: target}`` (named volumes left out), ``:ro`` stripped."""
    out = {}
    for vol in service.get("volumes") or []:
        source, target = str(vol).split(":")[:2]
        if source.startswith((".", "/")):
            out[source.rstrip("/")] = target
    return out


def named_volumes(service: dict) -> dict[str, str]:
    out = {}
    for vol in service.get("volumes") or []:
        source, target = str(vol).split(":")[:2]
        if not source.startswith((".", "/")):
            out[source] = target
    return out


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None when there is none); a ``@sha256:`` digest counts as pinned."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def pyspark_hadoop_version() -> str:
    """The Hadoop version bundled with the installed pyspark, read from its ``hadoop-client-api-*.jar``."""
    spec = importlib.util.find_spec("pyspark")
    assert spec and spec.origin, "pyspark is not installed in this environment"
    jars = sorted((Path(spec.origin).parent / "jars").glob("hadoop-client-api-*.jar"))
    assert len(jars) == 1, (
        f"expected one hadoop-client-api jar in pyspark/jars, found {[j.name for j in jars]}"
    )
    return jars[0].name[len("hadoop-client-api-") : -len(".jar")]


# ------------------------------------------------------------------------------------------ images and tags
def test_every_image_is_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"service {name} has no image (a build-only service gets an unpinned, generated name)"
        assert "${" not in image, f"service {name}: image {image!r} depends on the environment"
        tag = image_tag(image)
        assert tag, f"service {name}: image {image!r} has no tag (that is :latest)"
        assert tag != "latest" and not tag.startswith("latest-"), f"service {name}: {image!r} floats"


def test_our_image_is_built_here_and_shared(services):
    """Airflow and Spark run the image built from ./Dockerfile: same Python, pyspark, jars and streamrec."""
    ours = {n: s for n, s in services.items() if s.get("build")}
    assert set(ours) >= AIRFLOW_SERVICES | SPARK_SERVICES | {"airflow-init"}
    assert len({s["image"] for s in ours.values()}) == 1, "services built here must share one image name"
    for name, svc in ours.items():
        build = svc["build"]
        assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
        uid, _, gid = str(svc.get("user", "")).partition(":")
        assert uid.isdigit() and uid != "0" and gid == "0", f"{name} must run as a non-root uid in group 0"


def test_spark_version_is_the_locked_pyspark(services, dockerfile_args):
    pyspark = locked("pyspark")
    assert locked("pyspark-client") == pyspark, "pyspark-client must equal pyspark (they share pyspark/)"
    assert dockerfile_args["SPARK_VERSION"] == pyspark
    for name in SPARK_SERVICES:
        svc = services[name]
        assert svc["image"] == services["airflow-scheduler"]["image"], (
            f"{name} must run the driver's image (same Spark, same Python and libraries on the executors)"
        )
        assert f"spark{pyspark}" in image_tag(svc["image"]), (
            f"{name}: image tag does not name Spark {pyspark}"
        )
        assert svc["command"][0] == "spark-class", f"{name} must run the Spark of the image's pyspark"


def test_airflow_version_is_the_locked_one(services, dockerfile_args):
    airflow = locked("apache-airflow")
    assert dockerfile_args["AIRFLOW_VERSION"] == airflow
    assert f"airflow{airflow}" in image_tag(services["airflow-scheduler"]["image"])


def test_hadoop_aws_matches_the_hadoop_inside_pyspark(dockerfile_args):
    """hadoop-aws must be exactly the bundled Hadoop's version, or s3a fails with NoSuchMethodError."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert dockerfile_args["HADOOP_VERSION"] == pyspark_hadoop_version()
    assert "hadoop-aws/${HADOOP_VERSION}/hadoop-aws-${HADOOP_VERSION}.jar" in text
    assert "hadoop-client-api-${HADOOP_VERSION}.jar" in text, "the build must re-check the bundled Hadoop"
    for arg in ("HADOOP_AWS_SHA1", "AWS_SDK_BUNDLE_SHA1", "ANALYTICS_ACCELERATOR_SHA1"):
        assert re.fullmatch(r"[0-9a-f]{40}", dockerfile_args[arg]), f"{arg} must be a full SHA-1"
        assert f"${{{arg}}}" in text, f"{arg} is declared but never checked"
    assert "sha1sum -c" in text


def test_dockerfile_installs_the_lock_like_setup(dockerfile_args):
    """The image's environment is the lock, installed by the same uv as scripts/setup.sh."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "uv pip sync" in text and "requirements.lock" in text
    setup_uv = re.search(r'"uv==([^"]+)"', (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8"))
    assert setup_uv and dockerfile_args["UV_VERSION"] == setup_uv.group(1)
    base = dockerfile_args["PYTHON_IMAGE"]
    assert image_tag(base) and "latest" not in base and base.split(":")[1].startswith("3.11")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "the image must end as a non-root user"
    extra = (REPO / "docker" / "requirements-image.txt").read_text(encoding="utf-8")
    for line in extra.splitlines():
        if line.strip() and not line.startswith("#"):
            name = line.split("==")[0]
            assert "==" in line, f"image extra {line!r} is not pinned"
            assert not re.search(rf"^{re.escape(name)}==", LOCK.read_text(encoding="utf-8"), re.M | re.I), (
                f"{name} is already in requirements.lock; pin it in one place"
            )


def test_named_volumes_mount_on_folders_the_image_owns(services):
    """A new named volume takes the owner of the image's folder at its mount point; a missing folder means
    root, and the non-root services could not write their logs, checkpoints or the login file."""
    made = set()
    for block in re.findall(r"mkdir -p ((?:\\\n|[^\n])+)", DOCKERFILE.read_text(encoding="utf-8")):
        made |= {w for w in block.replace("\\\n", " ").split("&&")[0].split() if w.startswith("/")}
    for name, svc in services.items():
        if not svc.get("build"):
            continue
        for volume, target in named_volumes(svc).items():
            assert target in made, (
                f"{name}: volume {volume} mounts on {target}, which the Dockerfile does not create"
            )


# ------------------------------------------------------------------------------ health and start-up order
def test_long_running_services_have_healthchecks(services):
    one_shot = {n for n, s in services.items() if str(s.get("restart", "")) == "no"}
    assert one_shot == ONE_SHOT
    for name, svc in services.items():
        if name in ONE_SHOT:
            continue
        hc = svc.get("healthcheck") or {}
        assert hc.get("test") and not hc.get("disable"), f"long-running service {name} has no healthcheck"
        assert svc.get("restart") in ("always", "unless-stopped"), f"{name} is not restarted when it dies"


def test_dependencies_wait_for_health_or_completion(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on as a list only waits for a start, not for health"
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = (how or {}).get("condition")
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), (
                    f"{name} waits for {dep}'s health, which has no check"
                )
            elif cond == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name} waits for {dep} to finish, but {dep} runs forever"
            else:
                pytest.fail(f"{name} -> {dep}: condition {cond!r} (want service_healthy / completed)")
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"]["spark-master"]["condition"] == "service_healthy"
    assert env_of(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_spark_workers_can_be_scaled(services):
    worker = services["spark-worker"]
    assert "container_name" not in worker and not worker.get("ports"), (
        "a fixed container name or host port makes `--scale spark-worker=N` fail"
    )


# ------------------------------------------------------------------------------- what the DAGs and jobs read
def test_the_environment_the_dags_read_is_set(services):
    sources = "".join(
        p.read_text(encoding="utf-8")
        for p in [REPO / "dags" / "_streamrec_common.py", REPO / "streamrec" / "storage" / "bucket.py"]
        + [REPO / "streamrec" / "pipeline" / "tasks.py", REPO / "streamrec" / "spark" / "session.py"]
    )
    wanted = {
        "STREAMREC_BUCKET",
        "STREAMREC_HOME",
        "STREAMREC_PYTHON",
        "STREAMREC_CHECKPOINT_DIR",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }
    for var in wanted:
        assert var in sources, f"{var} is no longer read by the code; update the compose file"
    for name in AIRFLOW_SERVICES | {"spark-worker", CONNECT}:
        env = env_of(services[name])
        missing = wanted - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert default_of(env["STREAMREC_BUCKET"]).startswith("s3://"), "the cluster's bucket is S3 (shared)"
        assert env["STREAMREC_PYTHON"] == "/opt/venv/bin/python"
        assert env["STREAMREC_HOME"] == "/opt/streamrec"
    # A shared checkpoint folder: executors write RDD checkpoints there and the driver reads them back.
    ckpt = env_of(services["airflow-scheduler"])["STREAMREC_CHECKPOINT_DIR"]
    assert named_volumes(services["airflow-scheduler"]).get("spark-checkpoints") == ckpt
    assert named_volumes(services["spark-worker"]).get("spark-checkpoints") == ckpt
    # the Connect server's spark.checkpoint.dir is on the same volume (its executors write, it reads back)
    assert named_volumes(services[CONNECT]).get("spark-checkpoints") == ckpt
    assert env_of(services[CONNECT])["STREAMREC_CONNECT_DIR"].startswith(ckpt + "/")


def test_spark_connection_points_at_the_master(services):
    env = env_of(services["airflow-scheduler"])
    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["conn_type"] == "spark"
    host, port = conn["host"].removeprefix("spark://").split(":")
    assert conn["host"].startswith("spark://") and host in services
    master = services[host]["command"]
    assert master[master.index("--port") + 1] == port and master[master.index("--host") + 1] == host
    assert conn["extra"]["deploy-mode"] == "client"
    worker = services["spark-worker"]["command"]
    assert f"spark://{host}:{port}" in worker
    # the driver runs in the scheduler container and must bind to an address the executors can reach
    assert env["SPARK_LOCAL_IP"] == "auto"


def test_update_tasks_attach_to_the_connect_server(services):
    """The Spark Connect server: ``streamrec.launch.connect serve`` on the master, where every Airflow service's
    ``STREAMREC_SPARK_REMOTE`` points (the DAGs read it when they are parsed, the update task when it runs)."""
    sources = (REPO / "dags" / "_streamrec_common.py").read_text(encoding="utf-8")
    assert "STREAMREC_SPARK_REMOTE" in sources, "the DAGs no longer read it; update the compose file"
    svc = services[CONNECT]
    cmd = [str(a) for a in svc["command"]]
    assert cmd[:5] == ["python", "-m", "streamrec.launch.connect", "serve", "--once"], (
        "compose restarts it (restart: always), so the module's own restart loop is off"
    )
    conn = json.loads(env_of(services["airflow-scheduler"])["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert cmd[cmd.index("--master") + 1] == conn["host"], "the batch jobs' master"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = cmd[cmd.index("--port") + 1]
    for name in AIRFLOW_SERVICES:
        assert env_of(services[name])["STREAMREC_SPARK_REMOTE"] == f"sc://{CONNECT}:{port}", name
    assert not svc.get("ports"), "Spark Connect has no login: never published on the host"
    assert env_of(svc)["SPARK_LOCAL_IP"] == "auto", "the driver must bind where the executors can reach it"
    assert svc["depends_on"]["spark-master"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"][CONNECT]["condition"] == "service_healthy"
    test = [str(a) for a in svc["healthcheck"]["test"]]
    assert test[:4] == ["CMD", "python", "-m", "streamrec.launch.connect"] and "wait" in test
    assert test[test.index("--url") + 1] == f"sc://localhost:{port}"
    assert svc["image"] == services["spark-master"]["image"], "the driver runs the executors' image"


def test_connect_server_command_carries_s3a_but_no_credentials(services):
    """What ``serve`` runs with the service's environment: s3a (the bucket is s3://) and dynamic allocation on the
    standalone master (the batch jobs' spark-submit must get the cores it holds while idle); the keys never on the
    command line (s3a reads them from the server's environment)."""
    from streamrec.launch import connect

    env = {k: default_of(v) for k, v in env_of(services[CONNECT]).items()}
    env.update(AWS_ACCESS_KEY_ID="app-key-id-123", AWS_SECRET_ACCESS_KEY="app-secret-456",
               SPARK_AUTH_SECRET="spark-secret-789", STREAMREC_S3A_JARS="provided")  # fmt: skip
    cmd = [str(a) for a in services[CONNECT]["command"]]
    argv = connect.server_command(
        master=cmd[cmd.index("--master") + 1], host="0.0.0.0", port=int(cmd[cmd.index("--port") + 1]), env=env
    )
    line = " ".join(argv)
    assert "--class org.apache.spark.sql.connect.service.SparkConnectServer" in line
    assert "--name streamrec-connect --master spark://spark-master:7077" in line
    assert "spark.connect.grpc.binding.port=15002" in line
    assert "spark.connect.grpc.binding.address=0.0.0.0" in line
    assert "spark.hadoop.fs.s3a." in line, "the server reads and writes the bucket: s3a conf on its line"
    assert "spark.dynamicAllocation.enabled=true" in line
    assert "spark.dynamicAllocation.shuffleTracking.enabled=true" in line
    assert "spark.checkpoint.dir=/var/lib/streamrec/checkpoints/connect/checkpoints" in line
    for secret in ("app-key-id-123", "app-secret-456", "spark-secret-789"):
        assert secret not in line


@pytest.mark.skipif(
    shutil.which("hostname") is None or shutil.which("bash") is None, reason="needs bash, hostname"
)
def test_entrypoint_resolves_the_driver_address():
    """SPARK_LOCAL_IP=auto becomes this host's own address, advertised as SPARK_LOCAL_HOSTNAME too."""
    run = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "env"],
        env={"PATH": "/usr/bin:/bin", "SPARK_LOCAL_IP": "auto"},
        capture_output=True,
        text=True,
        check=True,
    )
    env = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
    own = subprocess.run(["hostname", "-i"], capture_output=True, text=True, check=True).stdout.split()[0]
    assert env["SPARK_LOCAL_IP"] == own != "auto"
    assert env["SPARK_LOCAL_HOSTNAME"] == own
    kept = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "env"],
        env={"PATH": "/usr/bin:/bin", "SPARK_LOCAL_IP": "10.1.2.3"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "SPARK_LOCAL_IP=10.1.2.3" in kept and "SPARK_LOCAL_HOSTNAME" not in kept


def test_code_is_mounted_at_the_same_paths_in_airflow_and_spark(services):
    expected = {f"./{d}": f"/opt/streamrec/{d}" for d in CODE_DIRS}
    for name in AIRFLOW_SERVICES | SPARK_SERVICES | {"airflow-init", CONNECT}:
        mounts = bind_mounts(services[name])
        got = {s: t for s, t in mounts.items() if s.lstrip("./") in CODE_DIRS}
        assert got == expected, f"{name} mounts {got}, want {expected}"
        for vol in services[name]["volumes"]:
            if str(vol).split(":")[0].lstrip("./") in CODE_DIRS:
                assert str(vol).endswith(":ro"), f"{name}: code mount {vol} should be read-only"
    for d in CODE_DIRS:
        assert (REPO / d).is_dir(), f"./{d} is mounted but missing from the repository"
    env = env_of(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == expected["./dags"]
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == expected["./plugins"]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert "COPY --chown=50000:0 . /opt/streamrec" in dockerfile, (
        "the image must hold the code at the same path"
    )


def test_entrypoint_starts_a_kubernetes_executor(tmp_path):
    """Spark on Kubernetes runs the image with ``executor`` and SPARK_* variables: the backend's command line."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n', encoding="utf-8")
    java.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "JAVA_HOME": str(tmp_path / "jdk"),
        "SPARK_HOME": "/opt/spark",
        "SPARK_CONF_DIR": "/opt/conf",
        "SPARK_EXECUTOR_MEMORY": "1g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.5:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
        "SPARK_EXECUTOR_POD_NAME": "streamrec-exec-3",
        "SPARK_JAVA_OPT_10": "-Dlast=1",
        "SPARK_JAVA_OPT_2": "-Dsecond=1",
        "SPARK_JAVA_OPT_0": "-Dfirst=1 with space",
    }
    run = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "executor"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    argv = run.stdout.splitlines()
    assert argv[:3] == ["-Dfirst=1 with space", "-Dsecond=1", "-Dlast=1"], "options in numeric order, whole"
    assert argv[3:5] == ["-Xms1g", "-Xmx1g"]
    assert argv[argv.index("-cp") + 1] == "/opt/conf:/opt/spark/jars/*"
    backend = argv.index("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
    flags = dict(zip(argv[backend + 1 :: 2], argv[backend + 2 :: 2], strict=True))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-app-1",
        "--hostname": "10.0.0.9",
        "--resourceProfileId": "0",
        "--podName": "streamrec-exec-3",
    }
    passthrough = subprocess.run(
        [str(REPO / "docker" / "entrypoint.sh"), "echo", "airflow", "scheduler"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert passthrough.stdout == "airflow scheduler\n"


def _script(service: dict) -> str:
    """The shell script of a one-shot service, with compose's ``$$`` escapes undone (what the shell runs)."""
    return service["command"][0].replace("$$", "$")


def _fake_bin(tmp_path: Path, name: str) -> Path:
    """A stand-in executable that records its arguments, one call per line, in ``<name>.calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/{name}.calls"\n', encoding="utf-8")
    exe.chmod(0o755)
    return bin_dir


def test_airflow_init_writes_the_login_and_refuses_placeholders(services, tmp_path):
    """airflow-init's script, run by bash with a stand-in ``airflow``: the password file, and the refusal."""
    init = services["airflow-init"]
    assert init["entrypoint"][-2:] == ["bash", "-c"]
    bin_dir = _fake_bin(tmp_path, "airflow")
    env = {k: default_of(v) for k, v in env_of(init).items()}
    env.update(
        {
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "AIRFLOW_ADMIN_PASSWORD": "s3cret-from-env",
            "AIRFLOW__CORE__FERNET_KEY": "k",
            "AIRFLOW__API_AUTH__JWT_SECRET": "j",
            "AIRFLOW__API__SECRET_KEY": "a",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:pw@postgres:5432/airflow",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "alice:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "passwords.json"),
        }
    )
    run = subprocess.run(["bash", "-c", _script(init)], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "s3cret" not in run.stdout + run.stderr, "the password must not be printed"
    written = tmp_path / "passwords.json"
    assert json.loads(written.read_text(encoding="utf-8")) == {"alice": "s3cret-from-env"}
    assert written.stat().st_mode & 0o077 == 0, "the password file must be private to its owner"
    assert (tmp_path / "airflow.calls").read_text(encoding="utf-8").splitlines() == ["db migrate", "version"]

    (tmp_path / "airflow.calls").unlink()
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = "change-me-jwt-secret"
    refused = subprocess.run(
        ["bash", "-c", _script(init)], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "AIRFLOW__API_AUTH__JWT_SECRET" in refused.stderr
    assert not (tmp_path / "airflow.calls").exists(), "nothing may run before the check"


def test_minio_init_creates_the_bucket_of_streamrec_bucket(services, tmp_path):
    """minio-init's script with a stand-in ``mc``: the bucket name comes from STREAMREC_BUCKET (prefix dropped)."""
    init = services["minio-init"]
    bin_dir = _fake_bin(tmp_path, "mc")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "TMPDIR": str(tmp_path),
        "MINIO_ROOT_USER": "root",
        "MINIO_ROOT_PASSWORD": "rootpw123",
        "AWS_ACCESS_KEY_ID": "app",
        "AWS_SECRET_ACCESS_KEY": "apppw1234",
        "STREAMREC_BUCKET": "s3://ratings-bucket/team/streamrec",
    }
    run = subprocess.run(["sh", "-c", _script(init)], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    calls = (tmp_path / "mc.calls").read_text(encoding="utf-8").splitlines()
    assert "mb --ignore-existing local/ratings-bucket" in calls
    assert "admin user add local app apppw1234" in calls
    # the application user gets a policy naming only its bucket (not MinIO's built-in "readwrite": every bucket)
    assert f"admin policy create local streamrec-app {tmp_path}/streamrec-app-policy.json" in calls
    assert "admin policy attach local streamrec-app --user app" in calls
    policy = json.loads((tmp_path / "streamrec-app-policy.json").read_text(encoding="utf-8"))
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {"arn:aws:s3:::ratings-bucket", "arn:aws:s3:::ratings-bucket/*"}
    assert all(a.startswith("s3:") and "*" not in a for st in policy["Statement"] for a in st["Action"])
    env["MINIO_ROOT_PASSWORD"] = "change-me-minio-root-password"
    refused = subprocess.run(
        ["sh", "-c", _script(init)], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0


# ----------------------------------------------------------------------------------------------- secrets
def _all_env(compose) -> list[tuple[str, str, str]]:
    return [(n, k, v) for n, s in compose["services"].items() for k, v in env_of(s).items()]


def test_no_secret_literal_in_the_compose_file(compose):
    for service, key, value in _all_env(compose):
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            assert INTERPOLATION.match(value), (
                f"{service}: {key} must come from .env as ${{VAR}}, got a literal"
            )
            assert not re.search(r":-[^}]", value), f"{service}: {key} has a default value, i.e. a secret"
        for userinfo in re.findall(r"://[^/@\s:]+:(.+?)@", value):
            assert INTERPOLATION.match(userinfo), f"{service}: {key} embeds a literal password in a URL"
    conn = env_of(compose["services"]["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert re.fullmatch(
        r"postgresql\+psycopg2://airflow:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/airflow", conn
    )
    assert "minioadmin" not in COMPOSE.read_text(encoding="utf-8"), "MinIO's well-known default credentials"


def test_airflow_requires_a_login(compose):
    env = env_of(compose["services"]["airflow-apiserver"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS" not in " ".join(env), "that switch turns the login off"
    init = compose["services"]["airflow-init"]
    assert INTERPOLATION.match(env_of(init)["AIRFLOW_ADMIN_PASSWORD"])
    assert "AIRFLOW_ADMIN_PASSWORD" not in env, "only airflow-init needs the admin password"
    assert named_volumes(compose["services"]["airflow-apiserver"])["airflow-auth"] == str(
        Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent
    )
    # the password file (plain text) is in no container that runs task code
    holders = {n for n, s in compose["services"].items() if "airflow-auth" in named_volumes(s)}
    assert holders == {"airflow-apiserver", "airflow-init"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            out[key.strip()] = value.strip()
    return out


def test_env_example_holds_placeholders_only(compose):
    example = _env_example()
    for key, value in example.items():
        if SECRET_NAME.search(key) and key != "AWS_ACCESS_KEY_ID":
            assert value.startswith("change-me"), f".env.example: {key} must be a change-me placeholder"
        assert not re.fullmatch(r"[A-Za-z0-9+/=_-]{32,}", value), f".env.example: {key} looks like a real key"
    # every variable compose insists on (${VAR:?...}) is in the example, so `cp .env.example .env` is complete
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", COMPOSE.read_text(encoding="utf-8")))
    assert required and required <= set(example), (
        f"missing from .env.example: {sorted(required - set(example))}"
    )
    assert example["COMPOSE_PROFILES"] == "minio"
    for ignore in (".gitignore", ".dockerignore"):
        lines = (REPO / ignore).read_text(encoding="utf-8").split()
        assert ".env" in lines, f"{ignore} must exclude .env"


def test_compose_env_script_fills_every_placeholder():
    """``make compose-env``: every change-me replaced, the Fernet key valid, the rest of the file unchanged."""
    loader = importlib.machinery.SourceFileLoader("compose_env", str(REPO / "scripts" / "compose-env"))
    spec = importlib.util.spec_from_loader("compose_env", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    first, second = module.render(example), module.render(example)
    assert "=change-me" not in first and first != second, "secrets must be generated, fresh each time"
    lines_in, lines_out = example.splitlines(), first.splitlines()
    assert len(lines_in) == len(lines_out)
    for a, b in zip(lines_in, lines_out, strict=True):
        if "=change-me" not in a:
            assert a == b
    values = dict(ln.split("=", 1) for ln in lines_out if ln and not ln.startswith("#"))
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises on a malformed key
    assert re.fullmatch(r"[0-9a-f]{48}", values["POSTGRES_PASSWORD"]), "it goes into a URL: hex only"
    assert len(values["AIRFLOW_JWT_SECRET"]) >= 64


# ------------------------------------------------------------------ the Spark cluster's shared secret (spark.authenticate)
def test_every_spark_process_gets_the_shared_secret_from_env(services):
    """Master, workers (and so their executors) and every Airflow service that may start a driver get
    SPARK_AUTH_SECRET from .env (required); the entrypoint turns it into spark.authenticate (test_cluster_launcher)."""
    for name in SPARK_SERVICES | AIRFLOW_SERVICES | {CONNECT}:
        value = env_of(services[name]).get("SPARK_AUTH_SECRET")
        assert value and re.fullmatch(r"\$\{SPARK_AUTH_SECRET:\?[^}]*\}", value), name
    conf = (REPO / "docker" / "spark-conf" / "spark-defaults.conf").read_text(encoding="utf-8")
    assert re.search(r"^spark\.master\.rest\.enabled\s+false$", conf, re.M), (
        "the REST submission server is off"
    )
    assert "spark.authenticate.secret" not in conf, "the secret is added at run time, never tracked"


# ------------------------------------------------------------------ the native launcher (scripts/cluster-up)
# One definition, two launchers: scripts/cluster_services.py derives every native process from this compose file.
# These tests hold it to that with their own, plain table of what may differ (a container's host names, ports and
# paths; what the image provides), so a change to a service's command, environment or health check here that the
# native launcher would not follow fails.
NATIVE_ONLY_ENV = {
    "PATH", "PYTHONPATH", "HOME", "LANG", "JAVA_HOME",
    "STREAMREC_S3A_SHARED_JARS", "STREAMREC_SPARK_CONF_RUNTIME",
    "SPARK_LOCAL_IP",  # the master's and workers' web UIs bind to it (else every interface); a container's own
}  # fmt: skip
NATIVE_ONLY_AIRFLOW_ENV = {
    "AIRFLOW__API__HOST",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
}
NATIVE_OVERRIDES = {"SPARK_LOCAL_IP": ("auto", "127.0.0.1"), "STREAMREC_S3A_JARS": ("provided", None)}
"""compose value -> native value (None: the fetched jars) of the variables whose meaning is the same but whose
value cannot be: a container's own address, the image's built-in jars."""


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    sys.path.insert(0, str(REPO / "scripts"))
    import cluster_services as cs

    home = tmp_path_factory.mktemp("cluster-home")
    env = {**cs.NATIVE_DEFAULTS, **cs.parse_env_file(cs.render_env_file())}
    topo = cs.Topology(home, env)
    return cs, topo, {s.name: s for s in topo.services()}


def _subs(topo, base: str, instance: str, index: int) -> list[tuple[str, str]]:
    """The test's own table of container -> native strings for one service instance (plain replacements)."""
    e, home = topo.env, str(topo.home)
    own = {
        "spark-master": {"8080": e["SPARK_MASTER_UI_PORT"], "7077": e["CLUSTER_SPARK_MASTER_PORT"]},
        "spark-worker": {"8081": str(int(e["CLUSTER_SPARK_WORKER_UI_PORT"]) + index - 1)},
        "airflow-apiserver": {"8080": e["AIRFLOW_PORT"]},
        "airflow-scheduler": {"8974": e["CLUSTER_SCHEDULER_HEALTH_PORT"]},
        "spark-connect": {"15002": e["CLUSTER_SPARK_CONNECT_PORT"]},
    }.get(base, {})
    out = [(f"localhost:{p}", f"127.0.0.1:{n}") for p, n in own.items()]
    out += [
        ("spark://spark-master:7077", f"spark://127.0.0.1:{e['CLUSTER_SPARK_MASTER_PORT']}"),
        ("sc://spark-connect:15002", f"sc://127.0.0.1:{e['CLUSTER_SPARK_CONNECT_PORT']}"),
        ("http://airflow-apiserver:8080", f"http://127.0.0.1:{e['AIRFLOW_PORT']}"),
        ("@postgres:5432", f"@127.0.0.1:{e['CLUSTER_POSTGRES_PORT']}"),
        ("http://minio:9000", f"http://127.0.0.1:{e['MINIO_API_PORT']}"),
        ("/opt/venv/lib/python3.11/site-packages/pyspark", topo.pyspark),
        ("/opt/venv/", f"{REPO}/.venv/"),
        ("/opt/streamrec", str(REPO)),
        ("/opt/airflow", f"{home}/airflow"),
        ("/var/lib/streamrec/checkpoints", f"{home}/volumes/spark-checkpoints"),
        ("/var/lib/streamrec/spark-work", f"{home}/{instance}/work"),
    ]
    return out + [(f"__flag__{p}", n) for p, n in own.items()]


def _expect(value: str, subs) -> str:
    for old, new in subs:
        if not old.startswith("__flag__"):
            value = value.replace(old, new)
    return value


def test_native_launcher_runs_every_compose_service(services, native):
    _, topo, by_name = native
    assert {s.base for s in by_name.values()} == set(services)
    assert [n for n in by_name if n.startswith("spark-worker-")] == [f"spark-worker-{i}" for i in (1, 2)]


def test_native_commands_are_the_compose_commands(services, native):
    cs, topo, by_name = native
    checked = 0
    for svc in by_name.values():
        if svc.base in ("postgres", "minio", "minio-init"):  # no native image: see cluster_services.py
            continue
        compose_svc = services[svc.base]
        cmd = [str(a) for a in compose_svc["command"]]
        entry = [str(a) for a in compose_svc.get("entrypoint") or []]
        want = [cs.interpolate(a, topo.env) for a in entry[3:] + cmd]
        subs = _subs(
            topo, svc.base, svc.name, int(svc.name.rsplit("-", 1)[1]) if svc.base == "spark-worker" else 1
        )
        flags = {old.removeprefix("__flag__"): new for old, new in subs if old.startswith("__flag__")}
        want = [_expect(a, subs) for a in want]
        for i, a in enumerate(want[:-1]):
            if a == "--host" and want[i + 1] in services:
                want[i + 1] = "127.0.0.1"
            if a in ("--port", "--webui-port"):
                want[i + 1] = flags[want[i + 1]]
        # a container binds all of its own interfaces; natively loopback only (argparse: the last --host wins)
        extra = ["--host", "127.0.0.1"] if svc.base in ("spark-worker", CONNECT) else []
        assert svc.argv == [str(cs.ENTRYPOINT), *want, *extra], svc.name
        checked += 1
    # two workers, the master, the Connect server, Airflow, airflow-init
    assert checked == 2 + 1 + 1 + len(AIRFLOW_SERVICES) + 1
    init = by_name["airflow-init"]
    assert init.one_shot and init.argv[:3] == [str(cs.ENTRYPOINT), "bash", "-c"]
    assert init.argv[3] == _script(services["airflow-init"]), "the same script, with compose's $$ undone"


def test_native_environment_is_the_compose_environment(services, dockerfile_args, native):
    cs, topo, by_name = native
    image_env = cs.dockerfile_env()
    for svc in by_name.values():
        if svc.base in ("postgres", "minio", "minio-init"):
            continue
        compose_env = {k: cs.interpolate(v, topo.env) for k, v in env_of(services[svc.base]).items()}
        index = int(svc.name.rsplit("-", 1)[1]) if svc.base == "spark-worker" else 1
        subs = _subs(topo, svc.base, svc.name, index)
        want = {k: v for k, v in image_env.items() if k not in cs.IMAGE_ONLY_ENV}
        want.update(compose_env)
        extra = NATIVE_ONLY_ENV | (NATIVE_ONLY_AIRFLOW_ENV if svc.base.startswith("airflow") else set())
        assert set(svc.env) - set(want) <= extra, f"{svc.name}: unexplained native variables"
        assert set(want) <= set(svc.env), f"{svc.name} lacks {sorted(set(want) - set(svc.env))}"
        for key, value in want.items():
            if key in NATIVE_OVERRIDES:
                compose_value, native_value = NATIVE_OVERRIDES[key]
                assert value == compose_value, f"{svc.name}: {key} is {value!r} in compose"
                assert svc.env[key] == (native_value or topo.s3a_jars), (svc.name, key)
            elif key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                continue  # natively: the application user moto made (minio-init), see cluster_launcher.init_s3
            else:
                assert svc.env[key] == _expect(value, subs), f"{svc.name}: {key}"
    conn = json.loads(by_name["airflow-scheduler"].env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["host"] == f"spark://127.0.0.1:{topo.env['CLUSTER_SPARK_MASTER_PORT']}"
    remote = f"sc://127.0.0.1:{topo.env['CLUSTER_SPARK_CONNECT_PORT']}"
    for name in AIRFLOW_SERVICES:
        assert by_name[name].env["STREAMREC_SPARK_REMOTE"] == remote, name
    assert topo.client_env()["STREAMREC_SPARK_REMOTE"] == remote


def test_native_health_checks_are_the_compose_ones(services, native):
    cs, topo, by_name = native
    for svc in by_name.values():
        if svc.base in ("minio", "minio-init", "airflow-init"):
            continue
        test = [str(t) for t in services[svc.base]["healthcheck"]["test"]]
        index = int(svc.name.rsplit("-", 1)[1]) if svc.base == "spark-worker" else 1
        subs = _subs(topo, svc.base, svc.name, index)
        want = ["bash", "-c", *test[1:]] if test[0] == "CMD-SHELL" else test[1:]
        want = [_expect(cs.interpolate(a, topo.env), subs) for a in want]
        if svc.base == "postgres":  # a container's pg_isready uses the local socket; here: loopback and port
            want += ["-h", "127.0.0.1", "-p", topo.env["CLUSTER_POSTGRES_PORT"]]
        assert svc.health == want, svc.name


def test_native_shares_what_compose_shares(services, native):
    """A named volume mounted by several services is one folder natively; a worker's work folder is its own."""
    _, topo, by_name = native
    ckpt = {
        by_name[n].env["STREAMREC_CHECKPOINT_DIR"]
        for n in ("airflow-scheduler", "spark-worker-1", "spark-worker-2")
    }
    assert ckpt == {str(topo.home / "volumes" / "spark-checkpoints")}
    assert by_name["spark-connect"].env["STREAMREC_CONNECT_DIR"] == str(
        topo.home / "volumes" / "spark-checkpoints" / "connect"
    )
    homes = {by_name[n].env["AIRFLOW_HOME"] for n in AIRFLOW_SERVICES | {"airflow-init"}}
    assert homes == {str(topo.home / "airflow")}
    pw = by_name["airflow-apiserver"].env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert pw == str(topo.home / "airflow" / "auth" / "passwords.json")
    work = {
        a[a.index("--work-dir") + 1] for a in (by_name["spark-worker-1"].argv, by_name["spark-worker-2"].argv)
    }
    assert len(work) == 2

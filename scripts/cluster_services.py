"""The native twin of ``docker-compose.yaml``: every service's command, environment and health check, read from
the compose file (and the Dockerfile's ``ENV``) and translated for processes on one machine's loopback.

One definition, two launchers: nothing here restates what a service runs. ``docker compose up`` runs the compose
file in containers; ``scripts/cluster-up`` (``scripts/cluster_launcher.py``) runs the same commands, with the same
environment, waiting on the same health checks, as processes. What differs is only what a container gives for
free and a shared loopback does not, and it is all in this file:

* **where**: a container's paths become folders of the checkout and of ``$STREAMREC_CLUSTER_HOME``
  (:data:`PATHS`: ``/opt/streamrec`` is the checkout, ``/opt/venv`` its ``.venv``, ``/opt/airflow`` and the named
  volumes live under the cluster home);
* **ports**: each container has its own ports, processes share one loopback: a service's ``host:port``
  (``postgres:5432``, ``spark-master:7077``, ``localhost:8080`` inside a health check ...) becomes
  ``127.0.0.1:<native port>`` (:func:`Topology.port`); the ports come from the cluster's env file;
* **what a container image adds**: :data:`NATIVE_ENV` (``PATH``, ``PYTHONPATH``, loopback bind addresses, the
  s3a jars fetched by ``make setup`` instead of the image's ``provided`` ones) and :data:`NATIVE_ARGS`
  (``--host 127.0.0.1`` for a worker and for the Spark Connect server, the socket folder of ``pg_isready``);
* **three services have no native image**: ``postgres`` (Debian's PostgreSQL, initialised like the official
  image does from the same ``POSTGRES_*`` variables), ``minio`` / ``minio-init`` (the moto server and a Python
  init with the same duties: the bucket and an application user limited to it).

``tests/test_compose.py`` holds this translation to the compose file (commands, environment, health checks,
shared volumes), so the two launchers cannot drift apart silently.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
VENV = REPO / ".venv"

AIRFLOW = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("airflow-init", "minio-init")

NATIVE_DEFAULTS = {
    # ports on 127.0.0.1 (compose publishes only the first three; the others are inside its network)
    "AIRFLOW_PORT": "8180",
    "SPARK_MASTER_UI_PORT": "8181",
    "MINIO_API_PORT": "9190",
    "CLUSTER_SPARK_MASTER_PORT": "7077",
    "CLUSTER_SPARK_WORKER_UI_PORT": "8191",  # worker i (1-based) listens on this + i - 1
    "CLUSTER_POSTGRES_PORT": "15432",
    "CLUSTER_SCHEDULER_HEALTH_PORT": "18974",
    "CLUSTER_SPARK_CONNECT_PORT": "25002",  # not 15002: the embedded stack's Connect server (make airflow-up)
    # sizes for a 2-core machine: two workers of one core each
    "CLUSTER_SPARK_WORKERS": "2",
    "SPARK_WORKER_CORES": "1",
    "SPARK_WORKER_MEMORY": "2g",
    "AIRFLOW_API_WORKERS": "1",
    "AIRFLOW_PARALLELISM": "4",
}
"""What the generated env file of the native cluster sets over ``.env.example``'s values."""

PATHS = {
    "/opt/venv/lib/python3.11/site-packages/pyspark": "{pyspark}",
    "/opt/venv": "{repo}/.venv",
    "/opt/streamrec": "{repo}",
    "/opt/airflow": "{home}/airflow",
    "/var/lib/streamrec/checkpoints": "{home}/volumes/spark-checkpoints",
    "/var/lib/streamrec/spark-work": "{home}/{instance}/work",
    "/var/lib/postgresql/data": "{home}/postgres/data",
}
"""Container path -> native path (longest prefix first). ``{instance}`` is the service instance's own folder
(``spark-worker-2``): a worker's work folder is not shared in compose either."""

SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.I)

IMAGE_ONLY_ENV = {
    "PATH",
    "VIRTUAL_ENV",
    "JAVA_HOME",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
"""Dockerfile ``ENV`` that describes the image itself (its JDK, its virtualenv), not the services."""


def native_env(topo: Topology, name: str) -> dict[str, str]:
    """What a process needs natively that the image provides (one list; tests/test_compose.py checks it)."""
    env = {
        "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin",
        # the image installs streamrec (editable) at /opt/streamrec; here the checkout goes first on the path
        "PYTHONPATH": str(REPO),
        # compose's "auto" is the container's own address; here everything is on loopback
        "SPARK_LOCAL_IP": "127.0.0.1",
        # the image has hadoop-aws in Spark's own jars/ ("provided"); here the jars `make setup` fetched
        "STREAMREC_S3A_JARS": topo.s3a_jars,
        "STREAMREC_S3A_SHARED_JARS": "1",  # same paths for every process here: class paths, not 190 MB copies
        # the entrypoint's private copy of SPARK_CONF_DIR with the Spark secret (a container has its own /tmp)
        "STREAMREC_SPARK_CONF_RUNTIME": str(topo.home / "run" / name / "spark-conf"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    if name in AIRFLOW or name == "airflow-init":
        env["AIRFLOW__API__HOST"] = "127.0.0.1"  # a container listens on all of its own interfaces
        env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] = "127.0.0.1"
        env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] = str(
            topo.port("airflow-scheduler", 8974)
        )
    return env


def native_args(topo: Topology, base: str) -> list[str]:
    """Arguments added to a compose command natively."""
    if base == "spark-worker":
        return ["--host", "127.0.0.1"]  # a container's hostname is its address; here: loopback only
    if base == "spark-connect":  # a container listens on all of its own interfaces (0.0.0.0); here: loopback
        return ["--host", "127.0.0.1"]
    return []


# ----------------------------------------------------------------------------------------------- env files
def checked_home(home: Path) -> Path:
    """``home`` resolved, if it is a safe place for the cluster's files (its env file holds secrets, and a private
    cluster's folder is deleted when made): outside the checkout, or under its ``var/`` (git-ignored). Never the
    checkout itself or a folder git would see."""
    home = Path(home).resolve()
    if (
        home == REPO
        or REPO.is_relative_to(home)
        or (home.is_relative_to(REPO) and not home.is_relative_to(REPO / "var"))
    ):
        raise SystemExit(
            f"cluster: refusing {home} as STREAMREC_CLUSTER_HOME: inside the checkout only var/... is allowed "
            f"(default {REPO / 'var' / 'cluster'}); its env file holds secrets"
        )
    return home


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (compose's .env format without quoting; later lines win)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def render_env_file() -> str:
    """The native cluster's env file: ``.env.example`` with fresh secrets (``scripts/compose-env``) and
    :data:`NATIVE_DEFAULTS` appended."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("compose_env", str(REPO / "scripts" / "compose-env"))
    spec = importlib.util.spec_from_loader("compose_env", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    text = module.render(ENV_EXAMPLE.read_text(encoding="utf-8"))
    text += "\n# --- native launcher (scripts/cluster-up): ports on 127.0.0.1 and sizes ---\n"
    text += "".join(f"{k}={v}\n" for k, v in NATIVE_DEFAULTS.items())
    return text


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR?error}``, ``$VAR``; ``$$`` is a literal ``$``."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        val = env.get(name)
        if op in (":-", ":?") and not val:
            val = None
        if val is None:
            if op and op.endswith("?"):
                raise KeyError(f"{name}: {arg or 'required'}")
            return arg if op and op.endswith("-") else ""
        return val

    return _VAR.sub(sub, value)


def dockerfile_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile (``KEY=VALUE`` pairs; ``${VAR}`` of earlier ones left as written)."""
    out: dict[str, str] = {}
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                key, _, value = token.partition("=")
                out[key] = value
    return out


# -------------------------------------------------------------------------------------------- the topology
@dataclass
class Service:
    """One native process (or one-shot command) standing for one compose service (or one of its replicas)."""

    name: str  # spark-worker-2
    base: str  # spark-worker (the compose service)
    argv: list[str]
    env: dict[str, str]
    health: list[str] | None = None  # argv of the health check (compose's test, translated)
    interval: float = 10.0
    depends: list[str] = field(default_factory=list)
    one_shot: bool = False
    user: str | None = None  # run as (postgres refuses root)
    stop_signal: str = "SIGTERM"
    restart: bool = True  # compose `restart: always`


class Topology:
    """The compose services as native processes, for one cluster home and env file."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
        self.services_yaml: dict = self.compose["services"]
        import pyspark

        self.pyspark = str(Path(pyspark.__file__).parent)
        self.workers = int(env.get("CLUSTER_SPARK_WORKERS", "2"))
        from streamrec.launch import s3a

        jars = s3a.fetched_jars(s3a.jars_dir({}))
        self.s3a_jars = ",".join(str(j) for j in jars)

    # --- ports and paths
    def port(self, service: str, container_port: int, instance: int = 1) -> int:
        """The native port of ``service``'s ``container_port``."""
        e = self.env
        table = {
            ("postgres", 5432): e["CLUSTER_POSTGRES_PORT"],
            ("minio", 9000): e["MINIO_API_PORT"],
            ("spark-master", 7077): e["CLUSTER_SPARK_MASTER_PORT"],
            ("spark-master", 8080): e["SPARK_MASTER_UI_PORT"],
            ("airflow-apiserver", 8080): e["AIRFLOW_PORT"],
            ("airflow-scheduler", 8974): e["CLUSTER_SCHEDULER_HEALTH_PORT"],
            ("spark-connect", 15002): e["CLUSTER_SPARK_CONNECT_PORT"],
        }
        if service == "spark-worker" and container_port == 8081:
            return int(e["CLUSTER_SPARK_WORKER_UI_PORT"]) + instance - 1
        try:
            return int(table[(service, container_port)])
        except KeyError:
            raise KeyError(f"no native port for {service}:{container_port}") from None

    def path(self, value: str, instance: str) -> str:
        for prefix in sorted(PATHS, key=len, reverse=True):
            target = PATHS[prefix].format(repo=REPO, home=self.home, pyspark=self.pyspark, instance=instance)
            value = re.sub(rf"(?<![\w/]){re.escape(prefix)}(?=/|$|[\s:;,'\"])", target, value)
        return value

    def translate(self, value: str, base: str, instance: str, index: int = 1) -> str:
        """A compose string (already interpolated) as the native process must see it."""
        names = "|".join(re.escape(s) for s in sorted(self.services_yaml, key=len, reverse=True))

        def hostport(m: re.Match) -> str:
            host, port = m.group(1), int(m.group(2))
            svc = base if host == "localhost" else host
            return f"127.0.0.1:{self.port(svc, port, index)}"

        value = re.sub(rf"(?<![\w.-])(localhost|{names}):(\d+)", hostport, value)
        return self.path(value, instance)

    # --- services
    def compose_env(self, base: str) -> dict[str, str]:
        svc = self.services_yaml[base]
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {k: interpolate(str(v), self.env) for k, v in env.items()}

    def service_env(self, base: str, instance: str, index: int = 1) -> dict[str, str]:
        env = {k: v for k, v in dockerfile_env().items() if k not in IMAGE_ONLY_ENV}
        env.update(self.compose_env(base))
        env = {k: self.translate(v, base, instance, index) for k, v in env.items()}
        env.update(native_env(self, instance))
        return env

    def command(self, base: str, instance: str, index: int = 1) -> list[str]:
        svc = self.services_yaml[base]
        cmd = svc["command"]
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
        entry = svc.get("entrypoint")
        if entry:  # ["/usr/bin/tini", "--", "/usr/local/bin/streamrec-entrypoint", "bash", "-c"]
            entry = [str(a) for a in entry]
            assert entry[:3] == ["/usr/bin/tini", "--", "/usr/local/bin/streamrec-entrypoint"], entry
            argv = entry[3:] + argv
        argv = [self.translate(interpolate(a, self.env), base, instance, index) for a in argv]
        for i, a in enumerate(argv[:-1]):  # --host spark-master -> 127.0.0.1; --port 8080 -> the native port
            if a == "--host" and argv[i + 1] in self.services_yaml:
                argv[i + 1] = "127.0.0.1"
            if a in ("--port", "--webui-port") and argv[i + 1].isdigit():
                argv[i + 1] = str(self.port(base, int(argv[i + 1]), index))
        return [str(ENTRYPOINT), *argv, *native_args(self, base)]

    def healthcheck(self, base: str, instance: str, index: int = 1) -> tuple[list[str] | None, float]:
        hc = self.services_yaml[base].get("healthcheck")
        if not hc:
            return None, 10.0
        test = [str(t) for t in hc["test"]]
        kind, rest = test[0], test[1:]
        argv = ["bash", "-c", " ".join(rest)] if kind == "CMD-SHELL" else rest
        argv = [self.translate(interpolate(a, self.env), base, instance, index) for a in argv]
        interval = float(str(hc.get("interval", "10s")).rstrip("s"))
        return argv, interval

    def depends(self, base: str) -> list[str]:
        deps = list((self.services_yaml[base].get("depends_on") or {}).keys())
        out = []
        for d in deps:
            out += self.instances(d)
        if base in AIRFLOW or base in ("spark-worker", "spark-connect"):
            out.append("minio-init")  # natively the application user's keys come from moto (minio-init)
        return sorted(set(out))

    def instances(self, base: str) -> list[str]:
        if base == "spark-worker":
            return [f"spark-worker-{i}" for i in range(1, self.workers + 1)]
        return [base]

    def services(self) -> list[Service]:
        out: list[Service] = []
        e = self.env
        # postgres: Debian's server, initialised (cluster_launcher.init_postgres) from the same POSTGRES_* values
        pg = self.compose_env("postgres")
        pg_port = self.port("postgres", 5432)
        health, interval = self.healthcheck("postgres", "postgres")
        out.append(
            Service(
                "postgres",
                "postgres",
                [
                    pg_bin("postgres"),
                    "-D",
                    str(self.home / "postgres" / "data"),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-p",
                    str(pg_port),
                    "-k",
                    str(self.home / "postgres" / "run"),
                ],
                {
                    "PATH": "/usr/bin:/bin",
                    "LANG": "C.UTF-8",
                    **{k: v for k, v in pg.items() if k != "POSTGRES_PASSWORD"},
                },
                health=[*health, "-h", "127.0.0.1", "-p", str(pg_port)],
                interval=interval,
                user="nobody",
                stop_signal="SIGINT",  # fast shutdown (SIGTERM waits for every client to leave)
            )
        )
        # minio: the moto server (in memory) on the port compose publishes MinIO's API on
        out.append(
            Service(
                "minio",
                "minio",
                [
                    str(VENV / "bin" / "python"),
                    str(REPO / "scripts" / "cluster_moto.py"),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    e["MINIO_API_PORT"],
                ],
                {
                    "PATH": f"{VENV}/bin:/usr/bin:/bin",
                    "LANG": "C.UTF-8",
                    "HOME": os.environ.get("HOME", "/root"),
                },
                health=[
                    str(VENV / "bin" / "python"),
                    "-c",
                    f"import urllib.request as u; u.urlopen('http://127.0.0.1:{e['MINIO_API_PORT']}/moto-api/', timeout=4)",
                ],
                interval=5,
            )
        )
        out.append(
            Service("minio-init", "minio-init", [], {}, depends=["minio"], one_shot=True, restart=False)
        )
        for base in ("airflow-init", "spark-master", "spark-worker", "spark-connect", *AIRFLOW):
            for k, inst in enumerate(self.instances(base), start=1):
                health, interval = self.healthcheck(base, inst, k)
                out.append(
                    Service(
                        inst,
                        base,
                        self.command(base, inst, k),
                        self.service_env(base, inst, k),
                        health=health,
                        interval=interval,
                        depends=self.depends(base),
                        one_shot=base in ONE_SHOT,
                        restart=base not in ONE_SHOT,
                    )
                )
        return out

    def client_env(self) -> dict[str, str]:
        """The environment of a client on this machine (the demo, tests, benchmarks): the URLs of Airflow, the
        Spark master and the bucket, what a job submitted from here needs (as an Airflow task has it)."""
        env = self.service_env("airflow-scheduler", "client")
        env.update(
            {
                "AIRFLOW_URL": f"http://127.0.0.1:{self.port('airflow-apiserver', 8080)}",
                "AIRFLOW_ADMIN_USER": self.env.get("AIRFLOW_ADMIN_USER", "admin"),
                "AIRFLOW_PASSWORD_FILE": env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"],
                "SPARK_MASTER_URL": f"spark://127.0.0.1:{self.port('spark-master', 7077)}",
                "SPARK_MASTER_UI": f"http://127.0.0.1:{self.port('spark-master', 8080)}",
                "STREAMREC_CLUSTER_HOME": str(self.home),
            }
        )
        return env


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (Debian keeps them in /usr/lib/postgresql/<version>/bin)."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise FileNotFoundError(
        f"PostgreSQL's {name} is not installed: run scripts/setup.sh as root (it installs Debian's postgresql), "
        "or `apt-get install postgresql` (Debian/Ubuntu)"
    )


if __name__ == "__main__":  # debugging aid: print the native services (no secrets: env keys only)
    sys.path.insert(0, str(REPO))
    home = Path(os.environ.get("STREAMREC_CLUSTER_HOME") or REPO / "var" / "cluster")
    topo = Topology(home, {**NATIVE_DEFAULTS, **parse_env_file((home / "cluster.env").read_text())})
    for s in topo.services():
        print(s.name, shlex.join(s.argv)[:300], sorted(s.env)[:50], s.health, s.depends)

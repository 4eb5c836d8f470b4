"""deploy/k8s: the Helm values and the Spark manifests hold the same promises as the compose file.

No cluster and no Helm here, so these read the YAML: the image is ours at the tag docker-compose builds, the
versions are the locked ones, secrets arrive only by reference, the environment the DAGs read is set, the
service accounts the drivers use are the ones the Role is bound to, and the SparkApplication's arguments
are accepted by the job they are for.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.I)


def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def compose_image() -> str:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text(encoding="utf-8"))
    return compose["services"]["airflow-scheduler"]["image"]


def locked(name: str) -> str:
    m = re.search(
        rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.lock").read_text(encoding="utf-8"), re.M
    )
    assert m, name
    return m.group(1)


@pytest.fixture(scope="module")
def values() -> dict:
    return load_all("airflow-values.yaml")[0]


@pytest.mark.unit
def test_helm_values_run_our_image(values):
    tag = compose_image().split(":", 1)[1]
    assert values["images"]["airflow"]["tag"] == values["defaultAirflowTag"] == tag
    assert values["images"]["airflow"]["repository"] == values["defaultAirflowRepository"]
    assert values["images"]["airflow"]["repository"].endswith("/streamrec")
    assert values["airflowVersion"] == locked("apache-airflow")
    assert (values["uid"], values["gid"]) == (50000, 0)
    assert values["config"]["core"]["dags_folder"] == "/opt/streamrec/dags"
    assert values["dags"]["gitSync"]["enabled"] is False, "the DAGs are baked into the image"


@pytest.mark.unit
def test_helm_values_set_what_the_dags_read_and_no_secret(values):
    env = {e["name"]: e["value"] for e in values["env"]}
    for var in (
        "STREAMREC_BUCKET",
        "STREAMREC_HOME",
        "STREAMREC_PYTHON",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
    ):
        assert var in env, var
    assert env["STREAMREC_BUCKET"].startswith("s3://")
    assert env["SPARK_LOCAL_IP"] == "auto"
    assert env["STREAMREC_CHECKPOINT_DIR"].startswith("s3a://"), "executor pods share no disk with the driver"
    for name, value in env.items():
        assert not SECRET_NAME.search(name), f"{name} belongs in `secret:` (a Kubernetes Secret), not `env:`"
        assert "password" not in value.lower()
    by_ref = {s["envName"]: s for s in values["secret"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(by_ref)
    for name in ("metadataSecretName",):
        assert values["data"][name]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    assert "fernetKey" not in values and "apiSecretKey" not in values and "jwtSecret" not in values
    # the Spark connection: Kubernetes' own API server, client mode, image and account from SPARK_SUBMIT_OPTS
    conns = yaml.safe_load(values["extraSecrets"]["streamrec-airflow-connections"]["stringData"])

    conn = json.loads(conns["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["host"].startswith("k8s://https://") and conn["extra"]["deploy-mode"] == "client"
    assert "streamrec-airflow-connections" in values["extraEnvFrom"]
    opts = dict(o.split("=", 1) for o in env["SPARK_SUBMIT_OPTS"].split())
    assert opts["-Dspark.kubernetes.container.image"] == compose_image().replace(
        "streamrec:", "registry.example.com/streamrec:"
    )
    assert opts["-Dspark.kubernetes.namespace"] == conn["extra"]["namespace"]
    assert opts["-Dspark.kubernetes.authenticate.driver.serviceAccountName"] in bound_accounts()


def bound_accounts() -> set[str]:
    docs = load_all("spark-rbac.yaml")
    role = next(d for d in docs if d["kind"] == "Role")
    verbs = {v for r in role["rules"] if "pods" in r["resources"] for v in r["verbs"]}
    assert {"create", "delete", "watch", "list"} <= verbs
    assert any("configmaps" in r["resources"] for r in role["rules"]), "Spark creates an executor ConfigMap"
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    return {s["name"] for s in binding["subjects"]}


@pytest.mark.unit
def test_rbac_covers_airflow_task_pods_and_operator_drivers():
    accounts = bound_accounts()
    assert "streamrec-worker" in accounts, (
        "KubernetesExecutor task pods of release 'streamrec' run the drivers"
    )
    assert any(
        d["kind"] == "ServiceAccount" and d["metadata"]["name"] in accounts
        for d in load_all("spark-rbac.yaml")
    )


@pytest.mark.integration  # imports the job (pyspark, pandas): seconds, not milliseconds
def test_spark_application_runs_a_real_job_on_our_image():
    app = load_all("spark-application.yaml")[0]
    spec = app["spec"]
    assert spec["image"] == compose_image().replace("streamrec:", "registry.example.com/streamrec:")
    assert spec["sparkVersion"] == locked("pyspark")
    assert spec["sparkConf"]["spark.pyspark.python"] == "/opt/venv/bin/python"
    assert spec["driver"]["serviceAccount"] in bound_accounts()
    main = spec["mainApplicationFile"]
    assert main.startswith("local:///opt/streamrec/jobs/")
    job = REPO / main.removeprefix("local:///opt/streamrec/")
    assert job.is_file(), f"{main} is not a job of this repository"
    module_spec = importlib.util.spec_from_file_location(f"job_{job.stem}", job)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    args = module.parse(spec["arguments"])  # argparse exits (SystemExit) on an unknown or missing flag
    assert args.bucket.startswith("s3://")
    for pod in ("driver", "executor"):
        env = spec[pod].get("env", [])
        assert all(not SECRET_NAME.search(e["name"]) for e in env), f"{pod}: credentials only via envFrom"
        assert {"secretRef": {"name": "streamrec-s3"}} in spec[pod]["envFrom"]


@pytest.mark.unit
def test_no_secret_literal_in_any_manifest():
    for path in K8S.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?i)(password|secret_access_key)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{8,}", text), path
        assert "minioadmin" not in text

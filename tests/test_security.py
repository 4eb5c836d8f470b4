"""Security properties that can be checked here: keys never leave the bucket, every shipped configuration makes
the Airflow UI ask for a login. (Secrets never in task logs or reports: ``tests/test_corpus.py``'s DAG test; on the
cluster topology, never in the Spark master's, workers' and executors' logs either: ``tests/test_cluster.py``,
with the scan checked below.)
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamrec.core.schema import HALF_STAR
from streamrec.pipeline.contract import check_partition, list_incoming, quarantine
from streamrec.storage.bucket import Bucket, check_key

REPO = Path(__file__).resolve().parent.parent
GOOD = b"user,item,rating,timestamp\n1,10,4.0,1600000000\n"
ESCAPES = [
    "ratings/incoming/../../models/CURRENT",
    "../outside.csv",
    "ratings/../../outside.csv",
    "/etc/passwd",
    "/ratings/incoming/p.csv",
    "ratings/incoming/./p.csv",
    "ratings//incoming/p.csv",
    "ratings\\..\\..\\outside.csv",
    "ratings/incoming/p.csv\x00.txt",
    "",
]


# ----------------------------------------------------------------------------------------------------------------
# keys outside the bucket are refused
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("key", ESCAPES)
def test_check_key_refuses_escaping_and_absolute_keys(key) -> None:
    with pytest.raises(ValueError, match="bucket key"):
        check_key(key)


@pytest.mark.unit
@pytest.mark.parametrize("key", [k for k in ESCAPES if k])
def test_local_bucket_never_reads_or_writes_outside_its_root(tmp_path, key) -> None:
    root = tmp_path / "a" / "bucket"
    bucket = Bucket.from_uri(root)
    bucket.write_bytes("models/CURRENT", b'{"version": "v1"}')
    (tmp_path / "a" / "outside.csv").write_bytes(b"secret")
    before = sorted(p for p in tmp_path.rglob("*"))
    for op in (
        lambda: bucket.read_bytes(key),
        lambda: bucket.write_bytes(key, b"x"),
        lambda: bucket.exists(key),
        lambda: bucket.copy(key, "quarantine/x"),
        lambda: bucket.copy("models/CURRENT", key),
        lambda: bucket.delete(key),
        lambda: check_partition(bucket, key, HALF_STAR, 1795000000, build_docs=False),
    ):
        with pytest.raises(ValueError, match="bucket key"):
            op()
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a" / "outside.csv").read_bytes() == b"secret"
    assert bucket.read_bytes("models/CURRENT") == b'{"version": "v1"}'


@pytest.mark.unit
def test_a_symbolic_link_out_of_the_bucket_is_never_followed(tmp_path) -> None:
    """``incoming/evil.csv -> <outside>/secret.csv``: not listed, not checked, not copied into quarantine; a
    linked folder is neither."""
    secret = tmp_path / "secret.csv"
    secret.write_bytes(b"user,item,rating,timestamp\n1,10,4.0,1600000000\nTOP-SECRET\n")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "part-1.csv").write_bytes(GOOD)
    bucket = Bucket.from_uri(tmp_path / "bucket")
    bucket.write_bytes("ratings/incoming/good.csv", GOOD)
    incoming = tmp_path / "bucket" / "ratings" / "incoming"
    (incoming / "evil.csv").symlink_to(secret)
    (incoming / "evil-dir").symlink_to(tmp_path / "secret-dir", target_is_directory=True)
    (incoming / "inside.csv").symlink_to(incoming / "good.csv")  # a link within the bucket is an object
    assert [p.id for p in list_incoming(bucket)] == ["good", "inside"]
    with pytest.raises(ValueError, match="outside the bucket root"):
        bucket.read_bytes("ratings/incoming/evil.csv")
    with pytest.raises(ValueError, match="outside the bucket root"):
        check_partition(bucket, "ratings/incoming/evil.csv", HALF_STAR, 1795000000, build_docs=False)
    with pytest.raises(ValueError, match="outside the bucket root"):
        bucket.write_bytes("ratings/incoming/evil-dir/part-2.csv", b"x")
    assert not (tmp_path / "secret-dir" / "part-2.csv").exists()
    # the whole bucket, as the update DAG would see it: the secret never lands anywhere in it
    for part in list_incoming(bucket):
        c = check_partition(bucket, part, HALF_STAR, 1795000000, build_docs=False)
        if not c.ok:
            quarantine(bucket, part, c)
    for p in (tmp_path / "bucket").rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert b"TOP-SECRET" not in p.read_bytes(), p


@pytest.mark.integration
def test_s3_keys_with_dot_segments_are_never_read_or_written(s3_bucket_uri) -> None:
    """On S3 a key is opaque: ``ratings/incoming/../../models/CURRENT`` can exist as an object. It is not a
    partition (skipped with a warning), and nothing under ``models/`` is read or written because of it."""
    import boto3

    bucket = Bucket.from_uri(s3_bucket_uri)
    name = s3_bucket_uri.removeprefix("s3://")
    client = boto3.client("s3")
    client.put_object(Bucket=name, Key="ratings/incoming/../../models/CURRENT", Body=b'{"version": "evil"}')
    client.put_object(Bucket=name, Key="ratings/incoming/..", Body=GOOD)
    client.put_object(Bucket=name, Key="/ratings/incoming/abs.csv", Body=GOOD)
    bucket.write_bytes("ratings/incoming/good.csv", GOOD)
    parts = list_incoming(bucket)
    assert [p.id for p in parts] == ["good"]
    for key in ("ratings/incoming/../../models/CURRENT", "/ratings/incoming/abs.csv"):
        with pytest.raises(ValueError, match="bucket key"):
            bucket.read_bytes(key)
        with pytest.raises(ValueError, match="bucket key"):
            check_partition(bucket, key, HALF_STAR, 1795000000, build_docs=False)
    for part in parts:
        assert check_partition(bucket, part, HALF_STAR, 1795000000, build_docs=False).ok
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]}
    assert not any(k.startswith("models/") for k in keys), keys
    assert not bucket.exists("models/CURRENT")


# ----------------------------------------------------------------------------------------------------------------
# every configuration we ship requires a login for the Airflow UI
# ----------------------------------------------------------------------------------------------------------------
SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _assert_login(settings: dict[str, str], where: str) -> None:
    """``settings``: Airflow config as ``AIRFLOW__SECTION__KEY`` -> value."""
    flat = {k.upper(): v for k, v in settings.items()}
    assert flat.get("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE) == SIMPLE, where
    users = flat.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    assert re.fullmatch(
        r"[^:,\s]+:(admin|op|user|viewer)(,[^:,\s]+:(admin|op|user|viewer))*", users
    ) or re.match(r"\$\{AIRFLOW_ADMIN_USER:-admin\}:admin$", users), f"{where}: users {users!r}"
    assert flat.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False").lower() != "true", where


@pytest.mark.unit
def test_airflow_env_requires_a_login(tmp_path) -> None:
    """scripts/airflow-env (embedded stack, ``make demo``): what it exports, and what Airflow makes of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    out = subprocess.run(
        ["bash", "-c", "source scripts/airflow-env >/dev/null && env -0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=True,
    ).stdout.decode()
    exported = dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)
    settings = {k: v for k, v in exported.items() if k.startswith("AIRFLOW__")}
    _assert_login(settings, "scripts/airflow-env")
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" not in " ".join(settings), "the password is generated"
    text = (REPO / "scripts" / "airflow-env").read_text()
    assert "ALL_ADMINS" not in text
    assert len(exported["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64
    # what Airflow itself resolves from that environment
    get = subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.configuration import conf; "
            "print(conf.get('core', 'auth_manager')); "
            "print(conf.getboolean('core', 'simple_auth_manager_all_admins'))",
        ],
        env=exported,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert get.stdout.split() == [SIMPLE, "False"], get.stdout + get.stderr[-2000:]


@pytest.mark.unit
def test_docker_compose_requires_a_login() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text(encoding="utf-8"))
    assert "ALL_ADMINS" not in (REPO / "docker-compose.yaml").read_text(encoding="utf-8")
    checked = 0
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        if not any(k.startswith("AIRFLOW__") for k in env):
            continue
        _assert_login(env, f"docker-compose.yaml service {name}")
        assert env.get("AIRFLOW__CORE__AUTH_MANAGER") == SIMPLE, name
        checked += 1
    assert checked >= 1
    assert "airflow-apiserver" in compose["services"]


@pytest.mark.unit
def test_kubernetes_values_require_a_login() -> None:
    path = REPO / "deploy" / "k8s" / "airflow-values.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    core = values["config"]["core"]
    _assert_login({f"AIRFLOW__CORE__{k}": str(v) for k, v in core.items()}, str(path))
    assert "ALL_ADMINS" not in path.read_text(encoding="utf-8").upper()
    for e in values.get("env") or []:
        assert "ALL_ADMINS" not in e["name"].upper()


# ----------------------------------------------------------------------------------------------------------------
# keys a bucket cannot address are refused in the open: listed by the pipeline and on the index page
# ----------------------------------------------------------------------------------------------------------------
def _refused_keys_are_reported(bucket: Bucket, bad_key: str) -> None:
    from streamrec.pipeline import reports
    from streamrec.storage.store import ModelStore

    bucket.write_bytes("ratings/incoming/p-good.csv", GOOD)
    refused: list[str] = []
    assert [p.id for p in list_incoming(bucket, refused=refused)] == ["p-good"]
    assert refused == [bad_key]
    store = ModelStore(bucket)
    page = bucket.read_text(reports.write_index(bucket, store))
    assert "Refused object keys (1)" in page and f"<code>{html.escape(bad_key)}</code>" in page


@pytest.mark.unit
def test_a_local_name_with_a_backslash_is_refused_and_listed(tmp_path) -> None:
    bucket = Bucket.from_uri(tmp_path / "bucket")
    (tmp_path / "bucket" / "ratings" / "incoming").mkdir(parents=True)
    (tmp_path / "bucket" / "ratings" / "incoming" / "a\\b.csv").write_bytes(GOOD)
    _refused_keys_are_reported(bucket, "ratings/incoming/a\\b.csv")
    assert (tmp_path / "bucket" / "ratings" / "incoming" / "a\\b.csv").read_bytes() == GOOD


@pytest.mark.integration
def test_an_s3_key_with_dotdot_is_refused_listed_and_left_alone(s3_bucket_uri) -> None:
    import boto3

    bucket = Bucket.from_uri(s3_bucket_uri)
    name = s3_bucket_uri.removeprefix("s3://")
    bad = "ratings/incoming/../../models/CURRENT"
    boto3.client("s3").put_object(Bucket=name, Key=bad, Body=GOOD)
    _refused_keys_are_reported(bucket, bad)
    assert boto3.client("s3").get_object(Bucket=name, Key=bad)["Body"].read() == GOOD


# ----------------------------------------------------------------------------------------------------------------
# the cluster topology's logs (scripts/cluster-up): the scan tests/test_cluster.py runs on a real cluster
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_cluster_secret_scan_reads_spark_master_worker_and_executor_logs(tmp_path) -> None:
    """Every secret of the cluster (its env file: passwords, keys, the Spark secret; moto's keys) is looked for in
    every log: the services' (Spark master and workers included), Airflow's task logs, and each executor's stdout
    and stderr in the workers' work folders. A planted secret is found wherever it is; a clean home has none."""
    import json as _json

    sys.path.insert(0, str(REPO / "scripts"))
    import cluster_data as cd
    import cluster_services as cs

    home = tmp_path
    (home / "cluster.env").write_text(cs.render_env_file())
    (home / "state").mkdir()
    (home / "state" / "s3.json").write_text(
        _json.dumps({"app": {"id": "AKIAX", "secret": "moto-app-secret-123"}})
    )
    logs = {
        "master": home / "logs" / "spark-master.log",
        "worker": home / "logs" / "spark-worker-1.log",
        "executor": home / "spark-worker-2" / "work" / "app-20260101000000-0000" / "1" / "stderr",
        "task": home
        / "airflow"
        / "logs"
        / "dag_id=streamrec_update"
        / "run_id=r"
        / "task_id=update"
        / "attempt=1.log",
    }
    for path in logs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("INFO all quiet\n")
    assert cd.leaks(home) == []
    env = cs.parse_env_file((home / "cluster.env").read_text())
    planted = {
        "master": ("SPARK_AUTH_SECRET", env["SPARK_AUTH_SECRET"]),
        "worker": ("POSTGRES_PASSWORD", env["POSTGRES_PASSWORD"]),
        "executor": ("s3 app secret", "moto-app-secret-123"),
        "task": ("AIRFLOW_ADMIN_PASSWORD", env["AIRFLOW_ADMIN_PASSWORD"]),
    }
    for where, (_, value) in planted.items():
        logs[where].write_text(f"INFO oops {value}\n")
    assert sorted(cd.leaks(home)) == sorted((name, str(logs[w])) for w, (name, _) in planted.items())

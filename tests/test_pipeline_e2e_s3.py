"""The end-to-end scenario of ``tests/test_pipeline_e2e.py`` on ``s3://`` (a moto server on loopback): the
tasks reach the bucket with boto3, the Spark jobs with ``s3a://`` (``streamrec.launch.s3a``: the fetched hadoop-aws
jars, non-secret conf on the submit line, credentials in the job's environment).

The Airflow process gets **no** ``AWS_*`` variables: the endpoint and credentials come only from the
``aws_default`` connection (``AIRFLOW_CONN_AWS_DEFAULT``), which the DAGs' ``pre_execute`` hook turns into the
environment of each task and of its spark-submit. The secret is a fresh random value, and the run's logs (the
driver's output, which carries every task's log under ``dag.test()``, and anything under ``AIRFLOW_HOME/logs``)
must not contain it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from e2e_support import airflow_env, check_scenario, run_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
)


def test_bootstrap_then_three_partitions_on_s3(tmp_path, s3_bucket_uri, s3_endpoint, monkeypatch):
    from streamrec.launch import s3a
    from streamrec.storage.bucket import Bucket

    if s3a.configured_jars() is None:
        pytest.skip(f"no hadoop-aws jars ({s3a.describe()}); `make setup` fetches them")
    secret = "e2e-" + secrets.token_hex(16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any; this process reads with it too
    conn = {
        "conn_type": "aws",
        "login": "e2e-access-key",
        "password": secret,
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    empty = tmp_path / "aws-config"
    empty.write_text("")
    env = airflow_env(
        tmp_path / "airflow",
        s3_bucket_uri,
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn),
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
    )
    for var in AWS_VARS:
        env.pop(var, None)
    res, log = run_scenario(tmp_path, env, s3_bucket_uri)
    check_scenario(res, Bucket.from_uri(s3_bucket_uri))

    # Spark really went through s3a, configured from the connection, and the secret stayed out of every log
    assert "S3 settings from connection 'aws_default'" in log
    assert f"spark.hadoop.fs.s3a.endpoint={s3_endpoint}" in log, "the submit line (logged) names the endpoint"
    assert "s3a://" in log
    logs = [log] + [
        p.read_text(errors="replace") for p in Path(env["AIRFLOW_HOME"], "logs").rglob("*") if p.is_file()
    ]
    leaks = [i for i, text in enumerate(logs) if secret in text]
    assert not leaks, f"the AWS secret appears in {len(leaks)} log file(s)"

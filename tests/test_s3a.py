"""``streamrec.launch.s3a`` without a JVM: the conf it derives from the environment, which jars it picks, the fetch's
integrity checks, and the mapping of an Airflow AWS connection to environment variables."""

from __future__ import annotations

import io
import tarfile

import pytest

from streamrec.launch import s3a

pytestmark = pytest.mark.unit

SECRET = "very-secret-value-123"
TOKEN = "session-token-value-456"


def _fake_jars(folder, sizes=None):
    """Sparse files with the pinned names and sizes (what the cheap presence check looks at)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, size) in s3a.JARS.items():
        with open(folder / name, "wb") as f:
            f.truncate((sizes or {}).get(name, size))
    return folder


def test_moto_like_endpoint_gets_path_style_and_no_tls(tmp_path):
    env = {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-3"}
    conf = s3a.hadoop_conf(env, jars=["/x/hadoop-aws-3.3.1.jar"])
    assert conf["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["fs.s3a.path.style.access"] == "true"
    assert conf["fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["fs.s3a.endpoint.region"] == "eu-west-3"
    # the Hadoop 3.5 defaults that hadoop-aws 3.3.1 cannot parse, as plain numbers
    assert conf["fs.s3a.threads.keepalivetime"] == "60"
    assert conf["fs.s3a.connection.establish.timeout"] == "5000"
    assert conf["fs.s3a.connection.timeout"] == "200000"
    assert conf["fs.s3a.multipart.purge.age"] == "86400"
    assert "software.amazon" not in conf["fs.s3a.aws.credentials.provider"]


def test_https_endpoint_and_generic_variable():
    conf = s3a.hadoop_conf({"AWS_ENDPOINT_URL": "https://minio.example:9000"}, jars=[])
    assert conf["fs.s3a.endpoint"] == "https://minio.example:9000"
    assert conf["fs.s3a.connection.ssl.enabled"] == "true"
    # the S3-specific variable wins, as in streamrec.storage.bucket
    env = {"AWS_ENDPOINT_URL": "https://a.example", "AWS_ENDPOINT_URL_S3": "http://b.example"}
    assert s3a.hadoop_conf(env, jars=[])["fs.s3a.endpoint"] == "http://b.example"


def test_aws_itself_region_only_and_no_compat_for_matching_jars():
    conf = s3a.hadoop_conf({"AWS_REGION": "us-west-2"}, jars=[])
    assert conf == {"fs.s3a.endpoint": "s3.us-west-2.amazonaws.com", "fs.s3a.endpoint.region": "us-west-2"}
    assert s3a.hadoop_conf({}, jars=["/opt/spark/jars/hadoop-aws-3.5.0.jar"]) == {}


def test_spark_conf_never_carries_credentials(tmp_path):
    jars = _fake_jars(tmp_path / "jars")
    env = {
        "STREAMREC_S3A_JARS_DIR": str(jars),
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1234",
    }
    conf = s3a.spark_conf(env)
    assert conf["spark.jars"] == ",".join(str(jars / n) for n in s3a.JARS)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:1234"
    text = " ".join(f"{k}={v}" for k, v in conf.items()) + " ".join(s3a.submit_args(env))
    for value in (SECRET, TOKEN, "AKIAEXAMPLE"):
        assert value not in text
    assert not any(k.endswith((".access.key", ".secret.key", ".session.token")) for k in conf)


def test_which_jars(tmp_path):
    empty = {"STREAMREC_S3A_JARS_DIR": str(tmp_path / "none")}
    assert s3a.configured_jars(empty) is None
    assert s3a.spark_conf(empty, require=False) == {}
    with pytest.raises(s3a.S3AUnavailable, match="python -m streamrec.launch.s3a fetch"):
        s3a.spark_conf(empty)
    assert s3a.configured_jars({"STREAMREC_S3A_JARS": "provided"}) == []
    assert "spark.jars" not in s3a.spark_conf({"STREAMREC_S3A_JARS": "provided"})
    own = tmp_path / "hadoop-aws-3.5.0.jar"
    own.write_bytes(b"")
    assert s3a.configured_jars({"STREAMREC_S3A_JARS": f"{own}, "}) == [str(own)]
    with pytest.raises(s3a.S3AUnavailable, match="do not exist"):
        s3a.configured_jars({"STREAMREC_S3A_JARS": str(tmp_path / "missing.jar")})
    # a jar of the wrong size (a truncated download) does not count as fetched
    name = next(iter(s3a.JARS))
    bad = _fake_jars(tmp_path / "bad", sizes={name: 10})
    assert s3a.fetched_jars(bad) == []
    assert any("10 bytes" in p for p in s3a.verify_jars(bad))


def test_fetch_is_idempotent_and_refuses_an_unpinned_sdist(tmp_path, monkeypatch):
    jars = _fake_jars(tmp_path / "jars")
    monkeypatch.setattr(s3a, "_pip_download", lambda work: pytest.fail("must not download"))
    assert s3a.fetch(jars, quiet=True) == [jars / n for n in s3a.JARS]

    fake = tmp_path / "sagemaker_pyspark-1.4.5.tar.gz"
    with tarfile.open(fake, "w:gz") as tf:
        data = b"not the real jar"
        info = tarfile.TarInfo("sagemaker_pyspark-1.4.5/deps/jars/hadoop-aws-3.3.1.jar")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(RuntimeError, match="sha256 .* != pinned"):
        s3a.fetch(tmp_path / "other", sdist=fake)
    assert not (tmp_path / "other" / "hadoop-aws-3.3.1.jar").exists()


def test_env_from_airflow_connection():
    env = s3a.env_from_connection(
        "AKIAEXAMPLE",
        SECRET,
        {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1", "aws_session_token": TOKEN},
    )
    assert env == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    # the amazon provider's per-service endpoint, keys in extra; unset fields are left to the environment
    env = s3a.env_from_connection(
        None,
        None,
        {
            "aws_access_key_id": "K",
            "aws_secret_access_key": "S",
            "service_config": {"s3": {"endpoint_url": "E"}},
        },
    )
    assert env == {"AWS_ACCESS_KEY_ID": "K", "AWS_SECRET_ACCESS_KEY": "S", "AWS_ENDPOINT_URL_S3": "E"}
    assert s3a.env_from_connection(None, None, None) == {}


def test_uses_s3():
    assert s3a.uses_s3("s3://b/p") and s3a.uses_s3("x", "p-1=s3a://b/k")
    assert not s3a.uses_s3("/var/bucket", None)

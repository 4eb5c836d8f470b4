"""Spark's own S3 I/O (``s3a://``): the jars, and the Spark conf built from the environment only.

The model store and the bucket talk to S3 with boto3 (``streamrec.storage.bucket``); the Spark jobs read ratings and
read/write Parquet through Hadoop's ``s3a`` file system, which needs two jars Spark does not ship: ``hadoop-aws``
and the AWS SDK it was built against.

Where the jars come from
------------------------
Normally: ``hadoop-aws`` of Spark's own Hadoop version (pyspark 4.2 bundles Hadoop 3.5.0) and its AWS SDK v2
bundle, from Maven Central (the docker image does that at build time, see ``docs/S3.md``). Where Maven Central is
unreachable and only PyPI is, the one source found is the sdist of ``sagemaker-pyspark==1.4.5``, whose
``deps/jars/`` holds ``hadoop-aws-3.3.1.jar`` and ``aws-java-sdk-bundle-1.11.901.jar``. :func:`fetch` downloads
that sdist with pip (hash-pinned), extracts just those two jars (each hash-checked) into ``<venv>/s3a-jars/``;
``scripts/setup.sh`` calls it (``python -m streamrec.launch.s3a fetch``; skip with ``STREAMREC_S3A_FETCH=0``).

hadoop-aws 3.3.1 on Hadoop 3.5 is an unsupported mix. It works for what streamrec does (CSV and Parquet reads,
Parquet writes through Spark's default ``FileOutputCommitter``, i.e. rename = copy + delete on S3; tested
against moto in ``tests/test_s3a_spark.py`` and ``tests/test_pipeline_e2e_s3.py``) after overriding the Hadoop 3.5
defaults that 3.3.1 cannot parse: 3.5's ``core-default.xml`` writes durations with units (``60s``, ``24h``)
where 3.3.1 calls ``getInt``/``getLong`` and fails with ``NumberFormatException``, and it names AWS SDK v2
credential providers (``software.amazon.awssdk...``) that the v1 SDK bundle does not have. Hence
:data:`COMPAT_331` and :data:`PROVIDERS_V1`; with a matching ``hadoop-aws`` (``STREAMREC_S3A_JARS=provided`` or a
list of 3.5 jars) neither is applied.

Which jars (``STREAMREC_S3A_JARS``)
-----------------------------------
* unset: the two fetched jars in :func:`jars_dir` (``$STREAMREC_S3A_JARS_DIR``, default ``<sys.prefix>/s3a-jars``)
  if they are there; else s3a is unavailable and an ``s3://`` job fails with a message saying how to fetch them;
* ``provided``: ``hadoop-aws`` and its SDK are already on Spark's classpath (e.g. in ``$SPARK_HOME/jars`` of an
  image): no ``spark.jars``, no 3.3.1 overrides;
* a comma-separated list of jar paths: those (the 3.3.1 overrides apply if one is named ``hadoop-aws-3.3.*``).

How they reach the executors (``STREAMREC_S3A_SHARED_JARS``)
------------------------------------------------------------
By default as ``spark.jars``: the driver serves them and every executor copies them into its work folder (190 MB
per executor per application, on a cluster). With ``STREAMREC_S3A_SHARED_JARS=1`` the jars are at the same path
on every Spark node (one machine, as ``make cluster-up`` runs it, or a shared file system): they go on the
driver's and the executors' class paths (``spark.driver.extraClassPath``, ``spark.executor.extraClassPath``)
and nothing is copied.

Configuration from the environment only, secrets never in the conf
-----------------------------------------------------------------
The same variables as ``streamrec.storage.bucket``: endpoint ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (then
path-style access, and TLS from the endpoint's scheme), region ``AWS_DEFAULT_REGION`` / ``AWS_REGION``, and the
credentials ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``. :func:`spark_conf` returns
only non-secret settings: a ``--conf`` on a spark-submit line is logged (Airflow's ``SparkSubmitOperator`` logs
the whole command; its masking only covers keys containing "secret" or "password", not ``session.token``) and
shown in Spark's UI. The credentials reach s3a through the *environment* of the Spark driver: Spark copies
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` into the Hadoop configuration
(``fs.s3a.access.key``, ``fs.s3a.secret.key``, ``fs.s3a.session.token``; ``SparkHadoopUtil``), which goes to the
executors with the job, and the provider chain :data:`PROVIDERS_V1` (the 3.3.1 default chain, spelled out
because 3.5's default names v2 classes) reads them: session credentials first, then key + secret, then the SDK's
own environment provider, then the EC2/ECS instance role.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

SDIST_NAME = "sagemaker-pyspark"
SDIST_VERSION = "1.4.5"
SDIST_FILE = "sagemaker_pyspark-1.4.5.tar.gz"
SDIST_SHA256 = "05ca2d5081d7138ce29a8fb0a9cba077f28c825288ed07aed46a82e63c0bf1fb"
"""sha256 of the sdist on PyPI (181.5 MB), checked by pip (``--require-hashes``) and again here."""

JARS: dict[str, tuple[str, int]] = {
    "hadoop-aws-3.3.1.jar": ("6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e", 870_644),
    "aws-java-sdk-bundle-1.11.901.jar": (
        "b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead",
        192_321_266,
    ),
}
"""The two jars taken from the sdist's ``deps/jars/``: name -> (sha256, size in bytes)."""

COMPAT_331: dict[str, str] = {
    "fs.s3a.threads.keepalivetime": "60",  # 3.5 default "60s"; 3.3.1 getInt (seconds)
    "fs.s3a.connection.establish.timeout": "5000",  # "30s"; 3.3.1 getInt (ms)
    "fs.s3a.connection.timeout": "200000",  # "200s"; 3.3.1 getInt (ms)
    "fs.s3a.multipart.purge.age": "86400",  # "24h"; 3.3.1 getLong (seconds)
}
"""Hadoop 3.5 defaults that hadoop-aws 3.3.1 cannot parse (NumberFormatException), in 3.3.1's units."""

PROVIDERS_V1 = ",".join(
    [
        "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",  # fs.s3a.access/secret.key + session.token
        "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",  # fs.s3a.access.key + secret.key
        "com.amazonaws.auth.EnvironmentVariableCredentialsProvider",  # AWS_* of the JVM's own environment
        "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider",  # EC2/ECS instance role
    ]
)
"""hadoop-aws 3.3.1's default credential chain (AWS SDK v1 class names)."""

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ENV_VARS = (*CREDENTIAL_VARS, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")
"""Every variable this module (and ``streamrec.storage.bucket``) reads for S3."""


class S3AUnavailable(RuntimeError):
    """Spark cannot reach ``s3a://``: the hadoop-aws jars are neither fetched nor provided."""


# ----------------------------------------------------------------------------------------------------------------
# the jars
# ----------------------------------------------------------------------------------------------------------------
def jars_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where :func:`fetch` puts the jars: ``$STREAMREC_S3A_JARS_DIR``, default ``<sys.prefix>/s3a-jars``
    (``.venv/s3a-jars`` when run with the project's interpreter)."""
    env = os.environ if env is None else env
    return Path(env.get("STREAMREC_S3A_JARS_DIR") or Path(sys.prefix) / "s3a-jars")


def fetched_jars(folder: Path | None = None) -> list[Path]:
    """The fetched jars if both are there with their pinned sizes (no hashing: cheap), else ``[]``."""
    folder = folder or jars_dir()
    paths = [folder / name for name in JARS]
    ok = all(
        p.is_file() and p.stat().st_size == size for p, (_, size) in zip(paths, JARS.values(), strict=True)
    )
    return paths if ok else []


def verify_jars(folder: Path | None = None) -> list[str]:
    """Problems with the fetched jars (missing, wrong size or wrong sha256); empty when both are intact."""
    folder = folder or jars_dir()
    problems = []
    for name, (sha, size) in JARS.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != size:
            problems.append(f"{path} has {path.stat().st_size} bytes, expected {size}")
        elif _sha256(path) != sha:
            problems.append(f"{path} has the wrong sha256 (expected {sha})")
    return problems


def configured_jars(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The jars Spark needs for s3a: ``[]`` when provided by the classpath, ``None`` when s3a is unavailable.

    See the module docstring (``STREAMREC_S3A_JARS``)."""
    env = os.environ if env is None else env
    setting = (env.get("STREAMREC_S3A_JARS") or "").strip()
    if setting.lower() == "provided":
        return []
    if setting:
        jars = [j.strip() for j in setting.split(",") if j.strip()]
        missing = [j for j in jars if "://" not in j and not Path(j).is_file()]
        if missing:
            raise S3AUnavailable(f"STREAMREC_S3A_JARS names jars that do not exist: {missing}")
        return jars
    found = fetched_jars(jars_dir(env))
    return [str(p) for p in found] if found else None


def needs_compat(jars: list[str]) -> bool:
    """True when the jars are the 3.3.1 mix (its conf overrides and v1 providers are needed)."""
    return any(Path(urlparse(j).path if "://" in j else j).name.startswith("hadoop-aws-3.3.") for j in jars)


def fetch(dest: Path | None = None, sdist: Path | None = None, quiet: bool = False) -> list[Path]:
    """Put the two jars into ``dest`` (default :func:`jars_dir`); idempotent, returns their paths.

    ``quiet``: say nothing when they are already there (a download is always announced).

    Already there with the pinned sizes: nothing is downloaded. Otherwise the sdist (``sdist``, or
    ``$STREAMREC_S3A_SDIST``, or downloaded by ``pip download --no-deps --no-binary :all: --require-hashes``
    from the configured index, i.e. PyPI) is checked against :data:`SDIST_SHA256`, the two members are extracted
    (nothing else; no code from the sdist is run by us), each jar is checked against :data:`JARS`, and moved into
    place atomically.
    """
    dest = dest or jars_dir()

    def say(*a: object) -> None:
        print("s3a:", *a, flush=True)

    if fetched_jars(dest):
        if not quiet:
            say(f"jars present in {dest}")
        return fetched_jars(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
        work = Path(tmp)
        src = sdist or (
            Path(os.environ["STREAMREC_S3A_SDIST"]) if os.environ.get("STREAMREC_S3A_SDIST") else None
        )
        if src is None:
            say(f"downloading {SDIST_NAME}=={SDIST_VERSION} from PyPI (181 MB, once) for its hadoop-aws jars")
            src = _pip_download(work)
        digest = _sha256(src)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{src}: sha256 {digest} != pinned {SDIST_SHA256}; refusing to use it")
        with tarfile.open(src, "r:gz") as tf:
            members = {
                Path(m.name).name: m for m in tf.getmembers() if "/deps/jars/" in m.name and m.isfile()
            }
            for name, (sha, _size) in JARS.items():
                if name not in members:
                    raise RuntimeError(f"{src} has no deps/jars/{name}")
                part = work / name
                with tf.extractfile(members[name]) as fin, open(part, "wb") as fout:  # type: ignore[union-attr]
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if _sha256(part) != sha:
                    raise RuntimeError(f"{name} extracted from {src} has the wrong sha256 (expected {sha})")
        for name in JARS:
            os.replace(work / name, dest / name)
    say(f"jars ready in {dest}: {', '.join(JARS)}")
    return fetched_jars(dest)


def _pip_download(work: Path) -> Path:
    req = work / "requirements.txt"
    req.write_text(f"{SDIST_NAME}=={SDIST_VERSION} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
    cmd += ["-q", "-r", str(req), "-d", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of {SDIST_NAME}=={SDIST_VERSION} failed:\n{proc.stderr[-2000:]}")
    path = work / SDIST_FILE
    if not path.is_file():
        raise RuntimeError(f"pip download did not produce {path}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# the conf
# ----------------------------------------------------------------------------------------------------------------
def endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as ``streamrec.storage.s3client.s3_endpoint``), None for AWS."""
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def region(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None


def hadoop_conf(env: Mapping[str, str] | None = None, jars: list[str] | None = None) -> dict[str, str]:
    """The ``fs.s3a.*`` settings for this environment (no secret among them).

    ``jars`` are the jars in use (:func:`configured_jars`); with the 3.3.1 mix the compatibility overrides and
    the v1 credential chain are added.
    """
    env = os.environ if env is None else env
    conf: dict[str, str] = {}
    if jars is not None and needs_compat(jars):
        conf.update(COMPAT_331)
        conf["fs.s3a.aws.credentials.provider"] = PROVIDERS_V1
    url = endpoint(env)
    reg = region(env)
    if url:
        parsed = urlparse(url if "://" in url else f"https://{url}")
        conf["fs.s3a.endpoint"] = url
        conf["fs.s3a.path.style.access"] = "true"
        conf["fs.s3a.connection.ssl.enabled"] = "true" if parsed.scheme == "https" else "false"
    elif reg:
        conf["fs.s3a.endpoint"] = f"s3.{reg}.amazonaws.com"
    if reg:
        conf["fs.s3a.endpoint.region"] = reg
    return conf


def spark_conf(env: Mapping[str, str] | None = None, *, require: bool = True) -> dict[str, str]:
    """The Spark conf for ``s3a://``: ``spark.jars`` (unless provided; class paths with
    ``STREAMREC_S3A_SHARED_JARS=1``) and ``spark.hadoop.fs.s3a.*``.

    Non-secret only: safe on a spark-submit line. Raises :class:`S3AUnavailable` when the jars are missing
    (``require=False``: returns ``{}`` instead).
    """
    jars = configured_jars(env)
    if jars is None:
        if not require:
            return {}
        raise S3AUnavailable(
            f"Spark cannot read s3a:// here: no hadoop-aws jars in {jars_dir(env)}. Run "
            "`python -m streamrec.launch.s3a fetch` (scripts/setup.sh does it), or set STREAMREC_S3A_JARS to the "
            "jars (or to 'provided' if they are on Spark's classpath). See docs/S3.md."
        )
    conf = {f"spark.hadoop.{k}": v for k, v in hadoop_conf(env, jars).items()}
    if jars and (env if env is not None else os.environ).get("STREAMREC_S3A_SHARED_JARS") == "1":
        conf["spark.driver.extraClassPath"] = conf["spark.executor.extraClassPath"] = os.pathsep.join(jars)
    elif jars:
        conf["spark.jars"] = ",".join(jars)
    return conf


def submit_args(env: Mapping[str, str] | None = None) -> list[str]:
    """``--jars ... --conf k=v ...`` for a hand-written spark-submit line (no secret)."""
    conf = spark_conf(env)
    args: list[str] = []
    jars = conf.pop("spark.jars", None)
    if jars:
        args += ["--jars", jars]
    for k, v in sorted(conf.items()):
        args += ["--conf", f"{k}={v}"]
    return args


def uses_s3(*uris: object) -> bool:
    """True when any argument is (or contains) an ``s3://`` / ``s3a://`` URI."""
    return any(("s3://" in str(u) or "s3a://" in str(u)) for u in uris if u is not None)


def env_from_connection(login: str | None, password: str | None, extra: Mapping | None) -> dict[str, str]:
    """The ``AWS_*`` variables described by an Airflow AWS connection's fields (no Airflow import here).

    ``login`` / ``password``: access key id / secret (or ``extra`` ``aws_access_key_id`` /
    ``aws_secret_access_key``), ``extra``: ``aws_session_token``, ``endpoint_url`` (also the amazon provider's
    ``service_config.s3.endpoint_url``), ``region_name``. Only what is set is returned.
    """
    extra = dict(extra or {})
    s3_service = ((extra.get("service_config") or {}).get("s3") or {}) if isinstance(extra, dict) else {}
    values = {
        "AWS_ACCESS_KEY_ID": login or extra.get("aws_access_key_id"),
        "AWS_SECRET_ACCESS_KEY": password or extra.get("aws_secret_access_key"),
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
        "AWS_ENDPOINT_URL_S3": s3_service.get("endpoint_url") or extra.get("endpoint_url"),
        "AWS_DEFAULT_REGION": extra.get("region_name"),
    }
    return {k: str(v) for k, v in values.items() if v}


def describe(env: Mapping[str, str] | None = None) -> str:
    """One line saying how Spark would reach S3 here (for the doctor; no secret)."""
    try:
        jars = configured_jars(env)
    except S3AUnavailable as exc:
        return f"unavailable: {exc}"
    if jars is None:
        return (
            f"unavailable: no hadoop-aws jars in {jars_dir(env)} (run `python -m streamrec.launch.s3a fetch`)"
        )
    if not jars:
        return "hadoop-aws provided by Spark's classpath (STREAMREC_S3A_JARS=provided)"
    mix = " (hadoop-aws 3.3.1 on Hadoop 3.5: compatibility overrides on)" if needs_compat(jars) else ""
    return f"jars {', '.join(Path(j).name for j in jars)}{mix}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamrec.launch.s3a", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the sdist and extract the two jars (idempotent)")
    f.add_argument("--dest", type=Path, help=f"target folder (default {jars_dir()})")
    f.add_argument("--sdist", type=Path, help=f"use this {SDIST_FILE} instead of downloading it")
    f.add_argument("--quiet", action="store_true", help="say nothing when the jars are already there")
    sub.add_parser("verify", help="check the fetched jars' sha256")
    sub.add_parser("submit-args", help="print the --jars/--conf arguments for spark-submit (no secret)")
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        fetch(args.dest, args.sdist, args.quiet)
    elif args.cmd == "verify":
        problems = verify_jars()
        for p in problems:
            print(f"s3a: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"s3a: jars ok in {jars_dir()}")
    else:
        import shlex

        print(shlex.join(submit_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Driver JVM options (``streamrec.launch.jvm``): which flags a driver gets, and that a real session started with them."""

from __future__ import annotations

import pytest

from streamrec.launch import jvm


@pytest.fixture
def cds_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_CDS_DIR", str(tmp_path))
    monkeypatch.delenv("STREAMREC_DRIVER_JAVA_OPTIONS", raising=False)
    monkeypatch.delenv("STREAMREC_CDS_RECORD", raising=False)
    return tmp_path


@pytest.mark.unit
def test_archive_is_used_only_when_it_exists(cds_dir):
    opts = jvm.driver_java_options()
    assert opts.split() == ["-Xss16m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    archive = jvm.archive_path()
    assert archive.parent == cds_dir
    archive.write_bytes(b"x")
    assert jvm.driver_java_options().endswith(f"-XX:SharedArchiveFile={archive}")


@pytest.mark.unit
def test_one_archive_per_class_path(cds_dir):
    plain, with_jars = jvm.archive_path(""), jvm.archive_path("/opt/jars/hadoop-aws.jar")
    assert plain != with_jars
    with_jars.write_bytes(b"x")
    assert "SharedArchiveFile" not in jvm.driver_java_options("")
    assert str(with_jars) in jvm.driver_java_options("/opt/jars/hadoop-aws.jar")


@pytest.mark.unit
def test_recording_and_override(cds_dir, monkeypatch):
    jvm.archive_path().write_bytes(b"x")
    monkeypatch.setenv("STREAMREC_CDS_RECORD", str(cds_dir / "new.jsa"))
    assert jvm.driver_java_options().endswith(f"-XX:ArchiveClassesAtExit={cds_dir / 'new.jsa'}")
    monkeypatch.setenv("STREAMREC_DRIVER_JAVA_OPTIONS", "-Xss32m")
    assert jvm.driver_java_options() == "-Xss32m"


@pytest.mark.spark
def test_the_session_jvm_runs_with_the_options(spark):
    args = list(
        spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    )
    assert "-Xss16m" in args and "-XX:TieredStopAtLevel=1" in args and "-XX:+UseSerialGC" in args, args

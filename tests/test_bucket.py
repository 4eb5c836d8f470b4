"""One test suite, run against a local folder and a real S3 server (moto_server), with and without a prefix."""

from __future__ import annotations

import logging
import os
import time

import pytest

from streamrec.storage.bucket import Bucket, LocalBucket, ObjectInfo, S3Bucket, check_key
from streamrec.storage.s3client import make_s3_client


@pytest.fixture(
    params=[
        pytest.param("local", marks=pytest.mark.unit),
        pytest.param("s3", marks=pytest.mark.integration),
        pytest.param("s3-prefix", marks=pytest.mark.integration),
    ]
)
def bucket(request, tmp_path) -> Bucket:
    """The bucket under test; S3 listings use 2 keys per page so every listing test also exercises pagination."""
    if request.param == "local":
        return Bucket.from_uri(tmp_path / "root")
    uri = request.getfixturevalue("s3_bucket_uri")
    if request.param == "s3-prefix":
        uri += "/some/prefix/"
    return Bucket.from_uri(uri, page_size=2)


def _fill(bucket: Bucket, keys: list[str]) -> None:
    for k in keys:
        bucket.write_bytes(k, k.encode())


KEYS = ["b/2.txt", "a/1.txt", "a/sub/3.txt", "ab.txt", "a/x.txt", "a/sub/deeper/4.txt", "c.txt"]


# --- reading and writing ---------------------------------------------------------------------------------------
def test_write_read_roundtrip_and_overwrite(bucket: Bucket) -> None:
    bucket.write_bytes("x/y/données é.bin", b"\x00\x01first")
    assert bucket.read_bytes("x/y/données é.bin") == b"\x00\x01first"
    bucket.write_bytes("x/y/données é.bin", b"second")
    assert bucket.read_bytes("x/y/données é.bin") == b"second"
    bucket.write_bytes("empty", b"")
    assert bucket.read_bytes("empty") == b""
    assert bucket.read_text("x/y/données é.bin") == "second"


def test_read_missing_raises_file_not_found(bucket: Bucket) -> None:
    with pytest.raises(FileNotFoundError, match="nope/missing.txt"):
        bucket.read_bytes("nope/missing.txt")
    bucket.write_bytes("folder/file", b"1")
    with pytest.raises(FileNotFoundError):
        bucket.read_bytes("folder")


def test_exists_is_about_objects_not_folders(bucket: Bucket) -> None:
    assert not bucket.exists("a/1.txt")
    bucket.write_bytes("a/1.txt", b"1")
    assert bucket.exists("a/1.txt")
    assert not bucket.exists("a")
    assert not bucket.exists("a/1.tx")


def test_json_roundtrip_and_strictness(bucket: Bucket) -> None:
    doc = {"version": "v1", "metrics": {"rmse": 0.8731234567891234}, "list": [1, 2, 3], "text": "é"}
    bucket.write_json("models/CURRENT", doc)
    assert bucket.read_json("models/CURRENT") == doc
    with pytest.raises(ValueError):
        bucket.write_json("bad.json", {"x": float("nan")})
    assert not bucket.exists("bad.json")


# --- listing ---------------------------------------------------------------------------------------------------
def test_list_recursive_sorted_with_sizes_and_mtimes(bucket: Bucket) -> None:
    before = time.time()
    _fill(bucket, KEYS)
    listing = bucket.list()
    assert [o.key for o in listing] == sorted(KEYS)
    assert all(isinstance(o, ObjectInfo) and o.size == len(o.key.encode()) for o in listing)
    assert all(o.mtime is not None and before - 120 <= o.mtime <= time.time() + 120 for o in listing)


def test_list_prefix_is_a_folder(bucket: Bucket) -> None:
    _fill(bucket, KEYS)
    expected = ["a/1.txt", "a/sub/3.txt", "a/sub/deeper/4.txt", "a/x.txt"]  # never "ab.txt"
    assert [o.key for o in bucket.list("a")] == expected
    assert [o.key for o in bucket.list("a/")] == expected
    assert [o.key for o in bucket.list("a/sub")] == ["a/sub/3.txt", "a/sub/deeper/4.txt"]
    assert bucket.list("zzz") == []
    assert bucket.list("c.txt") == []  # an object is not a folder


def test_list_non_recursive_shows_objects_and_subfolders(bucket: Bucket) -> None:
    _fill(bucket, KEYS)
    top = bucket.list("", recursive=False)
    assert [o.key for o in top] == ["a/", "ab.txt", "b/", "c.txt"]
    assert [o.is_folder for o in top] == [True, False, True, False]
    assert top[0].size == 0 and top[0].mtime is None
    assert [o.key for o in bucket.list("a", recursive=False)] == ["a/1.txt", "a/sub/", "a/x.txt"]


@pytest.mark.integration
def test_s3_listing_paginates(s3_bucket_uri: str) -> None:
    # A private client: event handlers registered here must not leak into the shared one.
    bucket = S3Bucket(s3_bucket_uri.removeprefix("s3://"), page_size=3, client=make_s3_client())
    keys = [f"p/{i:02d}" for i in range(10)]
    _fill(bucket, keys)
    calls: list[str] = []
    bucket.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    assert [o.key for o in bucket.list("p")] == keys
    assert len(calls) == 4  # 3 + 3 + 3 + 1
    calls.clear()
    assert bucket.delete_prefix("p") == 10
    assert bucket.list() == []


# --- copy and delete -------------------------------------------------------------------------------------------
def test_copy(bucket: Bucket) -> None:
    bucket.write_bytes("src/a.bin", b"payload")
    bucket.copy("src/a.bin", "dst/deep/b.bin")
    assert bucket.read_bytes("dst/deep/b.bin") == b"payload"
    assert bucket.read_bytes("src/a.bin") == b"payload"
    with pytest.raises(FileNotFoundError):
        bucket.copy("src/missing", "dst/c.bin")
    assert not bucket.exists("dst/c.bin")


def test_delete_is_idempotent(bucket: Bucket) -> None:
    bucket.write_bytes("a/1.txt", b"1")
    bucket.delete("a/1.txt")
    assert not bucket.exists("a/1.txt")
    bucket.delete("a/1.txt")
    bucket.delete("never/was")
    bucket.write_bytes("f/inner", b"x")
    bucket.delete("f")  # a folder is not an object: no-op
    assert bucket.exists("f/inner")


def test_delete_prefix_removes_exactly_the_folder(bucket: Bucket) -> None:
    _fill(bucket, KEYS)
    assert bucket.delete_prefix("a") == 4
    assert [o.key for o in bucket.list()] == ["ab.txt", "b/2.txt", "c.txt"]
    assert bucket.delete_prefix("a") == 0
    assert bucket.delete_prefix("") == 3
    assert bucket.list() == []
    bucket.write_bytes("again", b"1")  # the root still works after being emptied
    assert bucket.exists("again")


# --- keys that could escape the root ---------------------------------------------------------------------------
BAD_KEYS = ["../x", "a/../../x", "a/..", "..", "/abs/key", "/", "a//b", "./a", "a/./b", "a\\b", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_escaping_the_root_are_refused(bucket: Bucket, key: str) -> None:
    calls = [
        lambda: bucket.read_bytes(key),
        lambda: bucket.write_bytes(key, b"x"),
        lambda: bucket.exists(key),
        lambda: bucket.list(key),
        lambda: bucket.copy(key, "ok"),
        lambda: bucket.copy("ok", key),
        lambda: bucket.delete(key),
        lambda: bucket.delete_prefix(key),
        lambda: bucket.uri(key),
        lambda: bucket.spark_uri(key),
        lambda: bucket.read_json(key),
        lambda: bucket.write_json(key, {}),
    ]
    bucket.write_bytes("ok", b"1")
    for call in calls:
        with pytest.raises(ValueError, match="bucket key") as err:
            call()
        assert repr(key) in str(err.value)
    assert [o.key for o in bucket.list()] == ["ok"]


def test_empty_key_refused_but_empty_prefix_is_root() -> None:
    with pytest.raises(ValueError, match="empty"):
        check_key("")
    assert check_key("", prefix=True) == ""
    assert check_key("a/b/", prefix=True) == "a/b"
    with pytest.raises(ValueError):
        check_key("a/b/")  # an object key cannot end with "/"


# --- URIs ------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_from_uri_dispatch(tmp_path) -> None:
    local = Bucket.from_uri(str(tmp_path))
    assert isinstance(local, LocalBucket) and local.root == tmp_path
    assert Bucket.from_uri(f"file://{tmp_path}") == local
    assert Bucket.from_uri(tmp_path) == local
    assert Bucket.from_uri(local) is local
    s3 = Bucket.from_uri("s3://my-bucket/some/prefix/")
    assert isinstance(s3, S3Bucket) and (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix")
    assert Bucket.from_uri("s3a://my-bucket") == S3Bucket("my-bucket")
    for bad in ("http://example.com/x", "gs://b/x", "s3://", "s3://b/../x"):
        with pytest.raises(ValueError):
            Bucket.from_uri(bad)


@pytest.mark.unit
def test_uris(tmp_path) -> None:
    local = LocalBucket(tmp_path)
    assert local.uri("a/b.parquet") == str(tmp_path / "a" / "b.parquet")
    assert local.spark_uri("a/b") == str(tmp_path / "a" / "b") and os.path.isabs(local.spark_uri("a/b"))
    assert local.uri() == str(tmp_path)
    s3 = S3Bucket("bkt", "pre/fix")
    assert s3.uri("a/b.parquet") == "s3://bkt/pre/fix/a/b.parquet"
    assert s3.spark_uri("models/versions/v1/users") == "s3a://bkt/pre/fix/models/versions/v1/users"
    assert s3.uri() == "s3://bkt/pre/fix"
    assert S3Bucket("bkt").uri("k") == "s3://bkt/k" and S3Bucket("bkt").spark_uri() == "s3a://bkt"


# --- atomicity -------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_local_write_is_atomic(tmp_path, monkeypatch) -> None:
    bucket = LocalBucket(tmp_path)
    bucket.write_bytes("models/CURRENT", b"old")

    def boom(src, dst):  # the rename never happens: the crash window of a non-atomic writer
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        bucket.write_bytes("models/CURRENT", b"new content")
    monkeypatch.undo()
    assert bucket.read_bytes("models/CURRENT") == b"old"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["CURRENT"]  # no temp file left behind


@pytest.mark.unit
def test_local_temp_files_are_invisible_and_permissions_normal(tmp_path) -> None:
    bucket = LocalBucket(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".streamrec-tmp-x.123").write_bytes(b"half")  # a writer in progress
    bucket.write_bytes("d/real", b"1")
    assert [o.key for o in bucket.list()] == ["d/real"]
    assert [o.key for o in bucket.list("d", recursive=False)] == ["d/real"]
    mode = (tmp_path / "d" / "real").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


@pytest.mark.integration
def test_s3_write_is_one_put(s3_bucket_uri: str) -> None:
    bucket = S3Bucket(s3_bucket_uri.removeprefix("s3://"), client=make_s3_client())
    ops: list[str] = []
    bucket.client.meta.events.register("before-call.s3", lambda model, **kw: ops.append(model.name))
    bucket.write_bytes("models/CURRENT", b'{"version": "v1"}')
    bucket.write_json("models/CURRENT", {"version": "v2"})
    assert ops == ["PutObject", "PutObject"]


@pytest.mark.integration
def test_s3_prefix_isolation(s3_bucket_uri: str) -> None:
    whole = Bucket.from_uri(s3_bucket_uri)
    inner = Bucket.from_uri(s3_bucket_uri + "/team/a")
    whole.write_bytes("team/ab/outside", b"1")  # shares the string prefix "team/a" but not the folder
    whole.write_bytes("elsewhere", b"1")
    inner.write_bytes("inside", b"2")
    assert [o.key for o in inner.list()] == ["inside"]
    assert [o.key for o in whole.list()] == ["elsewhere", "team/a/inside", "team/ab/outside"]
    assert inner.delete_prefix("") == 1
    assert [o.key for o in whole.list()] == ["elsewhere", "team/ab/outside"]


@pytest.mark.integration
def test_s3_never_logs_secrets(s3_bucket_uri: str, caplog) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    caplog.set_level(logging.DEBUG)
    bucket = S3Bucket(s3_bucket_uri.removeprefix("s3://"))
    bucket.write_bytes("k", b"v")
    bucket.read_bytes("k")
    bucket.list()
    text = caplog.text + repr(bucket) + str(bucket.__dict__.get("prefix"))
    assert secret not in text
    assert os.environ["AWS_ACCESS_KEY_ID"] not in repr(bucket)

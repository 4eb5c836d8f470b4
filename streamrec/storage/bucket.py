"""One object interface over a local folder and ``s3://`` (boto3).

``Bucket.from_uri(uri)`` returns a :class:`LocalBucket` for a path or a ``file://`` URI and an :class:`S3Bucket`
for ``s3://bucket[/prefix]`` (``s3a://`` is accepted as a synonym). Every method takes *keys*: ``/``-separated
paths relative to the bucket root. Keys that are absolute or could escape the root (a leading ``/``, ``..`` or
``.`` segments, empty segments, backslashes, NUL) are refused with a ``ValueError`` naming the key. In a local
folder, a key that resolves outside the root through a symbolic link is refused the same way, and ``list`` skips
such links (with a warning), so a link dropped into ``incoming/`` can never make a job read or copy a file from
outside the bucket.

Semantics shared by both implementations (the test suite runs against both):

* ``read_bytes`` of a missing key raises ``FileNotFoundError``.
* ``write_bytes`` is atomic: readers see the old object or the new one, never a torn one (local: a temporary file
  in the same folder, then ``os.replace``; S3: one ``PUT``).
* ``list(prefix)`` treats the prefix as a *folder*: ``"a/b"`` and ``"a/b/"`` both mean "everything under
  ``a/b/``" and never match ``a/bc``. ``recursive=False`` returns the objects directly in that folder plus one
  entry per sub-folder (its key ends with ``/``, ``size`` 0, ``mtime`` None). Results are sorted by key.
* ``delete`` of a missing key is a no-op; ``delete_prefix`` uses the same folder semantics as ``list``.

S3 configuration comes only from the environment: the standard AWS credential chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, profiles, instance roles ...), the region from ``AWS_DEFAULT_REGION`` / ``AWS_REGION``
and, for MinIO or moto, an endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (path-style addressing is
then used). Credentials are never logged or shown in ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from streamrec.storage.s3client import is_not_found, shared_s3_client

log = logging.getLogger(__name__)

_TMP_MARKER = ".streamrec-tmp-"
"""Name prefix of the temporary files of an atomic local write (hidden from listings)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: ``key`` relative to the bucket root, ``size`` in bytes, ``mtime`` in epoch seconds.

    In a non-recursive listing, a sub-folder appears as a key ending with ``/`` with ``size`` 0 and ``mtime`` None.
    """

    key: str
    size: int
    mtime: float | None

    @property
    def is_folder(self) -> bool:
        """True for the sub-folder entries of a non-recursive listing."""
        return self.key.endswith("/")


def check_key(key: str, *, prefix: bool = False) -> str:
    """Validate a key (or, with ``prefix=True``, a folder prefix) and return its normal form.

    A key is non-empty, relative, ``/``-separated, with no empty, ``.`` or ``..`` segments, no backslash and no
    NUL. A prefix may also be empty (the root) and may end with ``/``; it is returned without the trailing ``/``.
    """
    if not isinstance(key, str):
        raise ValueError(f"bucket key must be a string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"bucket key must be relative to the bucket root, not absolute: {key!r}")
    body = key[:-1] if prefix and key.endswith("/") else key
    if body == "":
        if prefix:
            return ""
        raise ValueError(f"bucket key must not be empty: {key!r}")
    if "\\" in body or "\x00" in body:
        raise ValueError(f"bucket key must not contain a backslash or NUL: {key!r}")
    for segment in body.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(
                f"bucket key must not contain empty, '.' or '..' segments (it could escape the root): {key!r}"
            )
    return body


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix and key else prefix or key


class Bucket(ABC):
    """A root (a local folder or an S3 bucket/prefix) holding objects addressed by relative keys."""

    @staticmethod
    def from_uri(uri: str | os.PathLike[str] | Bucket, *, page_size: int | None = None) -> Bucket:
        """``LocalBucket`` for a path or ``file://`` URI, ``S3Bucket`` for ``s3://`` / ``s3a://bucket[/prefix]``.

        A ``Bucket`` is returned as is. ``page_size`` (S3 only) caps the keys per listing request.
        """
        if isinstance(uri, Bucket):
            return uri
        text = os.fspath(uri)
        parsed = urlparse(text)
        scheme = parsed.scheme.lower()
        if scheme in ("s3", "s3a", "s3n"):
            if not parsed.netloc:
                raise ValueError(f"S3 URI needs a bucket name: {text!r}")
            return S3Bucket(parsed.netloc, parsed.path, page_size=page_size or 1000)
        if scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"file:// URI with a remote host is not supported: {text!r}")
            return LocalBucket(unquote(parsed.path))
        if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # plain path (or a Windows drive letter)
            return LocalBucket(text)
        raise ValueError(
            f"unsupported bucket URI scheme {scheme!r} in {text!r} (use a path, file:// or s3://)"
        )

    # --- the primitives each implementation provides -------------------------------------------------------
    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's content; ``FileNotFoundError`` when it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace the object atomically."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when an object (not a folder) exists at ``key``."""

    @abstractmethod
    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        """Objects under the folder ``prefix``, sorted by key (see the module docstring)."""

    @abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Copy one object; ``FileNotFoundError`` when ``src`` does not exist. The write of ``dst`` is atomic."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object (no-op when there is no object at ``key``; a folder is not an object)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the folder ``prefix``; return how many were deleted."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """The location a human, pandas or pyarrow would use (a local path, or ``s3://bucket/prefix/key``)."""

    @abstractmethod
    def spark_uri(self, key: str = "") -> str:
        """The location Spark should use (a local absolute path, or ``s3a://bucket/prefix/key``)."""

    # --- conveniences ---------------------------------------------------------------------------------------
    def read_json(self, key: str) -> Any:
        """Parse the object as UTF-8 JSON."""
        return json.loads(self.read_bytes(key).decode("utf-8"))

    def write_json(self, key: str, obj: Any) -> None:
        """Write ``obj`` as indented, key-sorted UTF-8 JSON (atomically). NaN/inf are refused (strict JSON)."""
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        """The object decoded as UTF-8."""
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        """Write ``text`` as UTF-8 (atomically)."""
        self.write_bytes(key, text.encode("utf-8"))


class LocalBucket(Bucket):
    """A bucket backed by a local folder (created on the first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalBucket({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalBucket) and other.root == self.root

    def __hash__(self) -> int:
        return hash(("local", self.root))

    def _path(self, key: str, *, prefix: bool = False) -> Path:
        body = check_key(key, prefix=prefix)
        path = self.root / body if body else self.root
        if body and self._outside(path):
            raise ValueError(
                f"bucket key {key!r} resolves outside the bucket root through a symbolic link: refused"
            )
        return path

    def _outside(self, path: Path | str) -> bool:
        """True when ``path`` (under the root) resolves outside the root: a symbolic link pointing out of the
        bucket must never let a key read or write elsewhere (e.g. ``incoming/x.csv -> /etc/passwd``)."""
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        return real != root and not real.startswith(root.rstrip(os.sep) + os.sep)

    def _listable(self, path: str, key: str) -> bool:
        if os.path.islink(path) and self._outside(path):
            log.warning("skipping %r in %r: a symbolic link out of the bucket root", key, self)
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except IsADirectoryError:
            raise FileNotFoundError(f"no object at key {key!r} in {self!r} (it is a folder)") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"no object at key {key!r} in {self!r}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._atomic_write(path, lambda f: f.write(data))

    def _atomic_write(self, path: Path, fill: Any) -> None:
        """Write through a temporary file in the target folder, then ``os.replace`` it over the target."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_MARKER}{path.name[:100]}.{secrets.token_hex(6)}"
        # O_EXCL: never reuse someone else's file; mode 0o666 so the umask applies as for any ordinary file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        base = check_key(prefix, prefix=True)
        folder = self.root / base if base else self.root
        if not folder.is_dir():
            return []
        out: list[ObjectInfo] = []
        if recursive:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith(_TMP_MARKER):
                        continue
                    if not self._listable(os.path.join(dirpath, name), name):
                        continue
                    st = _stat(Path(dirpath) / name)
                    if st is not None:
                        out.append(
                            ObjectInfo(
                                _join("" if rel_dir == "." else rel_dir, name), st.st_size, st.st_mtime
                            )
                        )
        else:
            for entry in os.scandir(folder):
                if entry.name.startswith(_TMP_MARKER):
                    continue
                key = _join(base, entry.name)
                if not self._listable(entry.path, key):
                    continue
                if entry.is_dir():
                    out.append(ObjectInfo(key + "/", 0, None))
                elif entry.is_file():
                    st = _stat(Path(entry.path))
                    if st is not None:
                        out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        out.sort(key=lambda o: o.key)
        return out

    def copy(self, src: str, dst: str) -> None:
        src_path, dst_path = self._path(src), self._path(dst)
        if not src_path.is_file():
            raise FileNotFoundError(f"no object at key {src!r} in {self!r}")
        with open(src_path, "rb") as source:
            self._atomic_write(dst_path, lambda f: shutil.copyfileobj(source, f))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file() or path.is_symlink():  # a folder is not an object: no-op, as on S3
            path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        base = check_key(prefix, prefix=True)
        count = len(self.list(base))
        folder = self.root / base if base else self.root
        if not folder.is_dir():
            return 0
        if base:
            _rmtree(folder)
        else:  # never remove the root folder itself
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    _rmtree(child)
                else:
                    child.unlink(missing_ok=True)
        return count

    def uri(self, key: str = "") -> str:
        return str(self._path(key, prefix=True))

    def spark_uri(self, key: str = "") -> str:
        return str(self._path(key, prefix=True))


class S3Bucket(Bucket):
    """A bucket backed by S3 (or an S3-compatible server: MinIO, moto), optionally under a key prefix.

    The boto3 client is built on first use from the environment (see the module docstring and
    :func:`shared_s3_client`), unless one is given.
    """

    def __init__(
        self, bucket: str, prefix: str = "", *, page_size: int = 1000, client: Any | None = None
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if not 1 <= page_size <= 1000:
            raise ValueError(f"page_size must be in 1..1000, got {page_size}")
        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/"), prefix=True) if prefix.strip("/") else ""
        self.page_size = page_size
        self._client = client

    def __repr__(self) -> str:
        return f"S3Bucket({self.uri()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Bucket) and (other.bucket, other.prefix) == (self.bucket, self.prefix)

    def __hash__(self) -> int:
        return hash(("s3", self.bucket, self.prefix))

    @property
    def client(self) -> Any:
        """The boto3 S3 client (built lazily from the environment)."""
        if self._client is None:
            self._client = shared_s3_client()
        return self._client

    def _key(self, key: str) -> str:
        return _join(self.prefix, check_key(key))

    def _folder(self, prefix: str) -> str:
        """The full S3 prefix of a folder, ending with ``/`` (or ``""`` for the root of an unprefixed bucket)."""
        full = _join(self.prefix, check_key(prefix, prefix=True))
        return f"{full}/" if full else ""

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def read_bytes(self, key: str) -> bytes:
        full = self._key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            if is_not_found(exc):
                raise FileNotFoundError(f"no object at key {key!r} in {self!r}") from None
            raise
        with contextlib.closing(resp["Body"]) as body:
            return body.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        log.debug("PUT s3://%s/%s (%d bytes)", self.bucket, full, len(data))
        self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(data))

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        folder = self._folder(prefix)
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": folder}
        if not recursive:
            params["Delimiter"] = "/"
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[ObjectInfo] = []
        for page in paginator.paginate(**params, PaginationConfig={"PageSize": self.page_size}):
            for obj in page.get("Contents", []):
                full = obj["Key"]
                if full.endswith("/"):  # a "folder marker" object made by some S3 consoles/tools
                    continue
                out.append(ObjectInfo(self._rel(full), int(obj["Size"]), obj["LastModified"].timestamp()))
            for common in page.get("CommonPrefixes", []):
                out.append(ObjectInfo(self._rel(common["Prefix"]), 0, None))
        out.sort(key=lambda o: o.key)
        return out

    def copy(self, src: str, dst: str) -> None:
        full_src, full_dst = self._key(src), self._key(dst)
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=full_dst, CopySource={"Bucket": self.bucket, "Key": full_src}
            )
        except Exception as exc:
            if is_not_found(exc):
                raise FileNotFoundError(f"no object at key {src!r} in {self!r}") from None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(o.key) for o in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(
                    f"S3 refused to delete {len(errors)} object(s) in {self!r}, e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
                )
        return len(keys)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{_join(self.prefix, check_key(key, prefix=True))}".rstrip("/")

    def spark_uri(self, key: str = "") -> str:
        return f"s3a://{self.bucket}/{_join(self.prefix, check_key(key, prefix=True))}".rstrip("/")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:  # deleted between the directory scan and the stat
        return None


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _rmtree(folder: Path) -> None:
    """Remove a folder tree; a concurrent removal of (part of) it is not an error."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)

"""The boto3 S3 client of a process, configured only from the environment (credentials chain, region, endpoint),
built once per configuration and shared (boto3 clients are thread-safe); and how a "not found" looks in its errors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any

log = logging.getLogger("streamrec.storage.bucket")


def s3_endpoint() -> str | None:
    """The S3 endpoint override from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_s3_client() -> Any:
    """The S3 client for the current environment, built once per process and configuration.

    Building a client costs ~0.1-0.3 s (botocore parses its service models); boto3 clients are thread-safe, so one
    is shared. The cache key covers the process id (clients must not cross a fork) and every variable that
    selects the endpoint or the identity (secrets only as a digest), so a changed environment gets a new client.
    """
    ident = [
        os.environ.get(v)
        for v in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
    ]
    secret = "\0".join(os.environ.get(v) or "" for v in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    key = (
        os.getpid(),
        s3_endpoint(),
        os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
        *ident,
        hashlib.sha256(secret.encode()).hexdigest(),
    )
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = make_s3_client()
        return client


def make_s3_client() -> Any:
    """A boto3 S3 client configured only from the environment (credentials chain, region, endpoint)."""
    import boto3
    from botocore.config import Config

    endpoint = s3_endpoint()
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or None
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    log.debug("S3 client: endpoint=%s region=%s", endpoint or "(AWS default)", region or "(default)")
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404

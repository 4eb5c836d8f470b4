"""``moto_server`` for the native cluster, with one fix to its signature check (``scripts/cluster_services.py``).

moto checks a request's SigV4 signature by signing it again with botocore, whose signer leaves some headers out
of the canonical request (``botocore.auth.SIGNED_HEADERS_BLACKLIST``: ``user-agent``, ``expect`` ...), whatever
the request's ``SignedHeaders`` says. The AWS SDK for Java v1 inside hadoop-aws 3.3.1 (Spark's ``s3a://``) signs
``User-Agent``, as it may: AWS S3 and MinIO sign again exactly the headers the client lists. So moto refuses
every s3a request once its IAM checks are on (403 on the first HEAD). In this process only, the list is emptied:
moto then signs again exactly the headers the request says it signed, like S3 does. Nothing else changes.

    python scripts/cluster_moto.py -H 127.0.0.1 -p 9190       (the arguments of moto_server)
"""

from __future__ import annotations

import sys

import botocore.auth


def main() -> None:
    botocore.auth.SIGNED_HEADERS_BLACKLIST[:] = []
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()

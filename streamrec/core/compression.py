"""Compressed ratings files: recognised by their magic bytes, decompressed as a stream with an optional bound.

gzip (``1f 8b 08``) and bzip2 (``BZh`` + a block-size digit) are read, whatever the file is called; several
members/streams one after the other (``cat a.gz b.gz``) are one file, as ``gzip -d`` reads them. ZIP, xz and zstd are
recognised only to be named in the refusal. Decompression is a stream of bounded pieces: a caller that sets
``limit`` gets :class:`TooLarge` as soon as the output passes it, so a compression bomb (a few kilobytes that
expand to gigabytes) costs at most ``limit`` plus one piece of memory; a damaged or truncated stream raises
:class:`Damaged`.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

GZIP, BZIP2 = "gzip", "bzip2"
CODECS = (GZIP, BZIP2)
MAGIC = {GZIP: b"\x1f\x8b\x08", BZIP2: b"BZh"}
SUFFIXES = {GZIP: ".gz", BZIP2: ".bz2"}
"""The suffix by which Hadoop (Spark's text reader) picks the codec of a file."""
HADOOP_SUFFIXES = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")
"""Suffixes Hadoop decompresses by name: a file with one of them is read through that codec by Spark."""
UNSUPPORTED = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
)
"""Magic bytes of other compressed formats a user is likely to drop (named as such, not as "binary data")."""
PIECE = 1 << 20


class TooLarge(Exception):
    """The decompressed output passed ``limit`` bytes (``produced``: how many were produced when it stopped)."""

    def __init__(self, limit: int, produced: int) -> None:
        self.limit, self.produced = limit, produced
        super().__init__(f"more than {limit} bytes uncompressed")


class Damaged(ValueError):
    """The compressed stream is damaged or truncated (the message says so, naming the format)."""


def codec_of(head: bytes) -> str | None:
    """``"gzip"`` or ``"bzip2"`` when ``head`` (a file's first bytes) starts with that format's magic bytes."""
    if head.startswith(MAGIC[GZIP]):
        return GZIP
    if head.startswith(MAGIC[BZIP2]) and head[3:4] in tuple(b"123456789"[i : i + 1] for i in range(9)):
        return BZIP2
    return None


def unsupported_as(head: bytes) -> str | None:
    """What other compressed format ``head`` is (``"a ZIP archive"``, ...), or ``None``."""
    for magic, what in UNSUPPORTED:
        if head.startswith(magic):
            return what
    return None


def unsupported_compression(head: bytes) -> str | None:
    """The refusal of a file compressed with another format than gzip/bzip2 (rule ``text_or_parquet``)."""
    what = unsupported_as(head)
    if what is None:
        return None
    return (
        f"{what}: compressed partitions are not supported (gzip and bzip2 are); drop the uncompressed text, "
        "a .gz/.bz2 file or Parquet"
    )


def compressed_parquet(codec: str) -> str:
    """The refusal of a compressed Parquet file (rule ``text_or_parquet``)."""
    return f"{codec}-compressed Parquet: drop the Parquet file itself (it compresses its own pages)"


def _new(codec: str) -> Any:
    return zlib.decompressobj(wbits=31) if codec == GZIP else bz2.BZ2Decompressor()


def _outputs(d: Any, data: bytes, piece: int) -> Iterator[bytes]:
    """Feed ``data`` to a decompressor, yielding output pieces of at most ``piece`` bytes."""
    if isinstance(d, bz2.BZ2Decompressor):
        yield d.decompress(data, piece)
        while not d.eof and not d.needs_input:
            yield d.decompress(b"", piece)
        return
    out = d.decompress(data, piece)
    yield out
    while not d.eof and (d.unconsumed_tail or len(out) == piece):
        out = d.decompress(d.unconsumed_tail, piece)
        yield out
        if not out and not d.unconsumed_tail:
            break


def decompress_chunks(
    chunks: Iterable[bytes], codec: str, limit: int | None = None, piece: int = PIECE, whole: bool = True
) -> Iterator[bytes]:
    """The decompressed bytes of a compressed byte stream, piece by piece.

    ``limit``: raise :class:`TooLarge` once more than ``limit`` bytes came out. ``whole``: the chunks are the
    whole file, so a stream that stops early is :class:`Damaged` (``False`` for a prefix, e.g. a file's head).
    Bytes after the last member must be zeros (tape padding) or another member."""
    magic = MAGIC[codec]
    d, fed = _new(codec), False
    total = 0
    carry = b""
    padding = False
    try:
        for chunk in chunks:
            buf, carry = carry + chunk, b""
            while buf:
                if padding:
                    if buf.strip(b"\x00"):
                        raise Damaged(f"damaged {codec} data: bytes after the end of the compressed stream")
                    break
                if not fed and len(buf) < len(magic) and magic.startswith(buf):
                    carry = buf  # the start of the next member, cut by the chunking
                    break
                if not fed and not buf.startswith(magic):
                    if total == 0:
                        raise Damaged(f"damaged {codec} data: no {codec} stream at the start")
                    padding = True
                    continue
                fed = True
                for out in _outputs(d, buf, piece):
                    total += len(out)
                    if limit is not None and total > limit:
                        raise TooLarge(limit, total)
                    if out:
                        yield out
                if not d.eof:
                    break
                buf, d, fed = d.unused_data, _new(codec), False
    except (zlib.error, OSError, EOFError) as exc:
        raise Damaged(f"damaged {codec} data ({exc})") from None
    if whole and (fed or carry):
        raise Damaged(f"truncated {codec} data: the file ends inside the compressed stream")


def decompress(data: bytes, codec: str, limit: int | None = None) -> bytes:
    """All of ``data`` decompressed (see :func:`decompress_chunks`)."""
    return b"".join(decompress_chunks([data], codec, limit))


def decompress_head(data: bytes, codec: str, n: int, whole: bool) -> tuple[bytes, bool]:
    """(the first ``n`` decompressed bytes of a file whose first bytes are ``data``, whether that is all of it).

    ``whole``: ``data`` is the whole file. Raises :class:`Damaged` when the bytes read are damaged."""
    out = bytearray()
    try:
        for piece in decompress_chunks([data], codec, piece=max(n + 1, 1), whole=whole):
            out += piece
            if len(out) > n:
                return bytes(out[:n]), False
    except Damaged:
        if whole or not out:
            raise
    return bytes(out), whole

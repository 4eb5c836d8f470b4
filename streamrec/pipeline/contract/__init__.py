"""The data contract of a dropped ratings partition: find partitions, check them, quarantine the bad ones.

A *partition* is what a user drops under ``ratings/incoming/``: one file (``p-00001.csv``) or one folder of files
that arrive together (``2026-11-26/part-*.csv``). :func:`list_incoming` finds them in arrival order,
:func:`check_partition` validates one against the contract and writes its report, :func:`quarantine` copies a
failed one aside. Every byte goes through a :class:`~streamrec.storage.bucket.Bucket`, so a local folder and ``s3://``
behave the same; the only local disk used is a temporary folder for Great Expectations' Data Docs build,
which is then uploaded through the bucket.

The check has two stages, so that one run reports *every* problem instead of the first one:

1. **File level** (the rules of :mod:`streamrec.core.ratings_format` that make a file unreadable as ratings),
   checked here on the raw bytes: the partition is at most ``STREAMREC_MAX_PARTITION_BYTES`` (default 64 MiB;
   rule ``partition_size``: checked from the listing before anything is read, and again on the uncompressed
   bytes while a gzip/bzip2 file is decompressed as a stream, so a compression bomb stops at the limit); the
   file is text (no NUL byte, valid UTF-8; possibly gzip- or bzip2-compressed, recognised by its magic bytes;
   zip/xz/zstd are named as such and refused) or Parquet; the header is a known one, its columns in any order
   (``user,item,rating[,timestamp]``, MovieLens ``userId,movieId,rating,timestamp``; or tab-separated u.data
   with no header; Parquet columns ``user, item, rating[, timestamp|ts]``); RFC 4180 quoting is well formed
   (rule ``csv_quoting``); no repeated header; every line has the format's field count. Blank lines are
   skipped. A failure here fails the check with a one-line reason naming the file, the line and the loader's
   rule (e.g. ``p.csv line 1: rule known_header: ...``) and the suite is not run. Nothing raises, except I/O
   errors of the bucket itself (a vanished object, S3 down): those are infrastructure trouble, not bad data,
   and must not quarantine a partition.

   What the readers accept beyond the plain form is a *stated normalisation*: the check's ``normalised`` (in
   ``report.json``) lists, per file, ``RFC 4180 quoting removed``, ``columns reordered from header '...'``,
   ``N blank lines skipped``, ``gzip-compressed; 1.2 MiB uncompressed``.
2. **Values**, with the Great Expectations suite ``expectations/ratings_partition.json``: the fields are
   parsed leniently (a literal that is not an integer / a finite decimal becomes null) into a pandas frame
   ``user Int64, item Int64, rating float64, ts Int64`` whose index is the row number; a side table maps each
   row back to its file and physical line, so every reason says where the first offender is, e.g.
   ``rating: 12 rows outside [0.5, 5] (first: p-00001.csv line 17: '3,5,7.0,964982703')``. A timestamp that
   is present but not an integer literal cannot be represented in the frame (a null ``ts`` is allowed), so the
   parser reports it itself (rule ``timestamp_integer``).

The contract is at least as strict as the loader: a partition that passes is read by
``streamrec.spark.ratings.read_ratings`` / ``read_ratings_pandas`` without error, into the same values. It is stricter
where the loader is lenient: timestamps must lie in [1995-01-01, now + 1 day] (the loader only wants >= 0),
ratings must equal a grid value exactly (after rounding the grid to 9 decimals; the loader allows 1e-9), and
(user, item, ts) must be unique.

Layout written (keys relative to the bucket root)::

    reports/partitions/<id>/report.json     the PartitionCheck + a summary of the GX result (always)
    reports/datadocs/<id>/index.html ...    GX Data Docs of the run (``build_docs=True``; ~1.1 s more per partition)
    quarantine/<id>/files/<name>            byte-identical copies of the raw files (``quarantine``)
    quarantine/<id>/reason.txt              the one-line reason
    quarantine/<id>/report.json             the report, plus the list of copied files

Partition ids are the file stem or folder name when that is already safe (``[A-Za-z0-9][A-Za-z0-9._-]*``);
any other name (spaces, unicode, ``..``, control characters, a leading ``-``) gets an ASCII-folded, escaped
form plus 8 hex digits of the name's SHA-256, e.g. ``"été 2026.csv"`` -> ``ete-2026-5c1f0b9e``. Names starting
with ``.`` or ``_`` are hidden (``_SUCCESS``, ``.DS_Store``) and are not partitions, as in the loader. Unfinished
uploads (temporary names such as ``*.part``, ``*._COPYING_`` or rsync's ``.name.XXXXXX``; the list is
``STREAMREC_UPLOAD_TEMP_PATTERNS``, see :mod:`~streamrec.pipeline.contract.incoming`) are *waiting*: neither
applied nor quarantined until renamed (``list_incoming(..., waiting=[])``, ``pipeline.pending()["waiting"]``).

The package, one module per idea: :mod:`~streamrec.pipeline.contract.incoming` (finding partitions, their ids
and the size limit), :mod:`~streamrec.pipeline.contract.parse` (bytes -> lines and values, with line numbers),
:mod:`~streamrec.pipeline.contract.gx` (the GX suite and Data Docs), :mod:`~streamrec.pipeline.contract.check`
(check, report, quarantine); :mod:`~streamrec.pipeline.contract.messages` holds what their reports share. The
rules of a ratings file (headers, literals, BOM, hidden names, compressed magic bytes) are
:mod:`streamrec.core.ratings_format`'s, the same the Spark and pandas readers apply.
"""

from streamrec.core.ratings_format import FILE_TYPE
from streamrec.pipeline.contract.check import PartitionCheck, check_partition, quarantine
from streamrec.pipeline.contract.gx import (
    DAY,
    SUITE_NAME,
    SUITE_PATH,
    TS_MIN,
    load_suite,
    rating_grid,
    suite_parameters,
)
from streamrec.pipeline.contract.incoming import (
    DATADOCS,
    INCOMING,
    MAX_PARTITION_BYTES,
    PARTITION_REPORTS,
    PARTITION_SIZE,
    QUARANTINE,
    REFUSED_KEY,
    REFUSED_WHY,
    UPLOAD_TEMP_PATTERNS_ENV,
    WAITING_WHY,
    Partition,
    is_upload_temp,
    list_incoming,
    max_partition_bytes,
    partition_files,
    partition_id,
    refused_incoming,
    upload_temp_patterns,
    waiting_incoming,
)
from streamrec.pipeline.contract.parse import FILES_ONLY, NO_FILES, ParsedPartition, parse_partition

__all__ = [
    "DATADOCS",
    "DAY",
    "FILES_ONLY",
    "FILE_TYPE",
    "INCOMING",
    "MAX_PARTITION_BYTES",
    "NO_FILES",
    "PARTITION_REPORTS",
    "PARTITION_SIZE",
    "QUARANTINE",
    "REFUSED_KEY",
    "REFUSED_WHY",
    "SUITE_NAME",
    "SUITE_PATH",
    "TS_MIN",
    "UPLOAD_TEMP_PATTERNS_ENV",
    "WAITING_WHY",
    "ParsedPartition",
    "Partition",
    "PartitionCheck",
    "check_partition",
    "list_incoming",
    "load_suite",
    "max_partition_bytes",
    "parse_partition",
    "partition_files",
    "partition_id",
    "quarantine",
    "rating_grid",
    "refused_incoming",
    "suite_parameters",
    "is_upload_temp",
    "upload_temp_patterns",
    "waiting_incoming",
]

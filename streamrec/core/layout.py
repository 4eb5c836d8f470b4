"""The bucket's layout: every key prefix streamrec reads or writes, in one place.

One bucket URI (a local folder or ``s3://bucket[/prefix]``) holds everything::

    ratings/history/              bootstrap input
    ratings/incoming/             users drop partitions here (a file, or a folder of files that arrive together)
    ratings/movies.csv            optional titles for the review page (MovieLens movieId,title,genres)
    quarantine/<id>/              partitions that failed the data contract: a copy + report.json + reason.txt
    models/versions/<id>/         users/ items/ (Parquet) + manifest.json (written after the tables)
    models/CURRENT                pointer {"version": id}; written last, one atomic write
    models/events/                the review log (rollback, re-queue): one JSON object per event, append-only
    validation/                   the held-out share of the history and of every applied partition
    params/<name>.json            named parameter sets written by tuning
    reports/                      gate reports, index page, partition reports, Data Docs, tuning reports
    tuning/<run>/                 a tuning run's scratch data
"""

from __future__ import annotations

import re

HISTORY = "ratings/history"
INCOMING = "ratings/incoming"
MOVIES = "ratings/movies.csv"
QUARANTINE = "quarantine"
VALIDATION = "validation"
MODELS = "models"
VERSIONS = f"{MODELS}/versions"
POINTER = f"{MODELS}/CURRENT"
EVENTS = f"{MODELS}/events"
PARAMS = "params"
REPORTS = "reports"
DATADOCS = f"{REPORTS}/datadocs"
PARTITION_REPORTS = f"{REPORTS}/partitions"
GATE_REPORTS = f"{REPORTS}/gates"
TUNING_REPORTS = f"{REPORTS}/tuning"
TUNING_SCRATCH = "tuning"
REQUEUE_MARKER = "requeue.json"

TOP_LEVEL = (HISTORY, INCOMING, QUARANTINE, MODELS, REPORTS, VALIDATION)
"""The folders a new bucket gets (``make demo``, the compose init)."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid name for one key segment (a parameter set, a tuning run): letters,
    digits, ``._-``, at most 64 characters; else ``ValueError("invalid <what> ...")``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid {what} {name!r} (letters, digits, '.', '_', '-'; max 64)")
    return name


def tuning_run(run: str) -> str:
    """``reports/tuning/<run>``: a tuning run's plan, trials, result and report."""
    return f"{TUNING_REPORTS}/{check_name(run, 'tuning run name')}"


def tuning_plan(run: str) -> str:
    return f"{tuning_run(run)}/plan.json"


def tuning_trial(run: str, part: str, index: int) -> str:
    return f"{tuning_run(run)}/trials/{part}-{index:03d}.json"


def tuning_scratch(run: str, name: str) -> str:
    """``tuning/<run>/<name>``: a run's scratch data."""
    return f"{TUNING_SCRATCH}/{check_name(run, 'tuning run name')}/{name}"

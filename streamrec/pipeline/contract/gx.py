"""Running the Great Expectations suite on a parsed partition, and its Data Docs.

The suite is ``expectations/ratings_partition.json`` (``STREAMREC_EXPECTATIONS_DIR`` points elsewhere, e.g. in
an image). It runs in a fresh ephemeral GX context with the pandas engine; every failed expectation becomes one
entry with a human sentence and where its first offender is (file and physical line, from
:class:`~streamrec.pipeline.contract.parse.ParsedPartition`). Data Docs are built into a temporary folder and
uploaded through the bucket (only the pages and the static files they reference).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.core.ratings_format import one_line, short
from streamrec.core.schema import RATING, TS, RatingScale
from streamrec.pipeline.contract.messages import entry, jsonable, n_rows
from streamrec.pipeline.contract.parse import ParsedPartition
from streamrec.storage.bucket import Bucket

SUITE_NAME = "ratings_partition"
SUITE_PATH = Path(__file__).resolve().parents[3] / "expectations" / f"{SUITE_NAME}.json"
"""The suite file in a source checkout; ``STREAMREC_EXPECTATIONS_DIR`` points elsewhere (e.g. in an image)."""

TS_MIN = 788918400
"""1995-01-01T00:00:00Z: no rating in any MovieLens release is older (the suite holds this constant too)."""
DAY = 86400


def _suite_file(path: str | os.PathLike[str] | None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("STREAMREC_EXPECTATIONS_DIR")
    return Path(env) / f"{SUITE_NAME}.json" if env else SUITE_PATH


@cache
def _suite_json(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_suite(path: str | os.PathLike[str] | None = None) -> dict:
    """The suite as a dict (GX's JSON form: ``name``, ``expectations`` [{``type``, ``kwargs``, ``meta``}] ...)."""
    return json.loads(_suite_json(str(_suite_file(path))))


def rating_grid(scale: RatingScale) -> list[float]:
    """Every rating on ``scale``: ``low, low + step, ... <= high`` (rounded to 9 decimals: 0.1 * 3 == 0.3)."""
    k = int(np.floor((scale.high - scale.low) / scale.step + 1e-9))
    return [round(scale.low + i * scale.step, 9) for i in range(k + 1)]


def suite_parameters(scale: RatingScale, now_ts: float) -> dict:
    """The run-time values of the suite's ``$PARAMETER`` s."""
    return {
        "rating_low": float(scale.low),
        "rating_high": float(scale.high),
        "rating_grid": rating_grid(scale),
        "ts_max": int(now_ts) + DAY,
    }


def _iso_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def gx_message(
    etype: str, column: str | None, count: int, result: dict, scale: RatingScale, now_ts: float
) -> str:
    """The human sentence for a failed expectation (without the location)."""
    if etype == "expect_table_row_count_to_be_between":
        return "the partition has no data rows (at least 1 required)"
    if etype == "expect_table_columns_to_match_set":
        return f"columns {result.get('observed_value')} are not user, item, rating, ts"
    if etype == "expect_column_values_to_be_of_type":
        return f"{column}: type {result.get('observed_value')} is not the contract's type"
    if etype == "expect_column_values_to_not_be_null":
        what = "a finite decimal number" if column == RATING else "an integer in 1..2^63-1"
        return f"{column}: {n_rows(count)} empty or not {what}"
    if etype == "expect_column_values_to_be_between":
        if column == RATING:
            return f"{column}: {n_rows(count)} outside [{scale.low:g}, {scale.high:g}]"
        if column == TS:
            msg = f"ts: {n_rows(count)} outside [1995-01-01, now + 1 day = {_iso_day(now_ts + DAY)}]"
            seen = [v for v in result.get("partial_unexpected_list") or [] if isinstance(v, int | np.integer)]
            if seen and all(TS_MIN <= v // 1000 <= now_ts + DAY for v in seen):
                msg += "; they look like milliseconds: timestamps are epoch seconds"
            return msg
        return f"{column}: {n_rows(count)} below 1 (ids are positive)"
    if etype == "expect_column_values_to_be_in_set":
        return f"{column}: {n_rows(count)} not on the {scale.step:g} steps of [{scale.low:g}, {scale.high:g}]"
    if etype == "expect_compound_columns_to_be_unique":
        return f"(user, item, ts): {n_rows(count)} share their (user, item, ts) with another row"
    return f"{column or 'table'}: {etype} failed ({n_rows(count)})"


def _docs_site(docs_dir: str) -> dict:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def run_suite(
    frame: pd.DataFrame,
    asset_name: str,
    params: dict,
    run_time: datetime,
    docs_dir: str | None,
    suite_path: str | os.PathLike[str] | None = None,
) -> tuple[Any, list[str]]:
    """Validate ``frame`` with the suite in a fresh ephemeral context; build Data Docs into ``docs_dir``.

    Returns (the ExpectationSuiteValidationResult, the suite's expectation ids in file order)."""
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={"streamrec": _docs_site(docs_dir)} if docs_dir else {},
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_def = (
        context.data_sources.add_pandas("streamrec")
        .add_dataframe_asset(asset_name)
        .add_batch_definition_whole_dataframe("partition")
    )
    suite = context.suites.add(ExpectationSuite(**load_suite(suite_path)))
    order = [e.id for e in suite.expectations]
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}:{asset_name}", data=batch_def, suite=suite)
    )
    result = vd.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=params,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        run_id=RunIdentifier(run_name=asset_name, run_time=run_time),
    )
    if docs_dir:
        context.build_data_docs(site_names=["streamrec"])
    return result, order


def summarise(
    result: Any, order: list[str], parsed: ParsedPartition, scale: RatingScale, now_ts: float
) -> tuple[list[dict], dict]:
    """(failed entries in suite order, a JSON summary of every expectation's outcome)."""
    rank = {eid: i for i, eid in enumerate(order)}
    outcomes = []
    failed = []
    for r in sorted(result.results, key=lambda r: rank.get(r.expectation_config.id, len(rank))):
        cfg = r.expectation_config
        etype = cfg.type
        kwargs = cfg.kwargs
        column = kwargs.get("column")
        res = dict(r.result or {})
        exc = (r.exception_info or {}).get("exception_message") if r.exception_info else None
        outcomes.append(
            {
                "expectation_type": etype,
                "column": column,
                "kwargs": jsonable({k: v for k, v in kwargs.items() if k != "value_set"}),
                "success": bool(r.success),
                "unexpected_count": jsonable(res.get("unexpected_count")),
                "observed_value": jsonable(res.get("observed_value")),
                "exception": exc,
            }
        )
        if r.success:
            continue
        count = int(res.get("unexpected_count") or 0)
        idx = [
            int(i) for i in res.get("partial_unexpected_index_list") or [] if isinstance(i, int | np.integer)
        ]
        values = res.get("partial_unexpected_list") or []
        first_row = min(idx) if idx else None
        msg = gx_message(etype, column, count, res, scale, now_ts)
        if exc:
            msg = f"{column or 'table'}: {etype} could not be evaluated ({short(str(exc), 120)})"
        first = None
        if first_row is not None and first_row < len(parsed.frame):
            first = parsed.first_loc(first_row)
            msg += f" (first: {parsed.where(first_row)})"
        elif etype == "expect_table_row_count_to_be_between" and parsed.files:
            first = f"{', '.join(parsed.files[:3])}{' ...' if len(parsed.files) > 3 else ''}"
            msg += f" in {first}"
        failed.append(entry(etype, column, count, values[:5], first, one_line(msg)))
    summary = {
        "success": bool(result.success),
        "statistics": jsonable(dict(result.statistics)),
        "expectations": outcomes,
    }
    return failed, summary


def upload_docs(bucket: Bucket, docs_dir: str, prefix: str) -> list[str]:
    """Upload the Data Docs pages (and the static files they reference) under ``prefix``; return the keys.

    GX writes ~4 MB of fonts and GIFs into ``static/`` that its pages do not use (styling comes from CDNs);
    only referenced static files are uploaded (today: the favicon)."""
    root = Path(docs_dir)
    pages = sorted(
        p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).as_posix().startswith("static/")
    )
    referenced = set()
    for page in pages:
        if page.suffix == ".html":
            for ref in re.findall(
                r"""(?:\.\./|\./)*(static/[^"'()\s?#]+)""", page.read_text("utf-8", "replace")
            ):
                referenced.add(ref)
    keys = []
    for path in [*pages, *(root / r for r in sorted(referenced))]:
        if not path.is_file():
            continue
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        bucket.write_bytes(key, path.read_bytes())
        keys.append(key)
    return keys


def sync_prefix(bucket: Bucket, prefix: str, keep: Sequence[str]) -> None:
    """Delete the objects under ``prefix`` not in ``keep`` (stale Data Docs of an earlier check)."""
    wanted = set(keep)
    for obj in bucket.list(prefix):
        if obj.key not in wanted:
            bucket.delete(obj.key)

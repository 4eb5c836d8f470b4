"""The data contract: listing partitions, checking them (file rules + the GX suite), quarantining failures.

Expected reasons are written out by hand. GX runs with its pandas engine; Data Docs are built in two tests only
(the build costs ~1.5 s). The first test that runs GX pays for importing great_expectations (~15 s of CPU).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import os
import tracemalloc
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.core.ratings_format import RatingsFormatError
from streamrec.core.schema import HALF_STAR, WHOLE_STAR, RatingScale
from streamrec.pipeline.contract import (
    Partition,
    PartitionCheck,
    check_partition,
    is_upload_temp,
    list_incoming,
    load_suite,
    parse_partition,
    partition_files,
    partition_id,
    quarantine,
    rating_grid,
)
from streamrec.storage.bucket import Bucket
from streamrec.storage.ratings import read_ratings_pandas

NOW = 1790000000  # 2026-09-21T14:13:20Z; now + 1 day = 2026-09-22 14:13 UTC
TS = 964982703  # 2000-07-30
HEADER = b"user,item,rating,timestamp\n"


def sha8(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


@pytest.fixture
def bucket(tmp_path) -> Bucket:
    return Bucket.from_uri(tmp_path / "bucket")


def drop(bucket: Bucket, name: str, data: bytes) -> str:
    key = f"ratings/incoming/{name}"
    bucket.write_bytes(key, data)
    return key


def check(bucket: Bucket, name: str, data: bytes, scale: RatingScale = HALF_STAR) -> PartitionCheck:
    key = drop(bucket, name, data)
    return check_partition(bucket, key, scale, NOW, build_docs=False)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# passing partitions
# ---------------------------------------------------------------------------------------------------------------
GOOD = HEADER + b"1,10,3.5,964982703\n1,11,4.0,\n2,10,5,964982800\n"


@pytest.mark.unit
def test_good_partition_passes_and_writes_its_report(bucket) -> None:
    c = check(bucket, "p-00001.csv", GOOD)
    assert c == PartitionCheck(
        partition_id="p-00001",
        ok=True,
        reason="passed",
        n_rows=3,
        failed=[],
        docs_key=None,
        report_key="reports/partitions/p-00001/report.json",
    )
    report = bucket.read_json("reports/partitions/p-00001/report.json")
    assert report["check"]["ok"] is True
    assert report["gx"]["success"] is True
    assert report["gx"]["statistics"]["evaluated_expectations"] == 15
    assert report["gx"]["statistics"]["unsuccessful_expectations"] == 0
    assert report["partition"]["files"] == ["ratings/incoming/p-00001.csv"]
    assert PartitionCheck.from_dict(json.loads(json.dumps(c.as_dict()))) == c


@pytest.mark.unit
def test_lenient_frame_equals_the_loaders(bucket, tmp_path) -> None:
    key = drop(bucket, "p.csv", GOOD)
    frame = parse_partition(bucket, key).frame
    expected = pd.DataFrame(
        {
            "user": [1, 1, 2],
            "item": [10, 11, 10],
            "rating": [3.5, 4.0, 5.0],
            "ts": pd.array([964982703, None, 964982800], "Int64"),
        }
    )
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    loaded = read_ratings_pandas(bucket.uri(key))
    pd.testing.assert_frame_equal(frame, loaded, check_dtype=False)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "data", "scale", "n_rows"),
    [
        ("u.data", b"1\t10\t3\t881250949\n2\t11\t5\t881250950\n", WHOLE_STAR, 2),
        ("ml.csv", b"userId,movieId,rating,timestamp\r\n1,10,4.5,964982703\r\n", HALF_STAR, 1),
        ("nots.csv", b"\xef\xbb\xbfuser,item,rating\n1,10,0.5\n1,11,5.0\n\n\n", HALF_STAR, 2),
        ("p.parquet", None, HALF_STAR, 2),
    ],
)
def test_other_formats_pass(bucket, name, data, scale, n_rows) -> None:
    if data is None:
        data = parquet_bytes(
            pa.table({"user": [1, 2], "item": [10, 10], "rating": [1.5, 2.0], "timestamp": [TS, None]})
        )
    c = check(bucket, name, data, scale)
    assert (c.ok, c.reason, c.n_rows) == (True, "passed", n_rows)


# ---------------------------------------------------------------------------------------------------------------
# each rule fails with its reason
# ---------------------------------------------------------------------------------------------------------------
VALUE_CASES = {
    "off-scale": (
        HEADER + b"1,10,3.5,964982703\n2,10,7.0,964982703\n",
        "rating: 1 row outside [0.5, 5] (first: p.csv line 3: '2,10,7.0,964982703'); and 1 more problem",
        ["expect_column_values_to_be_between", "expect_column_values_to_be_in_set"],
    ),
    "off-step": (
        HEADER + b"1,10,4.25,964982703\n1,11,0.75,964982703\n",
        "rating: 2 rows not on the 0.5 steps of [0.5, 5] (first: p.csv line 2: '1,10,4.25,964982703')",
        ["expect_column_values_to_be_in_set"],
    ),
    "zero user": (
        HEADER + b"0,10,3.5,964982703\n",
        "user: 1 row below 1 (ids are positive) (first: p.csv line 2: '0,10,3.5,964982703')",
        ["expect_column_values_to_be_between"],
    ),
    "negative item": (
        HEADER + b"1,10,3.5,964982703\n1,-5,3.5,964982703\n",
        "item: 1 row below 1 (ids are positive) (first: p.csv line 3: '1,-5,3.5,964982703')",
        ["expect_column_values_to_be_between"],
    ),
    "null item": (
        HEADER + b"1,,3.5,964982703\n",
        "item: 1 row empty or not an integer in 1..2^63-1 (first: p.csv line 2: '1,,3.5,964982703')",
        ["expect_column_values_to_not_be_null"],
    ),
    "null rating": (
        HEADER + b"1,10,,964982703\n1,11,nan,964982703\n",
        "rating: 2 rows empty or not a finite decimal number (first: p.csv line 2: '1,10,,964982703')",
        ["expect_column_values_to_not_be_null"],
    ),
    "id overflow": (
        HEADER + b"9223372036854775808,10,3.5,964982703\n",
        "user: 1 row empty or not an integer in 1..2^63-1 "
        "(first: p.csv line 2: '9223372036854775808,10,3.5,964982703')",
        ["expect_column_values_to_not_be_null"],
    ),
    "duplicate": (
        HEADER + b"1,10,3.5,964982703\n1,11,3.5,964982703\n1,10,4.0,964982703\n",
        "(user, item, ts): 2 rows share their (user, item, ts) with another row "
        "(first: p.csv line 2: '1,10,3.5,964982703')",
        ["expect_compound_columns_to_be_unique"],
    ),
    "duplicate without ts": (
        HEADER + b"1,10,3.5,\n1,10,4.0,\n",
        "(user, item, ts): 2 rows share their (user, item, ts) with another row (first: p.csv line 2: '1,10,3.5,')",
        ["expect_compound_columns_to_be_unique"],
    ),
    "future timestamp": (
        HEADER + b"1,10,3.5,964982703\n1,11,3.5,1790090000\n",
        "ts: 1 row outside [1995-01-01, now + 1 day = 2026-09-22 14:13 UTC] "
        "(first: p.csv line 3: '1,11,3.5,1790090000')",
        ["expect_column_values_to_be_between"],
    ),
    "ancient timestamp": (
        HEADER + b"1,10,3.5,788918399\n",
        "ts: 1 row outside [1995-01-01, now + 1 day = 2026-09-22 14:13 UTC] (first: p.csv line 2: '1,10,3.5,788918399')",
        ["expect_column_values_to_be_between"],
    ),
    "timestamp not an integer": (
        HEADER + b"1,10,3.5,yesterday\n",
        "ts: 1 row with a timestamp that is not an integer (epoch seconds) (first: p.csv line 2: '1,10,3.5,yesterday')",
        ["timestamp_integer"],
    ),
    "header only": (
        HEADER,
        "the partition has no data rows (at least 1 required) in p.csv",
        ["expect_table_row_count_to_be_between"],
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_value_rule_fails_with_its_reason(bucket, case) -> None:
    data, reason, types = VALUE_CASES[case]
    c = check(bucket, "p.csv", data)
    assert not c.ok
    assert c.reason == reason
    assert [f["expectation_type"] for f in c.failed] == types
    assert c.report_key == "reports/partitions/p/report.json"
    assert bucket.read_json(c.report_key)["check"]["reason"] == reason


FILE_CASES = {
    "empty file": (b"", "p.csv line 1: rule known_header: the file is empty: no header"),
    "wrong delimiter": (
        b"user;item;rating;timestamp\n1;10;3.5;964982703\n",
        "p.csv line 1: rule known_header: 'user;item;rating;timestamp' is not a known header "
        "('user,item,rating,timestamp', 'user,item,rating' or 'userId,movieId,rating,timestamp') nor a "
        "tab-separated u.data line; wrong delimiter? fields are separated by ';', the format wants ',' "
        "(or tabs for u.data)",
    ),
    "missing column": (
        b"user,item,timestamp\n1,10,964982703\n",
        "p.csv line 1: rule known_header: 'user,item,timestamp' is not a known header "
        "('user,item,rating,timestamp', 'user,item,rating' or 'userId,movieId,rating,timestamp') nor a "
        "tab-separated u.data line; missing column(s) rating",
    ),
    "binary garbage": (
        bytes(range(256)) * 8,
        "p.csv: rule text_or_parquet: binary data (a NUL byte at offset 0): not a text or Parquet ratings file",
    ),
    "not utf-8": (
        b"\xff\xd8\xff\xe0 JFIF image",
        "p.csv: rule text_or_parquet: not UTF-8 text (byte 0xff at offset 0): binary data or another encoding",
    ),
    "field count": (
        HEADER + b"1,10,3.5,964982703\n1,11,3.5\n1,12\n",
        "p.csv line 3: rule field_count: expected 4 fields separated by ',', found 3 in '1,11,3.5' "
        "(2 lines break this rule)",
    ),
    "csv quoting": (
        HEADER + b'1,10,3.5,964982703\n1,"11,3.5,964982703\n1,12,"3"x,964982703\n',
        "p.csv line 3: rule csv_quoting: misplaced double quote in '1,\"11,3.5,964982703': RFC 4180 quotes a "
        'whole field ("4.5"), doubles a quote inside it and closes it on the same line (2 lines break this rule)',
    ),
    "truncated gzip": (
        gzip.compress(HEADER + b"1,10,3.5,964982703\n" * 50, mtime=0)[:-12],
        "p.csv: rule text_or_parquet: truncated gzip data: the file ends inside the compressed stream",
    ),
    "gzip-compressed parquet": (
        gzip.compress(parquet_bytes(pa.table({"user": [1], "item": [2], "rating": [3.0]})), mtime=0),
        "p.csv: rule text_or_parquet: gzip-compressed Parquet: drop the Parquet file itself (it compresses its "
        "own pages)",
    ),
    "zip": (
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(40)),
        "p.csv: rule text_or_parquet: a ZIP archive: compressed partitions are not supported (gzip and bzip2 "
        "are); drop the uncompressed text, a .gz/.bz2 file or Parquet",
    ),
    "repeated header": (
        HEADER + b"1,10,3.5,964982703\n" + HEADER + b"1,11,3.5,964982703\n",
        "p.csv line 3: rule repeated_header: the header 'user,item,rating,timestamp' appears again "
        "(concatenated files?)",
    ),
    "tsv header": (
        b"user\titem\trating\ttimestamp\n1\t10\t3\t881250949\n",
        "p.csv line 1: rule known_header: 'user\\titem\\trating\\ttimestamp' is tab separated but not a u.data "
        "line (u.data has no header; a tab-separated header is not supported: use 'user,item,rating,timestamp')",
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_file_rule_fails_with_its_reason_without_running_the_suite(bucket, case) -> None:
    data, reason = FILE_CASES[case]
    c = check(bucket, "p.csv", data)
    assert (c.ok, c.reason, c.n_rows, c.docs_key) == (False, reason, 0, None)
    assert len(c.failed) == 1
    report = bucket.read_json(c.report_key)
    assert report["gx"] is None
    assert report["check"]["reason"] == reason


@pytest.mark.unit
def test_parquet_rules(bucket) -> None:
    no_rating = parquet_bytes(pa.table({"user": [1], "item": [2], "score": [3.0]}))
    c = check(bucket, "a.parquet", no_rating)
    assert c.reason == (
        "a.parquet: rule known_header: Parquet columns ['user', 'item', 'score'] are not user, item, "
        "rating[, timestamp|ts]; missing column(s) rating"
    )
    bad_rows = parquet_bytes(pa.table({"user": [1, 2, 0], "item": [5, 5, 5], "rating": [1.0, 9.5, 2.0]}))
    c = check(bucket, "b.parquet", bad_rows)
    assert c.reason == (
        "user: 1 row below 1 (ids are positive) (first: b.parquet row 3: user='0', item='5', rating='2'); "
        "and 2 more problems"
    )
    assert [f["first"] for f in c.failed] == ["b.parquet row 3", "b.parquet row 2", "b.parquet row 2"]
    damaged = parquet_bytes(pa.table({"user": [1], "item": [2], "rating": [3.0]}))[:40]
    c = check(bucket, "c.parquet", damaged)
    assert c.reason.startswith("c.parquet: rule text_or_parquet: unreadable Parquet file (")


@pytest.mark.unit
def test_movielens_requires_timestamps(bucket) -> None:
    c = check(bucket, "ml.csv", b"userId,movieId,rating,timestamp\n1,10,4.5,\n")
    assert c.reason == (
        "ts: 1 row with a timestamp that is not an integer (epoch seconds) (first: ml.csv line 2: '1,10,4.5,')"
    )


@pytest.mark.unit
def test_every_problem_is_reported_in_one_run(bucket) -> None:
    data = HEADER + (
        b"1,10,3.5,964982703\n"  # line 2 ok
        b"0,10,3.5,964982703\n"  # line 3 user 0
        b"1,11,6.0,964982703\n"  # line 4 off scale (and off grid)
        b"1,12,2.2,964982703\n"  # line 5 off grid
        b"1,13,x,964982703\n"  # line 6 rating not a number
        b"1,10,3.5,964982703\n"  # line 7 duplicate of line 2
        b"1,14,3.5,2000000000\n"  # line 8 future
    )
    c = check(bucket, "p.csv", data)
    got = [(f["expectation_type"], f["column"], f["unexpected_count"], f["first"]) for f in c.failed]
    assert got == [
        ("expect_column_values_to_not_be_null", "rating", 1, "p.csv line 6"),
        ("expect_column_values_to_be_between", "user", 1, "p.csv line 3"),
        ("expect_column_values_to_be_between", "rating", 1, "p.csv line 4"),
        ("expect_column_values_to_be_in_set", "rating", 2, "p.csv line 4"),
        ("expect_column_values_to_be_between", "ts", 1, "p.csv line 8"),
        ("expect_compound_columns_to_be_unique", None, 2, "p.csv line 2"),
    ]
    assert c.failed[3]["unexpected_values"] == [6.0, 2.2]
    assert c.reason.endswith("; and 5 more problems")
    assert c.n_rows == 7


@pytest.mark.unit
def test_reason_is_one_line_for_a_hostile_file_name(bucket) -> None:
    name = "evil\nname <b>.csv"
    c = check(bucket, name, b"user;item\n")
    assert "\n" not in c.reason
    assert c.reason.startswith("evil\\nname <b>.csv line 1: rule known_header:")
    assert c.partition_id == f"evil-name-b-{sha8(name)}"


# ---------------------------------------------------------------------------------------------------------------
# shapes ordinary tools write: accepted as stated normalisations, read by the loader into the values checked
# ---------------------------------------------------------------------------------------------------------------
ROWS3 = [(1, 10, "3.5", 964982703), (1, 11, "4.0", ""), (2, 10, "5", 964982800)]


def quote_all(header: list[str], rows: list[tuple], delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, delimiter=delimiter, lineterminator="\r\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


SHAPES = {
    "quote_all": (
        "p.csv",
        quote_all(["user", "item", "rating", "timestamp"], ROWS3),
        ["p.csv: RFC 4180 quoting removed"],
    ),
    "quoted values only, a quoted empty timestamp": (
        "p.csv",
        HEADER + b'"1","10","3.5","964982703"\n1,"11",4.0,""\n"2",10,"5",964982800\n',
        ["p.csv: RFC 4180 quoting removed"],
    ),
    "reordered movielens header": (
        "ml.csv",
        b"movieId,timestamp,userId,rating\n10,964982703,1,3.5\n11,964982704,1,4.0\n10,964982800,2,5\n",
        ["ml.csv: columns reordered from header 'movieId,timestamp,userId,rating'"],
    ),
    "reordered, quoted, no timestamp": (
        "p.csv",
        quote_all(["rating", "item", "user"], [(r, i, u) for u, i, r, _ in ROWS3]),
        ["p.csv: RFC 4180 quoting removed", "p.csv: columns reordered from header 'rating,item,user'"],
    ),
    "blank lines anywhere": (
        "p.csv",
        HEADER + b"\n1,10,3.5,964982703\n \t\n1,11,4.0,\n\n2,10,5,964982800\n\n",
        ["p.csv: 4 blank lines skipped"],
    ),
    "gzip named .csv.gz": (
        "p.csv.gz",
        gzip.compress(GOOD, mtime=0),
        ["p.csv.gz: gzip-compressed; 73 bytes uncompressed"],
    ),
    "gzip named .csv (by its magic bytes)": (
        "p.csv",
        gzip.compress(GOOD, mtime=0),
        ["p.csv: gzip-compressed; 73 bytes uncompressed"],
    ),
    "two gzip members (cat a.gz b.gz)": (
        "p.gz",
        gzip.compress(GOOD[:40], mtime=0) + gzip.compress(GOOD[40:], mtime=0),
        ["p.gz: gzip-compressed; 73 bytes uncompressed"],
    ),
    "bzip2 u.data without a suffix": (
        "u.data",
        bz2.compress(b"1\t10\t3\t881250949\n2\t11\t5\t881250950\n"),
        ["u.data: bzip2-compressed; 34 bytes uncompressed"],
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(SHAPES))
def test_tool_written_shapes_pass_with_their_normalisation_stated(bucket, case) -> None:
    name, data, normalised = SHAPES[case]
    scale = WHOLE_STAR if name == "u.data" else HALF_STAR
    c = check(bucket, name, data, scale)
    assert (c.ok, c.reason) == (True, "passed"), c.reason
    assert c.normalised == normalised
    report = bucket.read_json(c.report_key)
    assert report["check"]["normalised"] == normalised
    assert PartitionCheck.from_dict(json.loads(json.dumps(c.as_dict()))) == c
    key = f"ratings/incoming/{name}"
    checked = parse_partition(bucket, key).frame
    pd.testing.assert_frame_equal(checked, read_ratings_pandas(bucket.uri(key), scale), check_dtype=False)
    assert len(checked) == (2 if name == "u.data" else 3)


@pytest.mark.unit
def test_quoted_values_are_the_same_values(bucket) -> None:
    a = parse_partition(bucket, drop(bucket, "a.csv", GOOD)).frame
    b = parse_partition(
        bucket, drop(bucket, "b.csv", quote_all(["user", "item", "rating", "timestamp"], ROWS3))
    ).frame
    c = parse_partition(
        bucket,
        drop(
            bucket, "c.csv", b"timestamp,rating,user,item\n964982703,3.5,1,10\n,4.0,1,11\n964982800,5,2,10\n"
        ),
    ).frame
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


@pytest.mark.unit
def test_quoted_field_holding_a_separator_is_one_value_reported_by_the_suite(bucket) -> None:
    """A European decimal in quotes is one field (RFC 4180), not a field-count error; the suite names it."""
    c = check(bucket, "p.csv", HEADER + b'"1","10","3,5","964982703"\n')
    assert c.reason == (
        "rating: 1 row empty or not a finite decimal number (first: p.csv line 2: "
        '\'"1","10","3,5","964982703"\')'
    )


def bomb(size: int) -> bytes:
    """gzip of ``size`` bytes of one valid ratings line repeated (about 1 KB per MB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    line = b"1,10,3.5,964982703\n"
    block = HEADER + line * ((1 << 20) // len(line))
    out = [z.compress(block) for _ in range(size // len(block) + 1)]
    return b"".join(out) + z.flush()


@pytest.mark.unit
def test_compression_bomb_is_refused_while_streaming(bucket, monkeypatch) -> None:
    """256 MiB of text in ~0.7 MB of gzip: refused by the uncompressed size limit, decompressed as a stream
    that stops at the limit, so the check's peak Python memory stays near the limit (not 256 MiB)."""
    data = bomb(256 << 20)
    assert len(data) < 1 << 20
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", str(4 << 20))
    key = drop(bucket, "bomb.csv.gz", data)
    tracemalloc.start()
    try:
        c = check_partition(bucket, key, HALF_STAR, NOW, build_docs=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not c.ok and c.failed[0]["expectation_type"] == "partition_size"
    assert c.reason == (
        "bomb.csv.gz: rule partition_size: partition too large to check: bomb.csv.gz is compressed and expands "
        "past 4.0 MiB (decompression stopped there), the contract reads at most 4.0 MiB into memory "
        "(STREAMREC_MAX_PARTITION_BYTES); split it into smaller partitions, or raise the limit on workers with "
        "the memory for it"
    )
    assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB"
    # the limit counts uncompressed bytes: the same text uncompressed over the limit is refused before reading
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", str(len(data) + 1))
    assert check_partition(bucket, key, HALF_STAR, NOW, build_docs=False).failed[0]["expectation_type"] == (
        "partition_size"
    )


# ---------------------------------------------------------------------------------------------------------------
# loader agreement: what the loader refuses the contract refuses too
# ---------------------------------------------------------------------------------------------------------------
LOADER_ACCEPTS = {"duplicate", "duplicate without ts", "future timestamp", "ancient timestamp", "header only"}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted({*VALUE_CASES, *FILE_CASES} - LOADER_ACCEPTS))
def test_loader_refuses_what_the_contract_refuses(tmp_path, case) -> None:
    data = (VALUE_CASES.get(case) or FILE_CASES[case])[0]
    path = tmp_path / "p.csv"
    path.write_bytes(data)
    with pytest.raises(RatingsFormatError):
        read_ratings_pandas(str(path))


@pytest.mark.unit
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 2**63 - 1),
            st.integers(1, 10**6),
            st.integers(1, 10),
            st.one_of(st.none(), st.integers(788918400, NOW)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_parsed_frame_matches_the_loader_on_valid_rows(tmp_path_factory, rows) -> None:
    text = "user,item,rating,timestamp\n" + "".join(
        f"{u},{i},{r / 2:g},{'' if t is None else t}\n" for u, i, r, t in rows
    )
    root = tmp_path_factory.mktemp("prop")
    b = Bucket.from_uri(root)
    b.write_bytes("p.csv", text.encode())
    parsed = parse_partition(b, "p.csv")
    assert parsed.fatal == [] and parsed.problems == []
    expected = read_ratings_pandas(str(root / "p.csv"))
    pd.testing.assert_frame_equal(parsed.frame, expected, check_dtype=False)


@pytest.mark.unit
def test_suite_file_and_grid() -> None:
    suite = load_suite()
    assert suite["name"] == "ratings_partition"
    types = [e["type"] for e in suite["expectations"]]
    assert "expect_compound_columns_to_be_unique" in types
    assert "expect_table_row_count_to_be_between" in types
    assert rating_grid(HALF_STAR) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert rating_grid(RatingScale(0.0, 1.0, 0.1)) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert rating_grid(RatingScale(1.0, 5.0, 1.5)) == [1.0, 2.5, 4.0]


@pytest.mark.unit
def test_tenth_step_scale_accepts_decimal_literals(bucket) -> None:
    c = check(bucket, "t.csv", b"user,item,rating\n1,1,0.3\n1,2,0.7\n1,3,1\n", RatingScale(0.0, 1.0, 0.1))
    assert c.reason == "passed"


# ---------------------------------------------------------------------------------------------------------------
# folders
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_folder_partition_with_one_bad_file_names_that_file(bucket) -> None:
    drop(bucket, "2026-11-26/part-1.csv", GOOD)
    drop(bucket, "2026-11-26/part-2.csv", HEADER + b"3,10,3.5,964982703\n3,11,5.5,964982703\n")
    drop(bucket, "2026-11-26/_SUCCESS", b"")
    assert partition_files(bucket, "ratings/incoming/2026-11-26") == [
        "ratings/incoming/2026-11-26/part-1.csv",
        "ratings/incoming/2026-11-26/part-2.csv",
    ]
    [part] = list_incoming(bucket)
    c = check_partition(bucket, part, HALF_STAR, NOW, build_docs=False)
    assert c.partition_id == "2026-11-26"
    assert c.n_rows == 5
    assert c.reason == (
        "rating: 1 row outside [0.5, 5] (first: 2026-11-26/part-2.csv line 3: '3,11,5.5,964982703'); "
        "and 1 more problem"
    )


@pytest.mark.unit
def test_folder_partition_with_an_unreadable_file_names_that_file(bucket) -> None:
    drop(bucket, "d/a.csv", GOOD)
    drop(bucket, "d/b.csv", b"user|item|rating\n1|2|3\n")
    c = check_partition(bucket, "ratings/incoming/d", HALF_STAR, NOW, build_docs=False)
    assert c.reason.startswith("d/b.csv line 1: rule known_header: 'user|item|rating' is not a known header")


@pytest.mark.unit
def test_folder_with_a_sub_folder_fails(bucket) -> None:
    drop(bucket, "d/a.csv", GOOD)
    drop(bucket, "d/more/b.csv", GOOD)
    c = check_partition(bucket, "ratings/incoming/d", HALF_STAR, NOW, build_docs=False)
    assert (
        c.reason
        == "d: rule files_only: the folder contains the sub-folder 'more': a ratings folder holds files only"
    )


# ---------------------------------------------------------------------------------------------------------------
# list_incoming
# ---------------------------------------------------------------------------------------------------------------
def touch(bucket: Bucket, key: str, mtime: float) -> None:
    os.utime(bucket.uri(key), (mtime, mtime))


@pytest.mark.unit
def test_list_incoming_orders_by_arrival_and_sanitises_names(bucket) -> None:
    for name, mtime in [
        ("b.csv", 300.0),
        ("a.csv", 200.0),
        ("my ratings.csv", 100.0),
        ("été 2026.csv", 400.0),
        ("-x.csv", 500.0),
        ("a..b.csv", 600.0),
        (".hidden.csv", 50.0),
        ("_in_progress.csv", 60.0),
        ("folder/part-1.csv", 150.0),
        ("folder/part-2.csv", 700.0),  # the folder arrives with its newest file
        ("tmp/_part-0.csv", 10.0),  # only hidden files: still being written
        ("tie-z.csv", 800.0),
        ("tie-a.csv", 800.0),
    ]:
        drop(bucket, name, GOOD)
        touch(bucket, f"ratings/incoming/{name}", mtime)
    parts = list_incoming(bucket)
    assert [(p.id, p.key) for p in parts] == [
        (f"my-ratings-{sha8('my ratings.csv')}", "ratings/incoming/my ratings.csv"),
        ("a", "ratings/incoming/a.csv"),
        ("b", "ratings/incoming/b.csv"),
        (f"ete-2026-{sha8('été 2026.csv')}", "ratings/incoming/été 2026.csv"),
        (f"x-{sha8('-x.csv')}", "ratings/incoming/-x.csv"),
        (f"a.b-{sha8('a..b.csv')}", "ratings/incoming/a..b.csv"),
        ("folder", "ratings/incoming/folder"),
        ("tie-a", "ratings/incoming/tie-a.csv"),
        ("tie-z", "ratings/incoming/tie-z.csv"),
    ]
    folder = parts[6]
    assert folder.files == ("ratings/incoming/folder/part-1.csv", "ratings/incoming/folder/part-2.csv")
    assert (folder.mtime, folder.size, folder.is_folder) == (700.0, 2 * len(GOOD), True)
    assert parts[1].files == ("ratings/incoming/a.csv",) and not parts[1].is_folder
    assert Partition.from_dict(json.loads(json.dumps(folder.as_dict()))) == folder


@pytest.mark.unit
def test_list_incoming_disambiguates_ids_keeping_the_first_arrival(bucket) -> None:
    drop(bucket, "p.csv", GOOD)
    touch(bucket, "ratings/incoming/p.csv", 100.0)
    drop(bucket, "p.parquet", b"x")
    touch(bucket, "ratings/incoming/p.parquet", 200.0)
    assert [p.id for p in list_incoming(bucket)] == ["p", f"p-{sha8('p.parquet')}"]


@pytest.mark.unit
def test_partition_ids() -> None:
    assert partition_id("p-00001.csv") == "p-00001"
    assert partition_id("2026-11-26", is_file=False) == "2026-11-26"
    assert partition_id("ratings.tar.gz") == "ratings.tar"
    assert partition_id("..", is_file=False) == f"partition-{sha8('..')}"
    assert (
        partition_id("<script>alert(1)</script>.csv")
        == f"script-alert-1-script-{sha8('<script>alert(1)</script>.csv')}"
    )
    assert partition_id("日本.csv") == f"partition-{sha8('日本.csv')}"


# ---------------------------------------------------------------------------------------------------------------
# unfinished uploads: waiting, neither applied nor quarantined, picked up once renamed
# ---------------------------------------------------------------------------------------------------------------
UNFINISHED = {
    "late.csv.part": "late.csv",  # curl / wget / Firefox
    ".rsynced.csv.Ab3xY9": "rsynced.csv",  # rsync's hidden temporary name
    "batch/part-2.csv._COPYING_": "batch/part-2.csv",  # hdfs dfs -put, inside a folder partition
}


@pytest.mark.unit
def test_upload_temp_patterns_are_configurable(monkeypatch) -> None:
    for name in [
        "a.tmp",
        "a.CSV.PART",
        "a.partial",
        "x.crdownload",
        "x.filepart",
        "x._COPYING_",
        ".x.csv.Ab3xY9",
    ]:
        assert is_upload_temp(name), name
    for name in ["a.csv", "part-1.csv", ".DS_Store", "_SUCCESS", ".part-1.csv.crc", "a.partition"]:
        assert not is_upload_temp(name), name
    monkeypatch.setenv("STREAMREC_UPLOAD_TEMP_PATTERNS", "*.uploading, *.tmp")
    assert is_upload_temp("a.csv.uploading") and not is_upload_temp("a.part")
    monkeypatch.setenv("STREAMREC_UPLOAD_TEMP_PATTERNS", "")
    assert not is_upload_temp("a.tmp")


def _pending_ids(plan: dict) -> list[str]:
    return [p["id"] for p in plan["pending"]]


def _base_model(bucket: Bucket):
    from streamrec import pipeline
    from streamrec.core.arrays import ModelArrays
    from streamrec.storage.store import ModelStore

    store = ModelStore(bucket)
    arrays = ModelArrays(
        mu=3.5,
        rank=1,
        user_ids=np.array([1, 2], np.int64),
        user_bias=np.zeros(2),
        user_factors=np.full((2, 1), 0.1),
        item_ids=np.array([10, 11], np.int64),
        item_bias=np.zeros(2),
        item_factors=np.full((2, 1), 0.1),
        n=3,
    )
    store.publish(store.write_arrays(arrays, {"kind": "bootstrap", "partitions": []}, "v1"))
    return pipeline, store, arrays


def _rename(bucket: Bucket, src: str, dst: str) -> None:
    bucket.copy(src, dst)
    bucket.delete(src)


def unfinished_uploads_wait_then_apply_once(bucket: Bucket) -> None:
    """Through ``pipeline.pending`` and ``check_and_select``: temp-named uploads (and the folder holding one)
    wait, are never checked nor quarantined; once renamed they are pending, checked, applied, and then
    skipped as applied."""
    pipeline, store, arrays = _base_model(bucket)
    drop(bucket, "done.csv", GOOD)
    drop(bucket, "batch/part-1.csv", GOOD)
    for tmp in UNFINISHED:
        drop(bucket, tmp, HEADER + b"3,11,4.5,964982900\n")
    waiting = sorted(f"ratings/incoming/{k}" for k in UNFINISHED)
    plan = pipeline.pending(bucket, store)
    assert _pending_ids(plan) == ["done"]
    assert sorted(plan["waiting"]) == waiting
    assert {k: plan["skipped"][k] for k in waiting} == dict.fromkeys(
        waiting, "waiting for its upload to finish"
    )
    assert [p.id for p in list_incoming(bucket)] == ["done"]
    sel = pipeline.check_and_select(bucket, store, plan, NOW, False, 10)
    assert [r["id"] for r in sel["checked"]] == ["done"]
    assert bucket.list("quarantine") == [] and not any("rsynced" in o.key for o in bucket.list("reports"))

    for tmp, final in UNFINISHED.items():
        _rename(bucket, f"ratings/incoming/{tmp}", f"ratings/incoming/{final}")
    plan = pipeline.pending(bucket, store)
    assert plan["waiting"] == [] and not any(v.startswith("waiting") for v in plan["skipped"].values())
    assert sorted(_pending_ids(plan)) == ["batch", "done", "late", "rsynced"]
    batch = [p for p in list_incoming(bucket) if p.id == "batch"][0]
    assert batch.files == ("ratings/incoming/batch/part-1.csv", "ratings/incoming/batch/part-2.csv")
    sel = pipeline.check_and_select(bucket, store, plan, NOW, False, 10)
    applied = [p["id"] for p in sel["partitions"]]
    assert sorted(applied) == ["batch", "done", "late", "rsynced"], sel["checked"]
    v2 = store.write_arrays(arrays, {"kind": "update", "parent": "v1", "partitions": applied}, "v2")
    store.publish(v2)
    plan = pipeline.pending(bucket, store)
    assert plan["pending"] == [] and plan["waiting"] == []
    assert {pid: plan["skipped"][pid] for pid in applied} == dict.fromkeys(applied, "applied")


@pytest.mark.unit
def test_unfinished_uploads_wait_then_apply_once_local(bucket) -> None:
    unfinished_uploads_wait_then_apply_once(bucket)


@pytest.mark.integration
def test_unfinished_uploads_wait_then_apply_once_on_s3(s3_bucket_uri) -> None:
    unfinished_uploads_wait_then_apply_once(Bucket.from_uri(s3_bucket_uri + "/lake"))


# ---------------------------------------------------------------------------------------------------------------
# quarantine
# ---------------------------------------------------------------------------------------------------------------
def snapshot(bucket: Bucket, prefix: str) -> dict[str, bytes]:
    return {o.key: bucket.read_bytes(o.key) for o in bucket.list(prefix)}


@pytest.mark.unit
def test_quarantine_copies_byte_identical_files_and_leaves_originals(bucket) -> None:
    bad = HEADER + b"1,10,9.5,964982703\r\n\xef\xbb\xbf"  # odd bytes on purpose: copies must be exact
    drop(bucket, "d/part-1.csv", GOOD)
    drop(bucket, "d/part-2.csv", bad)
    drop(bucket, "d/_SUCCESS", b"")
    before = snapshot(bucket, "ratings/incoming")
    [part] = list_incoming(bucket)
    c = check_partition(bucket, part, HALF_STAR, NOW, build_docs=False)
    assert not c.ok
    prefix = quarantine(bucket, part, c)
    assert prefix == "quarantine/d"
    assert snapshot(bucket, "ratings/incoming") == before
    files = snapshot(bucket, "quarantine/d/files")
    assert files == {
        "quarantine/d/files/d/part-1.csv": GOOD,
        "quarantine/d/files/d/part-2.csv": bad,
        "quarantine/d/files/d/_SUCCESS": b"",
    }
    assert bucket.read_text("quarantine/d/reason.txt") == c.reason + "\n"
    report = bucket.read_json("quarantine/d/report.json")
    assert report["check"] == c.as_dict()
    assert {x["source"]: x["size"] for x in report["copied"]} == {
        "ratings/incoming/d/part-1.csv": len(GOOD),
        "ratings/incoming/d/part-2.csv": len(bad),
        "ratings/incoming/d/_SUCCESS": 0,
    }
    everything = snapshot(bucket, "")
    assert quarantine(bucket, part, c) == prefix  # idempotent
    assert snapshot(bucket, "") == everything


@pytest.mark.unit
def test_quarantine_of_a_file_partition(bucket) -> None:
    key = drop(bucket, "p-9.csv", b"\x00\x01garbage")
    c = check_partition(bucket, key, HALF_STAR, NOW, build_docs=False)
    assert quarantine(bucket, key, c) == "quarantine/p-9"
    assert bucket.read_bytes("quarantine/p-9/files/p-9.csv") == b"\x00\x01garbage"
    assert bucket.read_bytes(key) == b"\x00\x01garbage"
    with pytest.raises(ValueError, match="not 'other'"):
        quarantine(bucket, drop(bucket, "other.csv", GOOD), c)


# ---------------------------------------------------------------------------------------------------------------
# Data Docs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_data_docs_are_uploaded_and_stale_pages_removed(bucket) -> None:
    key = drop(bucket, "p.csv", HEADER + b"1,10,7.0,964982703\n")
    c = check_partition(bucket, key, HALF_STAR, NOW, build_docs=True)
    assert c.docs_key == "reports/datadocs/p/index.html"
    index = bucket.read_text(c.docs_key)
    assert "ratings_partition" in index
    pages = [o.key for o in bucket.list("reports/datadocs/p/validations")]
    assert len(pages) == 1 and pages[0].endswith(".html")
    assert "7.0" in bucket.read_text(pages[0])
    assert not any("/fonts/" in o.key for o in bucket.list("reports/datadocs/p"))
    c2 = check_partition(bucket, key, HALF_STAR, NOW + 3600, build_docs=True)
    pages2 = [o.key for o in bucket.list("reports/datadocs/p/validations")]
    assert len(pages2) == 1 and pages2 != pages
    check_partition(bucket, key, HALF_STAR, NOW, build_docs=False)
    assert bucket.list("reports/datadocs/p") == []
    assert c2.reason == c.reason


@pytest.mark.integration
def test_check_and_quarantine_on_s3(s3_bucket_uri) -> None:
    bucket = Bucket.from_uri(s3_bucket_uri + "/lake")
    drop(bucket, "good.csv", GOOD)
    drop(bucket, "bad/part-1.csv", HEADER + b"1,10,3.5,964982703\n0,10,3.5,964982703\n")
    parts = {p.id: p for p in list_incoming(bucket)}
    assert sorted(parts) == ["bad", "good"]
    assert check_partition(bucket, parts["good"], HALF_STAR, NOW, build_docs=False).ok
    c = check_partition(bucket, parts["bad"], HALF_STAR, NOW, build_docs=True)
    assert (
        c.reason
        == "user: 1 row below 1 (ids are positive) (first: bad/part-1.csv line 3: '0,10,3.5,964982703')"
    )
    assert bucket.exists("reports/datadocs/bad/index.html")
    assert quarantine(bucket, parts["bad"], c) == "quarantine/bad"
    assert bucket.read_bytes("quarantine/bad/files/bad/part-1.csv") == bucket.read_bytes(
        "ratings/incoming/bad/part-1.csv"
    )
    assert bucket.read_text("quarantine/bad/reason.txt") == c.reason + "\n"

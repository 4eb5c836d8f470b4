"""Tests for streamrec.spark.ratings: formats, line endings, folders, and exact file/line/rule on bad rows.

Expected values are written by hand. pandas-only tests are ``unit``; ``spark`` tests share the session
fixture and are kept few (each read is one small Spark job).
"""

from __future__ import annotations

import bz2
import gzip
import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.core import ratings_arrow
from streamrec.core import ratings_format as rules
from streamrec.core.ratings_format import RatingsFormatError
from streamrec.core.schema import HALF_STAR, WHOLE_STAR, RatingScale
from streamrec.spark import ratings as spark_reader
from streamrec.spark.ratings import read_ratings
from streamrec.spark.schema import RATINGS_SCHEMA
from streamrec.storage import ratings as loader
from streamrec.storage.ratings import detect_format, list_rating_files, read_ratings_pandas

ML_HEADER = "userId,movieId,rating,timestamp"


def write(path, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def write_parquet(path, columns: dict[str, pa.Array]) -> str:
    pq.write_table(pa.table(columns), str(path))
    return str(path)


def rows(df: pd.DataFrame) -> list[tuple]:
    """DataFrame rows as plain tuples, ``None`` for a null ts."""
    return [
        (int(u), int(i), float(r), None if pd.isna(t) else int(t))
        for u, i, r, t in zip(df["user"], df["item"], df["rating"], df["ts"], strict=True)
    ]


def assert_dtypes(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["user", "item", "rating", "ts"]
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float64", "Int64"]


# ---------------------------------------------------------------------------------------------------------
# Formats (pandas reader)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_movielens_crlf(tmp_path):
    p = write(tmp_path / "ratings.csv", f"{ML_HEADER}\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n")
    assert detect_format(p) == "movielens"
    df = read_ratings_pandas(p)
    assert_dtypes(df)
    assert rows(df) == [(1, 31, 2.5, 1260759144), (1, 1029, 3.0, 1260759179)]


@pytest.mark.unit
def test_movielens_lf_no_final_newline_and_trailing_blank_lines(tmp_path):
    a = write(tmp_path / "a.csv", f"{ML_HEADER}\n7,8,0.5,0\n9,10,5.0,99")
    b = write(tmp_path / "b.csv", f"{ML_HEADER}\n7,8,4.5,1\n\n  \n\t\n")
    assert rows(read_ratings_pandas(a)) == [(7, 8, 0.5, 0), (9, 10, 5.0, 99)]
    assert rows(read_ratings_pandas(b)) == [(7, 8, 4.5, 1)]


@pytest.mark.unit
def test_udata(tmp_path):
    p = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    assert detect_format(p) == "udata"
    df = read_ratings_pandas(p, scale=WHOLE_STAR)
    assert rows(df) == [(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742), (22, 377, 1.0, 878887116)]
    assert rows(read_ratings_pandas(p, fmt="udata")) == rows(df)


@pytest.mark.unit
def test_csv_without_timestamp_gives_null_ts(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n5,6,4.0\n9223372036854775807,1,0.5\n")
    assert detect_format(p) == "csv"
    df = read_ratings_pandas(p)
    assert_dtypes(df)
    assert rows(df) == [(5, 6, 4.0, None), (9223372036854775807, 1, 0.5, None)]


@pytest.mark.unit
def test_csv_with_timestamp_and_empty_timestamp(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating,timestamp\n5,6,4.0,1700000000\n7,8,1.5,\n")
    assert rows(read_ratings_pandas(p, fmt="csv")) == [(5, 6, 4.0, 1700000000), (7, 8, 1.5, None)]


@pytest.mark.unit
def test_lexical_forms_accepted(tmp_path):
    # leading zeros, a plus sign, "4." and ".5" and an exponent are numbers; a UTF-8 BOM before the header is ignored
    text = "\ufeffuser,item,rating,timestamp\n007,+3,4.,+12\n1,2,.5,0\n3,4,3.5e0,5\n"
    p = write(tmp_path / "r.csv", text)
    assert rows(read_ratings_pandas(p)) == [(7, 3, 4.0, 12), (1, 2, 0.5, 0), (3, 4, 3.5, 5)]


@pytest.mark.unit
def test_parquet(tmp_path):
    p = write_parquet(
        tmp_path / "r.parquet",
        {
            "user": pa.array([1, 2], pa.int64()),
            "item": pa.array([10, 20], pa.int32()),
            "rating": pa.array([3.5, 4.0], pa.float32()),
            "timestamp": pa.array([1000, None], pa.int64()),
        },
    )
    assert detect_format(p) == "parquet"
    df = read_ratings_pandas(p)
    assert_dtypes(df)
    assert rows(df) == [(1, 10, 3.5, 1000), (2, 20, 4.0, None)]


@pytest.mark.unit
def test_parquet_without_timestamp(tmp_path):
    p = write_parquet(tmp_path / "r.parquet", {"user": [3], "item": [4], "rating": [5.0]})
    assert rows(read_ratings_pandas(p, fmt="parquet")) == [(3, 4, 5.0, None)]


@pytest.mark.unit
def test_folder_of_files_mixed_formats_skips_hidden_and_underscore(tmp_path):
    d = tmp_path / "incoming"
    d.mkdir()
    write(d / "a.csv", f"{ML_HEADER}\r\n1,2,3.0,10\r\n")
    write(d / "b.data", "3\t4\t2\t20\n")
    write(d / "c.csv", "user,item,rating\n5,6,4.5\n")
    write_parquet(d / "d.parquet", {"user": [7], "item": [8], "rating": [1.0], "ts": [40]})
    write(d / "_SUCCESS", "")
    write(d / ".a.csv.crc", "garbage")
    assert list_rating_files(str(d)) == [str(d / n) for n in ("a.csv", "b.data", "c.csv", "d.parquet")]
    assert rows(read_ratings_pandas(str(d))) == [
        (1, 2, 3.0, 10),
        (3, 4, 2.0, 20),
        (5, 6, 4.5, None),
        (7, 8, 1.0, 40),
    ]
    # a list of paths, one given as a file:// URI
    both = read_ratings_pandas([str(d / "c.csv"), "file://" + str(d / "a.csv")])
    assert rows(both) == [(5, 6, 4.5, None), (1, 2, 3.0, 10)]


@pytest.mark.unit
def test_folder_rules(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_rating_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no rating files"):
        list_rating_files(str(tmp_path / "empty"))
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    write(tmp_path / "nested" / "a.csv", f"{ML_HEADER}\n1,2,3,4\n")
    with pytest.raises(ValueError, match="sub-folder 'sub'"):
        list_rating_files(str(tmp_path / "nested"))
    p = write(tmp_path / "a.csv", f"{ML_HEADER}\n1,2,3,4\n")
    with pytest.raises(ValueError, match="more than once"):
        read_ratings_pandas([p, p])


@pytest.mark.unit
def test_whole_star_scale_and_custom_scale(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,4\n1,3,2.5\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(p, scale=WHOLE_STAR)
    assert (e.value.line, e.value.rule) == (3, "rating_on_step")
    ten = RatingScale(1, 10, 1)
    q = write(tmp_path / "q.csv", "user,item,rating\n1,2,10\n")
    assert rows(read_ratings_pandas(q, scale=ten)) == [(1, 2, 10.0, None)]


# ---------------------------------------------------------------------------------------------------------
# Bad rows: exact file, line and rule (pandas reader)
# ---------------------------------------------------------------------------------------------------------

GOOD = "1,2,3.5,100\n"
# (bad line, rule, detail) -- the bad line is written as line 4 of a ratings.csv (header = line 1)
BAD_LINES = [
    ("1,2,7.0,100", "rating_on_scale", "rating 7.0 is outside [0.5, 5]"),
    ("1,2,3.3,100", "rating_on_step", "rating 3.3 is not on the scale's 0.5 steps from 0.5"),
    ("0,2,3.5,100", "id_range", "user 0 is not in 1..9223372036854775807"),
    ("1,-4,3.5,100", "id_range", "item -4 is not in 1..9223372036854775807"),
    ("1,abc,3.5,100", "id_integer", "item 'abc' is not an integer"),
    ("1,2.0,3.5,100", "id_integer", "item '2.0' is not an integer"),
    (
        "9223372036854775808,2,3.5,100",
        "id_range",
        "user 9223372036854775808 is not in 1..9223372036854775807",
    ),
    ("1,2,3.5", "field_count", "expected 4 fields separated by ',', found 3 in '1,2,3.5'"),
    ("1,2,3.5,100,7", "field_count", "expected 4 fields separated by ',', found 5 in '1,2,3.5,100,7'"),
    ("1,2,NaN,100", "rating_finite", "rating NaN is not a finite number"),
    ("1,2,1e999,100", "rating_finite", "rating 1e999 is not a finite number"),
    ("1,2,four,100", "rating_number", "rating 'four' is not a number"),
    ("1,2, 3.5,100", "rating_number", "rating ' 3.5' is not a number"),
    ("1,2,3.5,-1", "timestamp_range", "timestamp -1 is negative"),
    ("1,2,3.5,1.5e9", "timestamp_integer", "timestamp '1.5e9' is not an integer (epoch seconds)"),
    ("1,2,3.5,", "timestamp_integer", "timestamp '' is not an integer (epoch seconds)"),
    (
        '1,"2,3.5,100',
        "csv_quoting",
        'misplaced double quote in \'1,"2,3.5,100\': RFC 4180 quotes a whole field ("4.5"), doubles a quote '
        "inside it and closes it on the same line",
    ),
    ('"1"x,2,3.5,100', "csv_quoting", None),
    ('"1","2","3,5","100"', "rating_number", "rating '3,5' is not a number"),
    ('"1","2","3.5","100","7"', "field_count", None),
    (ML_HEADER, "repeated_header", f"the header '{ML_HEADER}' appears again after line 1"),
]


def bad_file(tmp_path, bad_line: str, crlf: bool = False) -> str:
    eol = "\r\n" if crlf else "\n"
    lines = [ML_HEADER, "1,2,3.5,100", "2,3,4.0,101", bad_line, "3,4,0.5,102"]
    return write(tmp_path / "ratings.csv", eol.join(lines) + eol)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("bad_line", "rule", "detail"), BAD_LINES, ids=[b[1] + ":" + b[0][:12] for b in BAD_LINES]
)
def test_bad_line_pandas(tmp_path, bad_line, rule, detail):
    path = bad_file(tmp_path, bad_line, crlf=rule == "rating_on_scale")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(path)
    err = e.value
    assert (err.path, err.line, err.rule) == (path, 4, rule)
    if detail is not None:
        assert err.detail == detail
        assert str(err) == f"{path} line 4: rule {rule}: {detail}"
    assert isinstance(err, ValueError)


@pytest.mark.unit
def test_message_format_example(tmp_path):
    body = "".join(f"{u},1,4.0,{u}\n" for u in range(1, 16))  # lines 2..16
    path = write(tmp_path / "ratings.csv", f"{ML_HEADER}\n{body}16,1,7.0,16\n")
    with pytest.raises(
        RatingsFormatError,
        match=r"ratings\.csv line 17: rule rating_on_scale: rating 7\.0 is outside \[0\.5, 5\]$",
    ):
        read_ratings_pandas(path)


@pytest.mark.unit
def test_unknown_header_and_named_format_mismatch(tmp_path):
    p = write(tmp_path / "x.csv", "u,i,r,t\n1,2,3,4\n")
    with pytest.raises(RatingsFormatError) as e:
        detect_format(p)
    assert (e.value.line, e.value.rule) == (1, "known_header")
    with pytest.raises(RatingsFormatError, match="line 1: rule known_header: format movielens needs header"):
        read_ratings_pandas(write(tmp_path / "y.csv", "user,item,rating\n1,2,3\n"), fmt="movielens")
    with pytest.raises(RatingsFormatError, match="rule known_header: the file is empty"):
        read_ratings_pandas(write(tmp_path / "empty.csv", ""))
    with pytest.raises(RatingsFormatError, match="rule known_header: not a Parquet file"):
        read_ratings_pandas(p, fmt="parquet")
    with pytest.raises(ValueError, match="unknown ratings format"):
        read_ratings_pandas(p, fmt="tsv")
    # a udata file named as such: its first line is data, so a header there breaks a data rule
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(write(tmp_path / "u.data", "user\titem\trating\tts\n"), fmt="udata")
    assert (e.value.line, e.value.rule, e.value.detail) == (1, "id_integer", "user 'user' is not an integer")


@pytest.mark.unit
def test_udata_wrong_field_count_and_first_bad_file_wins(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    write(d / "a.data", "1\t2\t3\t4\n")
    write(d / "b.data", "1\t2\t3\t4\n5\t6\t4\n")
    write(d / "c.data", "1\t2\t9\t4\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(str(d))
    err = e.value
    assert (err.path, err.line, err.rule) == (str(d / "b.data"), 2, "field_count")
    assert err.detail == "expected 4 fields separated by tab, found 3 in '5\\t6\\t4'"


@pytest.mark.unit
def test_parquet_bad_row(tmp_path):
    p = write_parquet(
        tmp_path / "r.parquet",
        {"user": [1, 2, 0], "item": [5, 6, 7], "rating": [1.0, 2.0, 3.0], "timestamp": [1, 2, 3]},
    )
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(p)
    assert str(e.value) == f"{p} row 3: rule id_range: user 0 is not in 1..9223372036854775807"
    q = write_parquet(tmp_path / "q.parquet", {"user": [1, 2], "item": [5, 6], "rating": [1.0, math.nan]})
    with pytest.raises(RatingsFormatError, match=r"row 2: rule rating_finite: rating nan is not a finite"):
        read_ratings_pandas(q)
    r = write_parquet(tmp_path / "s.parquet", {"user": [1], "item": [5], "rating": [1.0], "extra": [1]})
    with pytest.raises(RatingsFormatError, match="rule known_header: Parquet columns"):
        read_ratings_pandas(r)
    s = write_parquet(
        tmp_path / "t.parquet", {"user": pa.array([1, None]), "item": [5, 6], "rating": [1.0, 2.0]}
    )
    with pytest.raises(RatingsFormatError, match="row 2: rule id_integer: user is null"):
        read_ratings_pandas(s)


@pytest.mark.unit
def test_chunk_boundaries(tmp_path, monkeypatch):
    """Tiny chunks: CRLF pairs and lines split across reads, line numbers continue, trailing blanks allowed."""
    monkeypatch.setattr(loader, "_CHUNK_BYTES", 5)
    p = write(tmp_path / "r.csv", f"{ML_HEADER}\r\n1,2,3.5,100\r\n22,33,4.5,200\r\n\r\n\r\n")
    assert rows(read_ratings_pandas(p)) == [(1, 2, 3.5, 100), (22, 33, 4.5, 200)]
    q = write(tmp_path / "q.csv", f"{ML_HEADER}\r\n1,2,3.5,100\r\n\r\n\r\n22,33,4.5,200\r\n1,2,0,1\r\n")
    with pytest.raises(RatingsFormatError) as e:  # blank lines are skipped and keep their line numbers
        read_ratings_pandas(q)
    assert (e.value.line, e.value.rule) == (6, "rating_on_scale")
    r = write(tmp_path / "r2.csv", f"{ML_HEADER}\r1,2,3.5,100\r22,33,4.5,200\r1,2,0,1\r")  # lone CR endings
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(r)
    assert (e.value.line, e.value.rule) == (4, "rating_on_scale")


# ---------------------------------------------------------------------------------------------------------
# The three implementations of the rules agree (scalar Python, pyarrow, Spark)
# ---------------------------------------------------------------------------------------------------------

TOKENS = [
    "", "0", "1", "7", "-1", "+1", "-0", "007", "1.0", "3.5", "3.25", "3.3", "0.5", "5", "5.0", "5.5", "0.49999999999",
    "4.0000000001", "4.00000000001", ".5", "5.", "3.5e0", "35E-1", "1e999", "-1e999", "NaN", "nan", "-Infinity",
    "inf", "abc", " 1", "1 ", "1_0", "0x10", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "18446744073709551616", "00009223372036854775807", "1e5", "½", "١",
]  # fmt: skip


def scalar_ok(fields: list[str], layout) -> bool:
    return rules.check_fields(fields, layout, HALF_STAR) is None


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), min_size=4, max_size=4),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_rules_match_scalar_rules(rows_):
    for layout in (rules.MOVIELENS, rules.CSV_TS, rules.CSV):
        cols = [pa.array([r[j] for r in rows_], pa.large_string()) for j in range(layout.n_fields)]
        ok, _ = loader.pa_ok_and_values(cols, layout, HALF_STAR)
        expected = [scalar_ok(r[: layout.n_fields], layout) for r in rows_]
        assert ok.tolist() == expected


@pytest.mark.spark
def test_spark_rules_match_scalar_rules(spark, tmp_path):
    rng = np.random.default_rng(3)
    lines = {",".join(rng.choice(TOKENS, 4)) for _ in range(400)}
    lines |= (
        {f"1,2,{t},3" for t in TOKENS} | {f"1,{t},3.5,3" for t in TOKENS} | {f"1,2,3.5,{t}" for t in TOKENS}
    )
    lines |= {"1,2,3.5", "1,2,3.5,4,5", "1\t2\t3.5\t4"}
    lines.discard("")
    layout = rules.CSV_TS
    path = write(tmp_path / "r.csv", layout.header + "\n" + "\n".join(sorted(lines)) + "\n")
    group = spark_reader.text_group(spark, layout, [path], HALF_STAR)
    got = {r["value"]: r["_ok"] for r in group.annotated.select("value", "_ok").collect()}
    got.pop(layout.header)
    expected = {line: rules.check_line(line, layout, HALF_STAR) is None for line in lines}
    assert got == expected
    assert sum(expected.values()) > 20  # the corpus has valid lines too


QUOTED_TOKENS = [*TOKENS[:12], '"', '""', '"1', '1"', '"1"', '"3.5"', '""""', '"1,2"', '"a""b"', ",", '"\t"']


def scalar_line_ok(line: str, layout) -> bool:
    return rules.check_line(line, layout, HALF_STAR) is None


def vectorised_lines_ok(lines: list[str], layout) -> list[bool]:
    arr = pa.array(lines, pa.large_string())
    f = ratings_arrow.split_fields_arrow(arr, layout.sep)
    good = (f.counts() == layout.n_fields) & ~f.bad_quoting
    if layout.header is not None:
        good &= ~ratings_arrow.repeated_headers(arr, f, layout)
    out = good.copy()
    idx = np.flatnonzero(good)
    if idx.size:
        sub = ratings_arrow.Fields(f.parts.take(pa.array(idx)), f.bad_quoting[idx], f.quoted)
        ok, _ = loader.pa_ok_and_values(sub.columns(layout), layout, HALF_STAR)
        out[idx] = ok
    return out.tolist()


REORDERED = rules.header_layout(["timestamp", "rating", "item", "user"])


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(QUOTED_TOKENS) | st.text(alphabet='"1,.5 ', max_size=4), min_size=1, max_size=5
        ),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_quoting_and_column_order_match_scalar_rules(rows_):
    """RFC 4180 quoting and a reordered header: the pyarrow reader and the contract's splitter accept exactly
    the lines the scalar rules accept."""
    lines = [",".join(r) for r in rows_]
    lines = [x for x in lines if not rules.BLANK_RE.fullmatch(x)] or ["1,2,3.5,4"]
    for layout in (rules.CSV_TS, rules.CSV, REORDERED):
        assert vectorised_lines_ok(lines, layout) == [scalar_line_ok(x, layout) for x in lines]


@pytest.mark.unit
def test_tool_written_shapes(tmp_path):
    """csv.QUOTE_ALL, a header in another order, blank lines anywhere, gzip/bzip2 by magic bytes or suffix."""
    expected = [(1, 10, 3.5, 964982703), (2, 11, 4.0, None)]
    quoted = write(
        tmp_path / "q.csv",
        '"user","item","rating","timestamp"\r\n"1","10","3.5","964982703"\r\n"2","11","4.0",""\r\n',
    )
    reordered = write(tmp_path / "r.csv", "timestamp,rating,item,user\n964982703,3.5,10,1\n,4.0,11,2\n")
    blank = write(
        tmp_path / "b.csv", "\nuser,item,rating,timestamp\n\n1,10,3.5,964982703\n \n\t\n2,11,4.0,\n\n"
    )
    text = b"user,item,rating,timestamp\n1,10,3.5,964982703\n2,11,4.0,\n"
    gz_named = write(tmp_path / "g.csv.gz", gzip.compress(text, mtime=0))
    gz_plain_name = write(tmp_path / "g.csv", gzip.compress(text, mtime=0))
    bz = write(tmp_path / "z", bz2.compress(text))
    for p in (quoted, reordered, blank, gz_named, gz_plain_name, bz):
        assert rows(read_ratings_pandas(p)) == expected, p
    ml = write(tmp_path / "ml.csv", "movieId,userId,timestamp,rating\n10,1,964982703,3.5\n11,2,9,4.0\n")
    assert detect_format(ml) == "movielens"
    assert rows(read_ratings_pandas(ml, fmt="movielens")) == [(1, 10, 3.5, 964982703), (2, 11, 4.0, 9)]
    with pytest.raises(RatingsFormatError, match="format csv needs header"):
        read_ratings_pandas(ml, fmt="csv")
    # a plain file named .gz is read as what it is
    assert rows(read_ratings_pandas(write(tmp_path / "plain.gz", text))) == expected


@pytest.mark.unit
def test_compressed_files_that_stay_refused(tmp_path):
    text = b"user,item,rating,timestamp\n" + b"1,10,3.5,964982703\n" * 100
    cut = write(tmp_path / "cut.csv.gz", gzip.compress(text, mtime=0)[:-20])
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(cut)
    assert (
        str(e.value)
        == f"{cut}: rule text_or_parquet: truncated gzip data: the file ends inside the compressed stream"
    )
    z = write(tmp_path / "a.zip", b"PK\x03\x04" + bytes(60))
    with pytest.raises(
        RatingsFormatError, match="rule text_or_parquet: a ZIP archive: compressed partitions"
    ):
        read_ratings_pandas(z)
    bad = write(tmp_path / "bad.csv.bz2", bz2.compress(text + b"1,11,9.5,964982703\n"))
    with pytest.raises(RatingsFormatError) as e:
        read_ratings_pandas(bad)
    assert (e.value.line, e.value.rule) == (102, "rating_on_scale")


# ---------------------------------------------------------------------------------------------------------
# Spark reader
# ---------------------------------------------------------------------------------------------------------


def spark_rows(df) -> list[tuple]:
    return [tuple(r) for r in df.collect()]


@pytest.mark.spark
def test_spark_source_column_tells_the_entries_of_a_batch_apart(spark, tmp_path):
    """``source=``: one read (one validation) for a batch; each row says which entry of ``paths`` it came from:
    a file, a folder of mixed formats, a file whose name needs escaping, a header-only file."""
    d = tmp_path / "folder [1]"
    d.mkdir()
    write(d / "a.csv", f"{ML_HEADER}\r\n1,2,3.0,10\r\n")
    write_parquet(d / "b.parquet", {"user": [3], "item": [4], "rating": [4.0], "ts": [20]})
    write(tmp_path / "x y.csv", "user,item,rating\n5,6,4.5\n7,8,1.0\n")
    write(tmp_path / "empty.csv", f"{ML_HEADER}\n")
    write(tmp_path / "z.data", "9\t10\t2\t30\n")
    paths = [str(tmp_path / "x y.csv"), str(d), str(tmp_path / "empty.csv"), str(tmp_path / "z.data")]
    df = read_ratings(spark, paths, source="k")
    assert df.columns == [*RATINGS_SCHEMA.fieldNames(), "k"]
    assert sorted(spark_rows(df.select("k", "user"))) == [(0, 5), (0, 7), (1, 1), (1, 3), (3, 9)]
    assert read_ratings(spark, paths).schema == RATINGS_SCHEMA  # without it, nothing added


@pytest.mark.spark
def test_spark_all_formats_in_one_folder(spark, tmp_path):
    d = tmp_path / "in put"  # a space in the path
    d.mkdir()
    write(d / "a.csv", f"{ML_HEADER}\r\n1,2,3.0,10\r\n11,12,0.5,11\r\n")
    write(d / "b.data", "3\t4\t2\t20\n")
    write(d / "c.csv", "user,item,rating\n5,6,4.5\n")
    write(d / "d.csv", "user,item,rating,timestamp\n9223372036854775807,6,4.5,\n")
    write_parquet(
        d / "e.parquet", {"user": [7], "item": pa.array([8], pa.int32()), "rating": [1.0], "ts": [40]}
    )
    write(d / "_SUCCESS", "")
    df = read_ratings(spark, str(d))
    assert df.schema == RATINGS_SCHEMA
    assert sorted(spark_rows(df), key=lambda r: r[0]) == [
        (1, 2, 3.0, 10),
        (3, 4, 2.0, 20),
        (5, 6, 4.5, None),
        (7, 8, 1.0, 40),
        (11, 12, 0.5, 11),
        (9223372036854775807, 6, 4.5, None),
    ]


# (layout, bad line, rule, detail): each written as line 4 of a small file of that layout; every rule is
# covered for both readers by BAD_LINES (pandas) and the rule-parity test (Spark), so Spark gets one per layout
SPARK_CASES = [
    ("movielens", "1,2,7.0,100", "rating_on_scale", "rating 7.0 is outside [0.5, 5]"),
    ("udata", "1\t2\t3.5", "field_count", "expected 4 fields separated by tab, found 3 in '1\\t2\\t3.5'"),
    (
        "csv",
        "9223372036854775808,2,3.5,",
        "id_range",
        "user 9223372036854775808 is not in 1..9223372036854775807",
    ),
    ("csv", "1,2,NaN,", "rating_finite", "rating NaN is not a finite number"),
]
FIRST_LINES = {
    "movielens": [ML_HEADER, "1,2,3.5,100", "2,3,4.0,101"],
    "udata": ["1\t2\t3.5\t100", "2\t3\t4.0\t101", "3\t3\t4.0\t102"],
    "csv": ["user,item,rating,timestamp", "1,2,3.5,", "2,3,4.0,101"],
}


@pytest.mark.spark
@pytest.mark.parametrize(
    ("fmt", "bad_line", "rule", "detail"), SPARK_CASES, ids=[f"{c[0]}-{c[2]}" for c in SPARK_CASES]
)
def test_bad_line_spark(spark, tmp_path, fmt, bad_line, rule, detail):
    lines = [*FIRST_LINES[fmt], bad_line, FIRST_LINES[fmt][-1]]
    path = write(tmp_path / "ratings.txt", "\r\n".join(lines) + "\r\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, path)
    err = e.value
    assert (err.path, err.line, err.rule, err.detail) == (path, 4, rule, detail)
    assert str(err) == f"{path} line 4: rule {rule}: {detail}"


@pytest.fixture
def small_splits(spark):
    """Make Spark cut files into ~2 KB splits, so that line numbers must be stitched across splits."""
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    old = {k: spark.conf.get(k) for k in keys}
    for k in keys:
        spark.conf.set(k, "2048")
    yield
    for k, v in old.items():
        spark.conf.set(k, v)


def many_lines(n: int) -> list[str]:
    return [f"{u},{u % 97 + 1},{(u % 10 + 1) / 2:.1f},{1_000_000 + u}" for u in range(1, n + 1)]


@pytest.mark.spark
def test_spark_line_numbers_across_splits(spark, tmp_path, small_splits):
    lines = many_lines(500)  # ~10 KB: 5 splits
    lines[449] = "450,1,3.5,-7"  # physical line 451
    path = write(tmp_path / "big.csv", "\r\n".join([ML_HEADER, *lines]) + "\r\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, path)
    assert str(e.value) == f"{path} line 451: rule timestamp_range: timestamp -7 is negative"

    lines = many_lines(500)
    lines[299] = ""  # physical line 301: blank, followed by more lines: skipped, it keeps its number
    lines[399] = "400,1,3.5,-7"  # physical line 401
    blank = write(tmp_path / "blank.csv", "\n".join([ML_HEADER, *lines]) + "\n\n\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, blank)
    assert (e.value.line, e.value.rule) == (401, "timestamp_range")
    lines[399] = "400,1,3.5,7"
    write(tmp_path / "blank.csv", "\n".join([ML_HEADER, *lines]) + "\n\n\n")
    assert read_ratings(spark, blank).count() == 499

    ok = write(tmp_path / "ok.csv", "\n".join([ML_HEADER, *many_lines(500)]) + "\n\n \n")
    assert tuple(read_ratings(spark, ok).selectExpr("max(ts)", "count(user)").first()) == (1_000_500, 500)


@pytest.mark.spark
def test_spark_repeated_header_and_first_bad_file(spark, tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    write(d / "a.csv", f"{ML_HEADER}\n1,2,3.5,1\n")
    # "cat x.csv y.csv z.csv": the header again at lines 3 and 5
    write(d / "b.csv", f"{ML_HEADER}\n1,2,3.5,1\n{ML_HEADER}\n1,3,4.0,2\n{ML_HEADER}\n1,4,4.0,3\n")
    write(d / "c.csv", f"{ML_HEADER}\n0,2,3.5,1\n")
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, str(d))
    err = e.value
    assert (err.path, err.line, err.rule) == (str(d / "b.csv"), 3, "repeated_header")


@pytest.mark.spark
def test_spark_parquet_bad_row(spark, tmp_path):
    p = write_parquet(
        tmp_path / "r.parquet",
        {
            "user": [1, 2, 3, 4],
            "item": [5, 6, 7, 8],
            "rating": [1.0, 2.0, 2.5, 9.5],
            "timestamp": [1, 2, 3, 4],
        },
    )
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, p)
    assert str(e.value) == f"{p} row 4: rule rating_on_scale: rating 9.5 is outside [0.5, 5]"


@pytest.mark.spark
def test_spark_guard_when_file_changes_after_validation(spark, tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\n1,2,3.5\n")
    df = read_ratings(spark, path)
    assert spark_rows(df) == [(1, 2, 3.5, None)]
    write(path, "user,item,rating\n1,2,8.5\n")
    with pytest.raises(Exception, match="ratings changed after validation"):
        df.collect()


@pytest.mark.unit
def test_pandas_matches_file_order_and_values_of_spark_free_path(tmp_path):
    """read_ratings_pandas keeps file order then line order (no sorting)."""
    p = write(tmp_path / "r.csv", "user,item,rating,timestamp\n9,1,1.0,5\n2,1,2.0,3\n5,1,3.0,4\n")
    df = read_ratings_pandas(p)
    assert df["user"].tolist() == [9, 2, 5]
    assert df["ts"].tolist() == [5, 3, 4]
    assert os.path.basename(p) == "r.csv"


@pytest.mark.spark
def test_spark_rules_match_scalar_rules_with_quotes_and_column_order(spark, tmp_path):
    rng = np.random.default_rng(5)
    lines = {",".join(rng.choice(QUOTED_TOKENS, rng.integers(3, 6))) for _ in range(400)}
    lines |= {'"1","2","3.5",""', '"964982703","3.5","10","1"', '"3","4.5","1","2"', '3,"4.5",1,"2"'}
    lines = {x for x in lines if not rules.BLANK_RE.fullmatch(x)}
    layout = REORDERED
    path = write(tmp_path / "r.csv", layout.header + "\n" + "\n".join(sorted(lines)) + "\n")
    group = spark_reader.text_group(spark, layout, [path], HALF_STAR)
    got = {r["value"]: r["_ok"] for r in group.annotated.where("NOT _hdr").select("value", "_ok").collect()}
    expected = {
        line: scalar_line_ok(line, layout) for line in lines if not rules.is_repeated_header(line, layout)
    }
    assert got == expected
    assert sum(expected.values()) >= 3


@pytest.mark.spark
def test_spark_tool_written_shapes(spark, tmp_path):
    """Quoted and reordered CSV, blank lines, gzip under .gz (read by Spark) and gzip/bzip2 without their suffix
    (read on the driver), in one call; an error in a driver-read file keeps its exact line."""
    text = b"user,item,rating,timestamp\n1,10,3.5,964982703\n2,11,4.0,\n"
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.csv", '"user","item","rating","timestamp"\n"1","10","3.5","964982703"\n"2","11","4.0",""\n')
    write(d / "b.csv", "\ntimestamp,rating,item,user\n\n964982703,3.5,10,1\n \n,4.0,11,2\n\n")
    write(d / "c.csv.gz", gzip.compress(text, mtime=0))
    write(d / "d.csv", gzip.compress(text, mtime=0))
    write(d / "e.data", bz2.compress(b"1\t10\t3\t964982703\n"))
    write(d / "f.gz", text)  # plain text under a codec suffix
    df = read_ratings(spark, str(d), source="k")
    got = sorted(spark_rows(df))
    per_file = [(1, 10, 3.5, 964982703), (2, 11, 4.0, None)]
    assert got == sorted([(*r, 0) for r in per_file] * 5 + [(1, 10, 3.0, 964982703, 0)])
    bad = write(tmp_path / "bad.csv", gzip.compress(text + b"\n\n3,12,0.1,1\n", mtime=0))
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, bad)
    assert (e.value.path, e.value.line, e.value.rule) == (bad, 6, "rating_on_scale")
    bad_q = write(tmp_path / "bad_q.csv", text + b'3,"12,4.0,1\n')
    with pytest.raises(RatingsFormatError) as e:
        read_ratings(spark, bad_q)
    assert (e.value.line, e.value.rule) == (4, "csv_quoting")


@pytest.mark.spark
def test_spark_guard_spares_blank_and_header_lines_under_a_later_filter(spark, tmp_path):
    """The hold-out split's hash filter of ``user, item`` is pushed below the reader's blank/header filter by
    Spark's optimizer: blank and header lines must not trip the changed-after-validation guard there."""
    from streamrec.spark import split

    lines = many_lines(300)
    lines[100] = ""
    path = write(tmp_path / "r.csv", "\n".join(["", ML_HEADER, *lines]) + "\n\n \n")
    df = read_ratings(spark, path)
    train, held = split.split(df, 0.2, 42)
    assert train.count() + held.count() == 299
    assert held.count() > 0

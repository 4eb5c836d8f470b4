"""The bad-input corpus (``tests/corpus/``): every partition gets the outcome its manifest documents.

``tests/corpus/EXPECTED.json`` (written with the files by ``tests/corpus/make_corpus.py``) says for each corpus
partition: accepted, accepted after a stated normalisation, quarantined with a rule and a reason, or ignored (a
hidden name). The unit tests drop each one into ``ratings/incoming/`` of a fresh local bucket and run what the
update DAG runs (``list_incoming`` -> ``check_partition`` -> ``quarantine``); the raw files must be
byte-identical afterwards. Accepted partitions must be read by the loaders (pandas here, Spark in the ``spark``
test) into exactly the values the contract checked. The Airflow test runs the whole corpus through the update
DAG (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from streamrec.core.schema import RatingScale
from streamrec.pipeline.contract import INCOMING, check_partition, list_incoming, parse_partition, quarantine
from streamrec.storage.bucket import Bucket
from streamrec.storage.ratings import read_ratings_pandas

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus.corpus_files import drop as drop_entry  # noqa: E402
from corpus.corpus_files import sha256_tree  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"
MANIFEST = json.loads((CORPUS / "EXPECTED.json").read_text(encoding="utf-8"))
NOW = MANIFEST["now_ts"]
CASES = {c["name"]: c for c in MANIFEST["cases"]}
COMMITTED = [n for n, c in CASES.items() if "generated" not in c]
ACCEPTED = [n for n in COMMITTED if CASES[n]["outcome"] in ("accepted", "normalised")]


def scale_of(case: dict) -> RatingScale:
    return RatingScale.parse(case.get("scale", MANIFEST["default_scale"]))


def drop(root: Path, name: str, mtime: float = 1.7e9) -> Path:
    """Copy corpus entry ``name`` into ``<root>/ratings/incoming/`` (a file, or a folder with its files)."""
    return drop_entry(root / INCOMING, name, mtime)


def assert_quarantined(bucket: Bucket, root: Path, part, check, case: dict) -> None:
    """The documented rule and reason; reason.txt + report.json naming the file (and line) and the rule; the
    quarantined copies are byte-identical to the raw files."""
    first = check.failed[0]
    assert first["expectation_type"] == case["rule"], check.reason
    assert case["reason"] in check.reason, check.reason
    assert "\n" not in check.reason
    fname = case.get("file", case["name"] if not (CORPUS / "files" / case["name"]).is_dir() else "")
    if fname:
        assert fname in check.reason, check.reason
        assert fname in (first["first"] or ""), first
    if "line" in case:
        assert (first["first"] or "").endswith(f"line {case['line']}"), first
        assert f"line {case['line']}" in check.reason, check.reason
    prefix = quarantine(bucket, part, check)
    qdir = root / prefix
    reason_txt = (qdir / "reason.txt").read_text(encoding="utf-8")
    assert reason_txt == check.reason + "\n"
    report = json.loads((qdir / "report.json").read_text(encoding="utf-8"))
    assert report["check"]["reason"] == check.reason
    assert report["check"]["failed"][0]["expectation_type"] == case["rule"]
    if fname:
        assert fname in report["check"]["failed"][0]["first"]
    src = root / part.key
    if src.is_dir():
        raw = {f"{part.key.rsplit('/', 1)[-1]}/{k}": v for k, v in sha256_tree(src).items()}
    else:
        raw = {src.name: hashlib.sha256(src.read_bytes()).hexdigest()}
    assert sha256_tree(qdir / "files") == raw


@pytest.mark.unit
def test_the_corpus_is_big_enough_and_its_manifest_complete() -> None:
    on_disk = {p.name for p in (CORPUS / "files").iterdir()}
    assert on_disk == set(COMMITTED), "every corpus file has a manifest entry and vice versa"
    assert len(CASES) >= 40
    for name, case in CASES.items():
        assert case["outcome"] in ("accepted", "normalised", "quarantined", "ignored"), name
        if case["outcome"] == "quarantined":
            assert case.get("rule") and case.get("reason"), name
        if case["outcome"] == "normalised":
            assert case.get("normalisation"), name
    for shape in ("quoted", "reordered", "blank-lines", "gzip", "bzip2", "bomb"):
        assert any(shape in name for name in COMMITTED), shape


@pytest.mark.unit
@pytest.mark.parametrize("name", COMMITTED)
def test_corpus_partition_gets_its_documented_outcome(tmp_path, name) -> None:
    case = CASES[name]
    root = tmp_path / "bucket"
    drop(root, name)
    incoming = root / INCOMING
    before = sha256_tree(incoming)
    bucket = Bucket.from_uri(root)
    parts = list_incoming(bucket)
    if case["outcome"] == "ignored":
        assert parts == []
        waiting: list[str] = []
        list_incoming(bucket, INCOMING, waiting=waiting)
        if case.get("waiting"):  # an unfinished upload: reported as waiting, picked up once renamed
            assert waiting and all(k.startswith(f"{INCOMING}/{name}") for k in waiting), waiting
        else:
            assert waiting == []
        assert sha256_tree(incoming) == before
        return
    [part] = parts
    if "partition_id_prefix" in case:
        assert part.id.startswith(case["partition_id_prefix"]) and ".." not in part.id, part.id
    check = check_partition(bucket, part, scale_of(case), NOW, build_docs=False)
    report = json.loads((root / check.report_key).read_text(encoding="utf-8"))
    assert report["check"] == check.as_dict()
    if case["outcome"] == "quarantined":
        assert not check.ok, check
        assert_quarantined(bucket, root, part, check, case)
    else:
        assert check.ok, check.reason
        assert check.n_rows == case["rows"]
        if "stated" in case:  # the report states the normalisation
            assert any(case["stated"] in n for n in check.normalised), check.normalised
            assert report["check"]["normalised"] == check.normalised
        # "accepted" means the loader (the update job's reader) reads exactly the values the contract checked
        checked = parse_partition(bucket, part).frame
        loaded = read_ratings_pandas(str(root / part.key), scale_of(case))
        pd.testing.assert_frame_equal(
            checked.reset_index(drop=True), loaded.reset_index(drop=True), check_dtype=False
        )
        assert not (root / "quarantine").exists()
    assert sha256_tree(incoming) == before, "raw files are never changed"


@pytest.mark.unit
def test_whole_corpus_at_once_every_file_accounted_for(tmp_path) -> None:
    """All committed partitions in one bucket, in one listing: each non-hidden one is exactly one partition,
    checked and either accepted or quarantined (what ``pipeline.check_and_select`` does over a run)."""
    root = tmp_path / "bucket"
    for k, name in enumerate(COMMITTED):
        drop(root, name, 1.7e9 + k)
    before = sha256_tree(root / INCOMING)
    bucket = Bucket.from_uri(root)
    parts = list_incoming(bucket)
    by_name = {p.key.rsplit("/", 1)[-1]: p for p in parts}
    assert set(by_name) == {n for n in COMMITTED if CASES[n]["outcome"] != "ignored"}
    assert len({p.id for p in parts}) == len(parts)
    assert [p.key.rsplit("/", 1)[-1] for p in parts] == [n for n in COMMITTED if n in by_name], (
        "arrival order"
    )
    outcome = {}
    for name, part in by_name.items():
        case = CASES[name]
        check = check_partition(bucket, part, scale_of(case), NOW, build_docs=False)
        outcome[name] = "accepted" if check.ok else "quarantined"
        if not check.ok:
            assert case["reason"] in check.reason, (name, check.reason)
            quarantine(bucket, part, check)
    expected = {
        n: ("accepted" if CASES[n]["outcome"] == "normalised" else CASES[n]["outcome"]) for n in by_name
    }
    assert outcome == expected
    assert {p.name for p in (root / "quarantine").iterdir()} == {
        by_name[n].id for n, o in outcome.items() if o == "quarantined"
    }
    assert sha256_tree(root / INCOMING) == before


@pytest.mark.spark
@pytest.mark.parametrize("name", ACCEPTED)
def test_spark_loader_reads_what_the_contract_checked(spark, tmp_path, name) -> None:
    from streamrec.spark.ratings import read_ratings

    case = CASES[name]
    root = tmp_path / "bucket"
    drop(root, name)
    bucket = Bucket.from_uri(root)
    [part] = list_incoming(bucket)
    checked = parse_partition(bucket, part).frame
    loaded = read_ratings(spark, bucket.spark_uri(part.key), scale_of(case)).toPandas()
    cols = ["user", "item", "rating", "ts"]
    a = checked.astype({"ts": "Int64"}).sort_values(cols).reset_index(drop=True)
    b = loaded.astype({"ts": "Int64"}).sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


# ----------------------------------------------------------------------------------------------------------------
# a partition far larger than the check should hold in memory (generated, not committed)
# ----------------------------------------------------------------------------------------------------------------
_PEAK = textwrap.dedent(
    """
    import json, resource, sys
    from streamrec.storage.bucket import Bucket
    from streamrec.pipeline.contract import check_partition, list_incoming
    from streamrec.core.schema import HALF_STAR
    bucket = Bucket.from_uri(sys.argv[1])
    [part] = list_incoming(bucket)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = check_partition(bucket, part, HALF_STAR, 1795000000, build_docs=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"reason": c.reason, "rule": c.failed[0]["expectation_type"], "grew_mb": (after - before) / 1024}))
    """
)


@pytest.mark.unit
def test_too_large_partition_is_quarantined_without_being_read(tmp_path) -> None:
    """A 300 MB file (the check would need ~4 GB to parse it) is quarantined with rule ``partition_size``
    before any byte is read: the checking process's peak RSS grows by less than 50 MB."""
    root = tmp_path / "bucket"
    path = root / INCOMING / "too-large.csv"
    path.parent.mkdir(parents=True)
    block = "".join(f"{u},{u % 977 + 1},{(u % 10 + 1) / 2},{1600000000 + u}\n" for u in range(1, 40001))
    block_b = block.encode()
    with open(path, "wb") as fh:
        fh.write(b"user,item,rating,timestamp\n")
        while fh.tell() < 300 << 20:
            fh.write(block_b)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    env = {k: v for k, v in os.environ.items() if k != "STREAMREC_MAX_PARTITION_BYTES"}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    case = CASES["too-large.csv"]
    assert res["rule"] == case["rule"] and case["reason"] in res["reason"], res
    assert "too-large.csv" in res["reason"] and "STREAMREC_MAX_PARTITION_BYTES" in res["reason"]
    assert res["grew_mb"] < 50, res
    bucket = Bucket.from_uri(root)
    [part] = list_incoming(bucket)
    assert part.size > 300 << 20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.unit
def test_partition_size_limit_counts_a_folders_files_and_is_configurable(tmp_path, monkeypatch) -> None:
    root = tmp_path / "bucket"
    drop(root, "ok-folder")
    bucket = Bucket.from_uri(root)
    [part] = list_incoming(bucket)
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", str(part.size - 1))
    c = check_partition(bucket, part, RatingScale(), NOW, build_docs=False)
    assert not c.ok and c.failed[0]["expectation_type"] == "partition_size", c.reason
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", str(part.size))
    assert check_partition(bucket, part, RatingScale(), NOW, build_docs=False).ok
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", "lots")
    with pytest.raises(ValueError, match="STREAMREC_MAX_PARTITION_BYTES"):
        check_partition(bucket, part, RatingScale(), NOW, build_docs=False)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["bomb.csv.gz", "bomb-bzip2.csv"])
def test_compression_bombs_are_refused_without_filling_memory(tmp_path, monkeypatch, name) -> None:
    """The corpus bombs (72 MiB and 1 GiB of text) under a 4 MiB limit: refused with rule ``partition_size``
    naming the file; the check's peak Python memory stays near the limit, far below the expanded size."""
    root = tmp_path / "bucket"
    drop(root, name)
    monkeypatch.setenv("STREAMREC_MAX_PARTITION_BYTES", str(4 << 20))
    bucket = Bucket.from_uri(root)
    [part] = list_incoming(bucket)
    assert part.size < 100_000
    tracemalloc.start()
    try:
        check = check_partition(bucket, part, RatingScale(), NOW, build_docs=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert check.failed[0]["expectation_type"] == "partition_size"
    assert f"{name} is compressed and expands past 4.0 MiB" in check.reason, check.reason
    assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB"

"""Reliability of the data contract on the bad-input corpus: nothing lost, nothing crashed, every outcome as documented.

    python bench/reliability.py [--no-big] [--workdir DIR]

Drops every committed partition of ``tests/corpus/files/`` (plus, unless ``--no-big``, one generated file just
over ``STREAMREC_MAX_PARTITION_BYTES``) into ``ratings/incoming/`` of one fresh local bucket, lists it with
``contract.list_incoming`` and runs ``check_partition`` (+ ``quarantine`` when it fails) on each partition, as the
update DAG does. Counts, per corpus entry (a folder partition is one entry):

``tried``        entries dropped (hidden names included)
``accepted``     passed, documented ``accepted``          ``normalised``  passed, documented ``normalised``
``quarantined``  failed and quarantined (reason.txt + report.json written)
``ignored``      hidden names, not partitions (documented ``ignored``)
``crashed``      ``check_partition`` or ``quarantine`` raised
``lost``         a non-hidden entry that got no outcome (not listed, or listed but neither accepted nor
                 quarantined), or a raw file whose bytes changed
``as_documented`` / ``not_as_documented``  outcome (and rule and reason substring) equal to ``EXPECTED.json``

``faults``: each fault of ``bench/reliability_faults.py`` injected once (SIGKILL of the update job, S3 outage
during publish, failure after the pointer write, two publishes at once), ``faults_injected`` / ``faults_survived``
and the checks of each, plus the scheduler restart of ``bench/reliability_load.py`` (SIGKILL of the scheduler's
process tree mid-update, on a real Airflow); ``--no-faults`` skips them (~10 min). Then the cluster topology's
faults (``bench/cluster_faults.py``: a Spark worker killed mid-update, the Spark master down when an update is
due, PostgreSQL restarted mid-run, each compared with a clean run); ``--no-cluster-faults`` skips those.

``load``: ``bench/reliability_load.py``'s ``run_load``: ``--load-partitions`` (default 200) partitions dropped at
once on a real Airflow standalone, ``--per-run`` of them per update run; partitions/min, ratings/s, arrival
order, exactly once, peak memory per quarter. ``--load-partitions 0`` skips it (200 take ~11 min on 2 cores).

Prints one line per entry that is not as documented, then one JSON object on the last line, with the top-level
keys ``bench`` (``"reliability"``), ``corpus``, ``tried``, ``accepted``, ``normalised``, ``quarantined``,
``ignored``, ``crashed``, ``lost``, ``as_documented``, ``not_as_documented``, ``raw_files_unchanged``,
``check_seconds``, ``max_partition_bytes``, ``faults`` and ``load`` (null when skipped). Exit code 0 when
nothing crashed, nothing was lost, every outcome is as documented (and every fault survived, the load run
exactly once and in order, when they ran).

Smoke run (``tests/test_bench.py``; no Spark, no Airflow): ``--no-big --no-faults --load-partitions 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"
sys.path.insert(0, str(REPO / "tests"))

from corpus.corpus_files import drop, sha256_tree  # noqa: E402  (tests/corpus/corpus_files.py)


def run(work: Path, big: bool) -> dict:
    from streamrec.core.schema import RatingScale
    from streamrec.pipeline.contract import check_partition, list_incoming, max_partition_bytes, quarantine
    from streamrec.storage.bucket import Bucket

    manifest = json.loads((CORPUS / "EXPECTED.json").read_text(encoding="utf-8"))
    cases = {c["name"]: c for c in manifest["cases"]}
    incoming = work / "ratings" / "incoming"
    incoming.mkdir(parents=True)
    names = []
    for k, (name, case) in enumerate(cases.items()):
        dst = incoming / name
        if "generated" in case:
            if not big:
                continue
            with open(dst, "wb") as fh:  # just over the limit, streamed to disk
                fh.write(b"user,item,rating,timestamp\n")
                line = b"1,10,4.0,1600000000\n"
                block = line * 50_000
                while fh.tell() <= max_partition_bytes():
                    fh.write(block)
            os.utime(dst, (1.7e9 + k, 1.7e9 + k))
        else:
            drop(incoming, name, 1.7e9 + k)
        names.append(name)
    before = sha256_tree(incoming)
    bucket = Bucket.from_uri(work)
    t0 = time.perf_counter()
    parts = {p.key.rsplit("/", 1)[-1]: p for p in list_incoming(bucket)}
    counts = dict.fromkeys(("accepted", "normalised", "quarantined", "ignored", "crashed", "lost"), 0)
    off: list[str] = []
    for name in names:
        case = cases[name]
        part = parts.get(name)
        if part is None:
            got = "ignored" if name.startswith((".", "_")) or case["outcome"] == "ignored" else "lost"
            counts[got] += 1
            if got != case["outcome"]:
                off.append(f"{name}: {got}, documented {case['outcome']}")
            continue
        scale = RatingScale.parse(case.get("scale", manifest["default_scale"]))
        try:
            check = check_partition(bucket, part, scale, manifest["now_ts"], build_docs=False)
            if not check.ok:
                quarantine(bucket, part, check)
        except Exception as exc:  # counted, not hidden: this is what the benchmark measures
            counts["crashed"] += 1
            off.append(f"{name}: crashed: {type(exc).__name__}: {exc}")
            continue
        if check.ok:
            got = "normalised" if case["outcome"] == "normalised" else "accepted"
            counts[got] += 1
            if case["outcome"] not in ("accepted", "normalised"):
                off.append(f"{name}: accepted, documented {case['outcome']}")
        else:
            q = work / "quarantine" / part.id
            if not ((q / "reason.txt").is_file() and (q / "report.json").is_file()):
                counts["lost"] += 1
                off.append(f"{name}: failed but no reason.txt/report.json")
                continue
            counts["quarantined"] += 1
            rule = check.failed[0]["expectation_type"]
            if case["outcome"] != "quarantined" or case["rule"] != rule or case["reason"] not in check.reason:
                off.append(f"{name}: quarantined ({rule}: {check.reason}), documented {case}")
    changed = sorted(k for k, v in sha256_tree(incoming).items() if before.get(k) != v)
    counts["lost"] += len(changed)
    off.extend(f"{k}: raw bytes changed" for k in changed)
    return {
        "bench": "reliability",
        "corpus": str(CORPUS.relative_to(REPO)),
        "tried": len(names),
        **counts,
        "as_documented": len(names) - len(off),
        "not_as_documented": len(off),
        "raw_files_unchanged": not changed,
        "check_seconds": round(time.perf_counter() - t0, 1),
        "max_partition_bytes": max_partition_bytes(),
        "faults": None,
        "load": None,
        "_off": off,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-big", action="store_true", help="skip the generated file over the size limit")
    ap.add_argument("--workdir", help="where to build the bucket (default: a temporary folder, removed)")
    ap.add_argument("--no-faults", action="store_true", help="skip the injected faults")
    ap.add_argument(
        "--no-cluster-faults",
        action="store_true",
        help="skip the cluster topology's faults (~40 min on 2 cores)",
    )
    ap.add_argument("--load-partitions", type=int, default=200, help="partitions for the load run (0: skip)")
    ap.add_argument("--per-run", type=int, default=25, help="max_partitions_per_run of the load run")
    args = ap.parse_args(argv)
    if args.workdir:
        work = Path(args.workdir)
        if work.exists():
            shutil.rmtree(work)
        res = run(work, not args.no_big)
    else:
        with tempfile.TemporaryDirectory(prefix="streamrec-reliability-") as tmp:
            res = run(Path(tmp) / "bucket", not args.no_big)
    if not args.no_faults:
        sys.path.insert(0, str(REPO / "bench"))
        from reliability_faults import run_faults
        from reliability_load import run_scheduler_restart

        f = run_faults()
        details = list(f.get("details") or []) + [run_scheduler_restart()]
        if not args.no_cluster_faults:
            from reliability_faults import run_cluster_faults

            details += run_cluster_faults()["details"]
        res["faults"] = {
            "faults_injected": len(details),
            "faults_survived": sum(bool(d.get("survived")) for d in details),
            "details": details,
        }
    if args.load_partitions > 0:
        sys.path.insert(0, str(REPO / "bench"))
        from reliability_load import run_load

        res["load"] = run_load(n_partitions=args.load_partitions, max_partitions_per_run=args.per_run)
    for line in res.pop("_off"):
        print(line)
    print(json.dumps(res, default=str))
    ok = res["crashed"] == 0 and res["lost"] == 0 and res["not_as_documented"] == 0
    if res["faults"] is not None:
        ok = ok and res["faults"]["faults_survived"] == res["faults"]["faults_injected"]
    if res["load"] is not None:
        ok = ok and bool(res["load"].get("exactly_once")) and bool(res["load"].get("arrival_order_respected"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

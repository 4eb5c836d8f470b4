"""The bad-input corpus through the real update DAG (Airflow ``dag.test()``, the update job attached to a real
Spark Connect server as on the stacks, a local bucket),
with fake secrets in the environment that must never show up in a log or a report.

Bootstrap a model from generated data, drop the corpus into ``ratings/incoming/`` and run ``streamrec_update``
again and again until ``find_new`` finds nothing. Which corpus entries: every quarantined and ignored one, and the
accepted ones marked ``dag`` in ``tests/corpus/EXPECTED.json`` (8 of the 31, among them quoted, reordered,
blank-line and gzip-without-suffix files: each accepted partition costs Spark time on a loaded 2-core machine;
the other accepted entries differ from these only in what the unit tests already check against both loaders). Entries checked at another scale than the model's (half stars)
are left out. The quarantined ones arrive first, so the first run quarantines all of them and, with
``max_partitions_per_run`` 10 (catch-up batching), applies the accepted ones together in one candidate; the
second run finds nothing.

Asserted: no task instance failed (a quarantine is not a crash); every dropped partition is accounted for:
applied (in the published lineage) or quarantined with the documented reason, listed with that reason in
``reports/index.html``; hidden names are never touched; the raw files are byte-identical afterwards. Secrets:
``AWS_SECRET_ACCESS_KEY`` / ``AWS_ACCESS_KEY_ID`` and an Airflow connection's password
(``AIRFLOW_CONN_STREAMREC_SECRET_PROBE``, which the driver also reads through Airflow's connection API) are
set to recognisable random values; none appears anywhere under ``AIRFLOW_HOME``, in the bucket (reports,
manifests, quarantine) or in the driver's output. ``dag.test()`` runs the tasks in the driver process and writes
no per-task log files: every task's log lines (Airflow's, the task's prints, the jobs' output) go to the
driver's output, which is therefore the log that is scanned (~350,000 characters for this run).

This file is also the driver: ``python tests/test_corpus_dag.py WORKDIR`` (run in the Airflow environment).
"""

from __future__ import annotations

import html
import json
import os
import secrets
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from corpus.corpus_files import drop, sha256_tree  # noqa: E402
from e2e_support import _dags, _make_data, _run, _snapshot, airflow_env, open_bucket, run_driver  # noqa: E402

CORPUS = REPO / "tests" / "corpus"
MAX_RUNS = 10


def dag_cases() -> list[dict]:
    manifest = json.loads((CORPUS / "EXPECTED.json").read_text(encoding="utf-8"))
    out = []
    for c in manifest["cases"]:
        if "generated" in c or c.get("scale", manifest["default_scale"]) != manifest["default_scale"]:
            continue
        if c["outcome"] in ("accepted", "normalised") and not c.get("dag"):
            continue
        out.append(c)
    # arrival order: the failing and ignored ones first, then the accepted ones
    return sorted(out, key=lambda c: c["outcome"] in ("accepted", "normalised"))


# ----------------------------------------------------------------------------------------------------------------
# the driver (runs inside the Airflow environment)
# ----------------------------------------------------------------------------------------------------------------
def driver(work: Path) -> None:
    from airflow.sdk import BaseHook

    bucket, data = work / "bucket", work / "data"
    out: dict = {"runs": []}
    probe = BaseHook.get_connection("streamrec_secret_probe")  # the secret is real to Airflow
    out["probe_login"] = probe.login
    assert probe.password == os.environ["CORPUS_PROBE_PASSWORD"]
    b, store = open_bucket(str(bucket))
    _make_data(data, b)
    dags = _dags()
    out["runs"].append(
        _run(dags["streamrec_bootstrap"], {"rank": 8, "iterations": 5, "reg": 0.1, "holdout_fraction": 0.1})
    )
    incoming = bucket / "ratings" / "incoming"
    now = time.time()
    for k, case in enumerate(dag_cases()):
        drop(incoming, case["name"], now + k)
    out["incoming_before"] = sha256_tree(incoming)
    for _ in range(MAX_RUNS):
        # catch-up batching: the accepted entries go into one candidate (one Spark job, not one per entry)
        run = _run(dags["streamrec_update"], {"max_partitions_per_run": 10})
        out["runs"].append(run)
        if all(st.endswith("skipped") for t, st in run["tasks"].items() if t != "find_new"):
            break
    out["final"] = _snapshot(b, store)
    out["incoming_after"] = sha256_tree(incoming)
    print("@@" + json.dumps(out, default=str), flush=True)


# ----------------------------------------------------------------------------------------------------------------
# the test
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_corpus_through_the_update_dag(tmp_path, connect_server):
    from streamrec.pipeline.contract import list_incoming
    from streamrec.storage.bucket import Bucket

    secret = f"corpus-secret-{secrets.token_hex(12)}"
    key_id = f"AKIACORPUS{secrets.token_hex(5).upper()}"
    password = f"corpus-conn-pw-{secrets.token_hex(12)}"
    home = tmp_path / "airflow"
    home.mkdir()
    # the update job attaches to the warm Spark, as on the stacks: over Spark Connect it reads the files' heads
    # through pyarrow (no JVM gateway in a Connect client), the path every accepted entry must pass
    env = airflow_env(home, tmp_path / "bucket", STREAMREC_SPARK_REMOTE=connect_server.url)
    env.update(
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_ACCESS_KEY_ID=key_id,
        AIRFLOW_CONN_STREAMREC_SECRET_PROBE=json.dumps(
            {"conn_type": "generic", "login": "probe", "password": password, "host": "example.invalid"}
        ),
        CORPUS_PROBE_PASSWORD=password,
    )
    t0 = time.perf_counter()
    res, text = run_driver(tmp_path, env, __file__, str(tmp_path))
    print(f"driver: {time.perf_counter() - t0:.0f} s; runs:")
    print(json.dumps([{k: r[k] for k in ("dag", "state", "seconds")} for r in res["runs"]], indent=1))

    # 0 crashes: every run succeeded and no task instance failed
    for run in res["runs"]:
        assert run["state"].endswith("success"), run
        bad = {t: s for t, s in run["tasks"].items() if s.rsplit(".", 1)[-1] in ("failed", "upstream_failed")}
        assert not bad, run
    assert all(st.endswith("skipped") for t, st in res["runs"][-1]["tasks"].items() if t != "find_new"), (
        "the last run found nothing new"
    )

    # every file accounted for
    bucket_dir = tmp_path / "bucket"
    bucket = Bucket.from_uri(bucket_dir)
    ids = {p.key.rsplit("/", 1)[-1]: p.id for p in list_incoming(bucket)}
    final = res["final"]
    index = (bucket_dir / "reports" / "index.html").read_text(encoding="utf-8")
    applied, quarantined = set(final["applied"]), final["quarantined"]
    cases = dag_cases()
    for case in cases:
        name = case["name"]
        if case["outcome"] == "ignored":  # hidden, or an unfinished upload (waiting): never read, never moved
            assert name not in ids
            assert not any(name in p.name for p in (bucket_dir / "quarantine").iterdir())
            continue
        pid = ids[name]
        if case["outcome"] == "quarantined":
            assert pid in quarantined and pid not in applied, (name, final)
            assert case["reason"] in quarantined[pid], (name, quarantined[pid])
            assert (
                html.escape(quarantined[pid], quote=False) in index or html.escape(quarantined[pid]) in index
            )
            assert (bucket_dir / "quarantine" / pid / "report.json").exists()
        else:
            assert pid in applied and pid not in quarantined, (name, final)
    n_accepted = sum(c["outcome"] in ("accepted", "normalised") for c in cases)
    assert len(applied) == n_accepted and not final["rejected"], final
    assert len(quarantined) == sum(c["outcome"] == "quarantined" for c in cases)
    assert res["incoming_after"] == res["incoming_before"], "raw files are never changed"

    # no secret anywhere: logs, bucket (reports, manifests, quarantine), the tasks' output
    assert "quarantined in" in text and "pending" in text, "the driver output holds the tasks' output"
    logs = [p for p in home.rglob("*") if p.is_file() and p.suffix != ".db"]
    files = logs + [p for p in bucket_dir.rglob("*") if p.is_file()]
    for p in files:
        blob = p.read_bytes()
        for value in (secret, key_id, password):
            assert value.encode() not in blob, f"{value[:14]}... found in {p}"
    for value in (secret, key_id, password):
        assert value not in text, f"{value[:14]}... in the driver's output"
    print(
        f"secrets: checked {len(files)} files ({len(logs)} under AIRFLOW_HOME) and {len(text)} chars of output"
    )


if __name__ == "__main__":
    driver(Path(sys.argv[1]))

"""Smoke runs of the benchmark scripts, so that none of them can rot unseen (issue 15).

Every ``bench/*.py`` script (``common.py`` is their shared library) runs end to end on tiny generated data (its
``--smoke`` flag or small arguments, ``SMOKES``): its exit code must be 0 and its last line of output a JSON
object holding every top-level key its docstring names (the paragraph saying "top-level keys"; text in
parentheses there describes a key, it is not a key). A new script fails :func:`test_every_bench_is_covered` until
it gets a smoke here or a reason in ``EXCLUDED``.

Cost: the scripts of one group run one after the other in ONE Python subprocess (this file is the driver,
``python tests/test_bench.py OUT.json SPECS.json``, as ``tests/e2e_support.py`` is for the end-to-end tests):
each script runs as ``__main__`` (``runpy``, its ``sys.argv`` set) with its stdout captured (and echoed); its
``SystemExit`` code is its exit code. The Spark group shares one JVM, started first by the driver with a plain
session (each script stops its session, the next one starts a new SparkContext in the same JVM), so the JVM
start-up is paid once, not once per script; the Spark-free group needs no JVM at all. The subprocess keeps the
tests' own Spark session (``conftest.spark``) out of reach of the scripts' ``spark.stop()``.

Not run here, with the reason:

* ``bench/freshness.py``: needs a running Airflow (scheduler + API server) with a published model. It runs, on
  one 1,000-rating partition, inside ``tests/test_scheduler_restart.py`` on the Airflow that test starts anyway
  (``bench/reliability_load.py: run_scheduler_restart(freshness_rows=...)``), rather than starting another one.
* ``bench/reliability_load.py``: both modes start their own Airflow. The scheduler-restart mode *is*
  ``tests/test_scheduler_restart.py``; the load mode (``run_load``: ``airflow standalone`` (over a minute to
  healthy on 2 cores), a bootstrap through the DAG, then a backlog) takes minutes even for two partitions, and
  is left out to keep the suite under its 20-minute budget.
* ``bench/ranking.py``: being written on another branch; its smoke belongs with it (add it to ``SMOKES``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import runpy
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

# group -> [(script, argv)], run in this order in one process per group
SMOKES: dict[str, list[tuple[str, list[str]]]] = {
    "plain": [  # no Spark; lookup last: it points this process's AIRFLOW_* variables at its own home
        ("reliability", ["--no-big", "--no-faults", "--load-partitions", "0"]),
        (
            "lookup",
            ["--items", "300", "--users", "100", "--rank", "4", "--calls", "30", "--http-calls", "10"],
        ),
    ],
    "spark": [
        ("accuracy", ["--smoke"]),
        ("batch", ["--smoke"]),
        ("coldstart", ["--smoke"]),
        ("scale", ["--smoke"]),
        ("stream", ["--smoke", "--batch-size", "300", "--limit-partitions", "2", "--no-refit"]),
        ("tuning", ["--smoke", "--trials", "1", "--budget-minutes", "0"]),  # trial 0: the (smoke) defaults
        ("reliability_faults", ["--only", "after_pointer"]),
    ],
}
EXCLUDED = {
    "common": "the scripts' shared library, not a script",
    "freshness": "needs a running Airflow: run in tests/test_scheduler_restart.py on the Airflow it starts",
    "reliability_load": "starts its own Airflow; scheduler-restart mode = tests/test_scheduler_restart.py, "
    "load mode takes minutes",
    "ranking": "its smoke run is tests/test_bench_ranking.py",
    "blas": "a native-vs-Java BLAS comparison of two full bootstrap fits (minutes); tests/test_blas.py checks the BLAS",
    "connect": "starts a Spark Connect server (docs/STREAMING.md); measurement only, not on a product path",
    "tuning_update": "replays partitions through the update search (minutes); the guard is tested in tests/test_tuning.py",
    "cluster": "starts its own cluster topology and bootstraps 2M ratings (tens of minutes); the topology and the "
    "demo's scenario through it are tests/test_cluster.py",
    "cluster_faults": "starts its own cluster topology and replays four runs of the update DAG (tens of minutes); "
    "the topology is tests/test_cluster.py, the faults' checks are reliability_faults.compare's",
}
GROUP_OF = {name: group for group, specs in SMOKES.items() for name, _ in specs}


def doc_keys(script: Path) -> list[str]:
    """The top-level keys a script's docstring promises for its last line: the ````key```` names in the paragraph
    that says "top-level keys", outside parentheses."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    found = re.search(r"top-level\s+keys", doc)
    assert found, f"{script.name}: the docstring does not name the top-level keys of its JSON line"
    para = doc[found.start() :].split("\n\n", 1)[0]
    flat, depth = [], 0
    for ch in para:  # drop parenthesised text (descriptions of a key, nested keys)
        depth += ch == "("
        if depth == 0:
            flat.append(ch)
        depth -= ch == ")" and depth > 0
    return re.findall(r"``([A-Za-z_]\w*)``", "".join(flat))


# ----------------------------------------------------------------------------------------------------------------
# the driver (a subprocess): run scripts' main(argv) one after the other, record exit code and last line
# ----------------------------------------------------------------------------------------------------------------
class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def run_scripts(specs: list[tuple[str, list[str]]], out: Path, spark: bool = False) -> None:
    """Run each ``bench/<name>.py`` in this process as ``python bench/<name>.py ARGV`` would (``runpy`` as
    ``__main__``, ``sys.argv`` set, ``bench/`` first on ``sys.path``; the ``SystemExit`` code is the exit code),
    its stdout captured and echoed; write ``{name: {rc, seconds, last_line, tail}}`` to ``out`` after each one (a
    crash of the process still leaves the earlier results).

    ``spark``: start the JVM first with a plain ``get_session`` and stop it. A JVM keeps the configuration it
    was launched with as defaults for every later SparkContext; launched by the first script, that script's
    event-log folder (removed when it ends) would become every later script's default."""
    sys.path[:0] = [str(BENCH), str(REPO)]
    if spark:
        from streamrec.spark.session import get_session

        get_session("bench-smoke-jvm").stop()
    results: dict[str, dict] = {}
    for name, argv in specs:
        buf = io.StringIO()
        t0 = time.perf_counter()
        real = sys.stdout
        print(f"=== bench/{name}.py {' '.join(argv)}", flush=True)
        saved_argv = sys.argv
        sys.argv = [str(BENCH / f"{name}.py"), *argv]
        with contextlib.redirect_stdout(_Tee(buf, real)):
            try:
                runpy.run_path(str(BENCH / f"{name}.py"), run_name="__main__")
                rc = 0  # every script ends with sys.exit(main()) / raise SystemExit(main())
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - reported as the script's failure
                traceback.print_exc(file=sys.stdout)
                rc = 1
            finally:
                sys.argv = saved_argv
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        results[name] = {
            "rc": rc,
            "seconds": round(time.perf_counter() - t0, 1),
            "last_line": lines[-1] if lines else "",
            "tail": "\n".join(lines[-30:]),
        }
        print(f"=== bench/{name}.py: exit {rc} in {results[name]['seconds']} s", flush=True)
        out.write_text(json.dumps(results))


def _env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "STREAMREC_DRIVER_MEMORY": "1g",
        "STREAMREC_SHUFFLE_PARTITIONS": "2",
    }


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    """group -> {script: result}, each group run once (lazily) in its own subprocess."""
    done: dict[str, dict] = {}

    def get(group: str) -> dict:
        if group not in done:
            work = tmp_path_factory.mktemp(f"bench-{group}")
            specs, out, log = work / "specs.json", work / "results.json", work / "driver.log"
            specs.write_text(json.dumps(SMOKES[group]))
            t0 = time.perf_counter()
            with open(log, "w") as fh:
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        str(out),
                        str(specs),
                        *(["--spark"] if group == "spark" else []),
                    ],
                    env=_env(),
                    cwd=work,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                )
            text = log.read_text(errors="replace")
            assert out.exists(), f"the {group} driver wrote nothing (exit {proc.returncode}):\n{text[-6000:]}"
            done[group] = json.loads(out.read_text())
            done[group]["_log"] = text
            print(
                f"{group} group: {time.perf_counter() - t0:.1f} s, "
                + ", ".join(f"{n} {r['seconds']} s" for n, r in done[group].items() if n != "_log")
            )
        return done[group]

    return get


def _check(name: str, res: dict | None, log: str) -> dict:
    assert res is not None, f"bench/{name}.py did not run (the driver died before it):\n{log[-6000:]}"
    assert res["rc"] == 0, f"bench/{name}.py exited {res['rc']}:\n{res['tail']}"
    try:
        last = json.loads(res["last_line"])
    except ValueError:
        pytest.fail(f"bench/{name}.py: the last line is not JSON: {res['last_line'][:500]!r}")
    assert isinstance(last, dict), f"bench/{name}.py: the last line is not a JSON object"
    missing = [k for k in doc_keys(BENCH / f"{name}.py") if k not in last]
    assert not missing, f"bench/{name}.py: keys named in its docstring missing from its JSON line: {missing}"
    return last


# ----------------------------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_every_bench_is_covered():
    scripts = {p.stem for p in BENCH.glob("*.py")}
    uncovered = sorted(scripts - set(GROUP_OF) - set(EXCLUDED))
    assert not uncovered, (
        f"bench scripts with neither a smoke run (SMOKES) nor a reason (EXCLUDED): {uncovered}"
    )
    assert not set(GROUP_OF) & set(EXCLUDED)
    for name in [*GROUP_OF, "freshness"]:  # freshness: checked in tests/test_scheduler_restart.py
        assert doc_keys(BENCH / f"{name}.py"), f"bench/{name}.py names no top-level keys"


@pytest.mark.unit
def test_doc_keys_reads_the_paragraph_outside_parentheses(tmp_path):
    f = tmp_path / "x.py"
    f.write_text(
        '"""Title.\n\nLast line: the top-level keys ``a``, ``b`` (each ``nested``, ``c`` (``deep``)),\n'
        '``d``.\n\n``not_a_key`` later.\n"""\n'
    )
    assert doc_keys(f) == ["a", "b", "d"]


@pytest.mark.unit
def test_freshness_breakdown_waits_for_every_step():
    """The freshness steps from task instances; a task not finished yet (``publish`` still recording its Asset
    event when the pointer is already visible) gives None, never a negative epoch; the summary skips it."""
    sys.path.insert(0, str(BENCH))
    import freshness

    def ti(task: str, a: int, b: int | None) -> dict:
        end = f"2026-01-01T00:00:{b:02d}Z" if b is not None else None
        return {"task_id": task, "start_date": f"2026-01-01T00:00:{a:02d}Z", "end_date": end}

    t0 = freshness._ts("2026-01-01T00:00:00Z")
    tis = [ti("find_new", 5, 10), ti("validate", 11, 20), ti("update", 21, 40), ti("gate", 41, 42)]
    early = freshness.breakdown([*tis, ti("publish", 43, None)], t0, t0 + 44)
    assert early["publish"] is None and early["overhead"] is None and early["spark"] == 19.0, early
    done = freshness.breakdown([*tis, ti("publish", 43, 44)], t0, t0 + 45)
    assert done == {
        "total": 45.0,
        "detection": 10.0,
        "validation": 9.0,
        "spark": 19.0,
        "gate": 1.0,
        "publish": 1.0,
        "overhead": 5.0,
    }
    summary = freshness.summarise([done, early, {"partition": "p", "rejected": "v1"}])
    assert summary["publish"]["n"] == 1 and summary["total"]["n"] == 2 and summary["total"]["median"] == 44.5


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, _ in SMOKES["plain"]])
def test_spark_free_bench_smoke(name, group_results):
    res = group_results("plain")
    last = _check(name, res.get(name), res["_log"])
    if name == "reliability":
        assert last["tried"] > 0 and last["not_as_documented"] == 0 and last["faults"] is None, last
    if name == "lookup":
        assert last["http_unauthenticated_status"] in (401, 403), last
        assert last["library"]["n"] == 30 and last["http"]["n"] == 10, last


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("name", [n for n, _ in SMOKES["spark"]])
def test_spark_bench_smoke(name, group_results):
    res = group_results("spark")
    last = _check(name, res.get(name), res["_log"])
    if name == "batch":
        assert last["bit_identical"] is True, last
    if name == "coldstart":
        assert {"update_version (cold)", "evaluate_version (warm)"} <= set(last["seconds"]), last
    if name == "reliability_faults":
        assert last["faults_injected"] == last["faults_survived"] == 1, last
    if name == "tuning":
        assert last["search"]["trials_run"] == 1 and last["search"]["chosen"]["index"] == 0, last["search"]


if __name__ == "__main__":
    run_scripts(
        [(n, list(a)) for n, a in json.loads(Path(sys.argv[2]).read_text())],
        Path(sys.argv[1]),
        spark="--spark" in sys.argv[3:],
    )

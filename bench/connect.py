"""Which of streamrec's Spark calls work over Spark Connect (pyspark 4.2), against a local Connect server.

    python bench/connect.py [--workdir DIR] [--keep]

Starts ``spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer`` (local[2], the driver
options of ``streamrec.launch.jvm``, a free port) in its own session, connects with
``SparkSession.builder.remote("sc://127.0.0.1:<port>")`` and tries, each on its own (one failure does not stop
the rest), what the update path and the bootstrap use:

* ``range_count``: the session answers at all; ``spark_context``: ``spark.sparkContext`` (``get_session`` sets
  the checkpoint folder through it; ``bootstrap.fit`` reads ``defaultParallelism``);
* ``checkpoint_dir_set_by_client``: ``spark.checkpoint.dir`` set as a session conf, then
  ``DataFrame.checkpoint()``; ``checkpoint_dir_set_at_server_start``: the same with the folder given on the
  server's command line; ``local_checkpoint``: ``DataFrame.localCheckpoint()`` (the update job's stage
  boundaries);
* ``apply_in_pandas``: a grouped map (``update.apply_batch`` absorbs each group with numpy);
* ``als``: ``pyspark.ml.recommendation.ALS`` fit and ``transform`` (the bootstrap);
* ``read_ratings``: ``streamrec.spark.ratings.read_ratings`` of a CSV partition (no ``_jvm``: its pyarrow path);
* ``update_version``: ``streamrec.spark.runs.update_version`` end to end (the update job's body) on a tiny model
  written with pyarrow; ``same_model_as_classic``: the same update on a classic local session in a fresh
  process (its session start and update seconds), the two candidates' arrays compared;
* ``warm_update_seconds``: the second and third ``update_version`` over the already-running server (what a
  warm Spark would cost per partition, without the JVM start-up).

Prints one JSON object on its last line: per check ``ok`` and, when not, the error's first line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path, checkpoint_dir: Path) -> subprocess.Popen:
    from streamrec.launch import jvm

    submit = Path(sys.executable).parent / "spark-submit"
    cmd = [
        str(submit),
        "--class",
        CONNECT_CLASS,
        "--master",
        "local[2]",
        "--driver-memory",
        os.environ.get("STREAMREC_DRIVER_MEMORY", "2g"),
        "--conf",
        f"spark.driver.extraJavaOptions={jvm.driver_java_options()}",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "--conf",  # static: a Connect client cannot set it (nor reach sparkContext.setCheckpointDir)
        f"spark.checkpoint.dir={checkpoint_dir}",
    ]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 300) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the Connect server exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.time() - t0
        time.sleep(0.5)
    raise TimeoutError(f"no Connect server on port {port} after {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def tiny_bucket(root: Path) -> tuple[str, list[tuple[str, str]]]:
    """A bucket with a small published model (pyarrow) and three CSV partitions; (base version, partitions)."""
    import numpy as np

    from streamrec.core.arrays import ModelArrays
    from streamrec.storage.store import ModelStore

    rng = np.random.default_rng(7)
    users, items, rank = np.arange(1, 201), np.arange(1, 301), 4
    arrays = ModelArrays(
        mu=3.5,
        rank=rank,
        user_ids=users.tolist(),
        user_bias=rng.normal(0, 0.1, len(users)).tolist(),
        user_factors=rng.normal(0, 0.1, (len(users), rank)).tolist(),
        item_ids=items.tolist(),
        item_bias=rng.normal(0, 0.1, len(items)).tolist(),
        item_factors=rng.normal(0, 0.1, (len(items), rank)).tolist(),
    )
    store = ModelStore(str(root))
    base = "v20260101T000000-boot-connect"
    store.write_arrays(arrays, {"kind": "bootstrap", "partitions": []}, base)
    store.publish(base)
    parts = []
    for k in range(3):
        n = 2000
        u = rng.integers(1, 230, n)  # a few unknown users too
        i = rng.integers(1, 330, n)
        r = np.clip(np.round(rng.normal(3.5, 1, n) * 2) / 2, 0.5, 5.0)
        path = root / "ratings" / "incoming" / f"p{k}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "user,item,rating\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(u, i, r, strict=True))
        )
        parts.append((f"p{k}", str(path)))
    return base, parts


def check(results: dict, name: str, fn) -> object:
    t0 = time.perf_counter()
    try:
        value = fn()
        results[name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2)}
        if value is not None and not isinstance(value, bool):
            results[name]["value"] = value
        return value
    except Exception as exc:  # noqa: BLE001 - the answer is the point
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {first}"}
        results[name]["where"] = traceback.format_exc().strip().splitlines()[-3][:200]
        return None


def run_checks(spark, work: Path) -> dict:
    import pandas as pd

    from streamrec.core.params import UpdateParams
    from streamrec.core.schema import HALF_STAR
    from streamrec.spark import runs
    from streamrec.spark.ratings import read_ratings
    from streamrec.storage.store import ModelStore

    res: dict = {}
    check(res, "range_count", lambda: spark.range(1000).count())
    check(res, "spark_context", lambda: spark.sparkContext.defaultParallelism)

    def ckpt_conf():
        spark.conf.set("spark.checkpoint.dir", str(work / "ckpt-client"))
        return spark.range(100).checkpoint().count()

    check(res, "checkpoint_dir_set_by_client", ckpt_conf)
    check(res, "checkpoint_dir_set_at_server_start", lambda: spark.range(100).checkpoint().count())
    check(res, "local_checkpoint", lambda: spark.range(100).localCheckpoint().count())

    def grouped():
        df = spark.createDataFrame(pd.DataFrame({"g": [1, 1, 2], "x": [1.0, 2.0, 3.0]}))
        out = df.groupBy("g").applyInPandas(lambda p: p.assign(x=p.x.sum()), schema="g long, x double")
        return sorted(out.toPandas().x.tolist())

    check(res, "apply_in_pandas", grouped)

    def als():
        from pyspark.ml.recommendation import ALS

        rows = [(u, i, float((u * i) % 5 + 1)) for u in range(30) for i in range(40) if (u + i) % 3]
        df = spark.createDataFrame(rows, "user int, item int, rating double")
        model = ALS(rank=4, maxIter=3, userCol="user", itemCol="item", ratingCol="rating", seed=1).fit(df)
        return model.transform(df).count()

    check(res, "als", als)

    bucket = work / "bucket"
    base, parts = tiny_bucket(bucket)
    check(res, "read_ratings", lambda: read_ratings(spark, [parts[0][1]], HALF_STAR).count())
    store = ModelStore(str(bucket))

    def update(k: int, version: str):
        manifest, _ = runs.update_version(spark, store, [parts[k]], base, UpdateParams(), version, HALF_STAR)
        return manifest["version"]

    got = check(res, "update_version", lambda: update(0, "v20260101T000001-upd-connect"))
    if got:
        for k, name in ((1, "warm_update_1"), (2, "warm_update_2")):
            check(res, name, lambda k=k: update(k, f"v20260101T00000{k + 1}-upd-connect"))
    return res


def compare_with_classic(work: Path) -> dict:
    """The same first update on a classic local session, in a fresh Python (its own JVM)."""
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from streamrec.core.params import UpdateParams
from streamrec.core.schema import HALF_STAR
from streamrec.spark import runs
from streamrec.spark.session import get_session
from streamrec.storage.store import ModelStore
import time
t0 = time.perf_counter()
spark = get_session("connect-compare")
t1 = time.perf_counter()
store = ModelStore({str(work / "bucket")!r})
base = "v20260101T000000-boot-connect"
part = ("p0", {str(work / "bucket" / "ratings" / "incoming" / "p0.csv")!r})
runs.update_version(spark, store, [part], base, UpdateParams(), "v20260101T000009-upd-classic", HALF_STAR)
t2 = time.perf_counter()
a, b = store.load_arrays("v20260101T000001-upd-connect"), store.load_arrays("v20260101T000009-upd-classic")
import numpy as np
same = all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("user_ids", "item_ids", "user_factors", "item_factors", "user_bias", "item_bias")) and a.mu == b.mu
print(json.dumps({{"identical_arrays": bool(same), "session_start_seconds": round(t1 - t0, 2), "update_seconds": round(t2 - t1, 2)}}))
"""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE")
    }
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    wall = round(time.perf_counter() - t0, 2)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {
            "ok": False,
            "error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "no output",
        }
    return {"ok": True, "process_seconds": wall, **json.loads(lines[-1])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="streamrec-connect-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    out: dict = {"bench": "connect", "loadavg_before": list(os.getloadavg())}
    proc = start_server(port, work / "connect-server.log", work / "ckpt")
    try:
        out["server_start_seconds"] = round(wait_port(port, proc), 1)
        from pyspark.sql import SparkSession

        t0 = time.perf_counter()
        spark = SparkSession.builder.remote(f"sc://127.0.0.1:{port}").getOrCreate()
        out["client_connect_seconds"] = round(time.perf_counter() - t0, 2)
        out["checks"] = run_checks(spark, work)
        spark.stop()
        if out["checks"].get("update_version", {}).get("ok"):
            out["checks"]["same_model_as_classic"] = compare_with_classic(work)
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop_server(proc)
        out["loadavg_after"] = list(os.getloadavg())
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scale: bootstrap on generated ratings and one update with a 100k-rating partition; seconds and peak memory.

    python bench/scale.py [--small] [--users N --items N --ratings N --rank K] [--partition-ratings N] [--keep]

Generates a time-ordered data set with ``streamrec.core.synth.write_dataset`` into a temp folder (history = all but the
last ``--partition-ratings`` ratings, then one partition), reads it with ``streamrec.spark.ratings.read_ratings`` on
Spark (local[2]), fits ``bootstrap.fit`` (``BootstrapParams(rank=--rank)``, other params default) on the
history and applies the partition with ``update.apply`` (default ``UpdateParams``) plus ``localCheckpoint`` of
both tables, as the update job does. Memory: a background thread samples VmRSS every 0.5 s of the Spark JVM, of
this Python driver and of the JVM's Python workers (summed; forked workers share pages, so this over-counts),
and keeps the peak per phase; plus the JVM's VmHWM and the driver's ``getrusage`` peak at the end. Prints
progress lines, then one JSON object on the last line.

Last line: one JSON object with the top-level keys ``data``, ``n_ratings``, ``code``, ``n_history``,
``n_partition``, ``n_users_model``, ``n_items_model``, ``data_mb_on_disk``, ``generate_seconds``,
``spark_start_seconds``, ``read_history_seconds``, ``bootstrap_seconds``, ``read_partition_seconds``,
``update_seconds``, ``update_vs_bootstrap``, ``update_ratings_per_second``, ``bootstrap_params``,
``update_params``, ``prequential_rmse_partition``, ``truth_best_rmse``, ``peak_rss_mb``, ``spark_stages``,
``machine``.

``--smoke``: 100 users x 120 items, 3,000 ratings (a partition of 500), rank 4, 2 ALS iterations: the test
suite's check that the script runs (``tests/test_bench.py``), not a measurement.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time

import common

from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.core.synth import SynthConfig
from streamrec.core.synth_files import write_dataset
from streamrec.spark import bootstrap, evaluate, update
from streamrec.spark.ratings import read_ratings

FULL = {"users": 160_000, "items": 60_000, "ratings": 20_000_000}
SMALL = {"users": 6_040, "items": 3_706, "ratings": 1_000_000}  # MovieLens 1M shape
SMOKE = {"users": 100, "items": 120, "ratings": 3_000, "partition_ratings": 500, "rank": 4, "iterations": 2}


def _status_kb(pid: int, field: str) -> int:
    """``field`` (VmRSS, VmHWM) of /proc/<pid>/status in kB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _python_workers(root: int) -> list[int]:
    """Python processes below ``root`` (PySpark's daemon and workers). Other children are skipped: the JVM also
    spawns short-lived helpers (Hadoop's shell commands) that, between fork and exec, report the JVM's own RSS."""
    out = []
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"python" in cmd and b"pyspark" in cmd:
            out.append(pid)
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class RssSampler(threading.Thread):
    """Every ``interval`` s: VmRSS of the JVM, the driver and the JVM's descendants; peak (MB) per phase."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.jvm_pid, self.phase = interval, None, "setup"
        self.heap_used = None  # callable -> bytes of JVM heap in use (set once Spark runs)
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase
        self.sample()

    def sample(self) -> None:
        jvm = _status_kb(self.jvm_pid, "VmRSS") if self.jvm_pid else 0
        workers = sum(_status_kb(p, "VmRSS") for p in _python_workers(self.jvm_pid)) if self.jvm_pid else 0
        driver = _status_kb(os.getpid(), "VmRSS")
        heap = 0.0
        if self.heap_used is not None:
            try:
                heap = self.heap_used() / 2**20
            except Exception:  # JVM stopping
                heap = 0.0
        with self._lock:
            new = self.phase not in self.peaks
            peak = self.peaks.setdefault(
                self.phase,
                {
                    "jvm": 0.0,
                    "jvm_at_start": jvm / 1024,
                    "jvm_heap_used": 0.0,
                    "driver": 0.0,
                    "python_workers": 0.0,
                },
            )
            if new:
                peak["jvm_heap_used_at_start"] = heap
            peak["jvm"] = max(peak["jvm"], jvm / 1024)
            peak["jvm_heap_used"] = max(peak["jvm_heap_used"], heap)
            peak["driver"] = max(peak["driver"], driver / 1024)
            peak["python_workers"] = max(peak["python_workers"], workers / 1024)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick run: 6,040 users x 3,706 items, 1M ratings")
    ap.add_argument("--smoke", action="store_true", help="tiny run (seconds; numbers meaningless): see above")
    ap.add_argument(
        "--users", type=int, default=None, help=f"default {FULL['users']} ({SMALL['users']} --small)"
    )
    ap.add_argument(
        "--items", type=int, default=None, help=f"default {FULL['items']} ({SMALL['items']} --small)"
    )
    ap.add_argument(
        "--ratings", type=int, default=None, help=f"default {FULL['ratings']} ({SMALL['ratings']} --small)"
    )
    ap.add_argument(
        "--rank", type=int, default=20, help="planted rank of the generator and rank of the bootstrap"
    )
    ap.add_argument("--partition-ratings", type=int, default=100_000, help="ratings in the update partition")
    ap.add_argument(
        "--format", choices=("csv", "parquet"), default="csv", help="files written by the generator"
    )
    ap.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temp data folder goes")
    ap.add_argument("--keep", action="store_true", help="keep the generated data folder")
    ap.add_argument(
        "--driver-memory", default=None, help="spark.driver.memory (default: streamrec.spark.session's)"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.partition_ratings, args.rank = SMOKE["partition_ratings"], SMOKE["rank"]
    size = SMOKE if args.smoke else SMALL if args.small else FULL
    n_users = args.users or size["users"]
    n_items = args.items or size["items"]
    n_ratings = args.ratings or size["ratings"]
    if not 0 < args.partition_ratings < n_ratings:
        ap.error("--partition-ratings must be between 1 and --ratings")
    code = common.code_version()
    say = common.Progress("scale")
    load0 = common.machine()
    sampler = RssSampler()
    sampler.start()
    phases = common.Phases()
    secs: dict[str, float] = {}

    def phase(name: str):
        sampler.set_phase(name)
        return phases(name)

    out_dir = tempfile.mkdtemp(prefix="streamrec-scale-", dir=args.workdir)
    cfg = SynthConfig(n_users=n_users, n_items=n_items, n_ratings=n_ratings, rank=args.rank, seed=42)
    result: dict = {}
    try:
        say(
            f"generating {n_ratings} ratings ({n_users} users x {n_items} items, rank {args.rank}) into {out_dir}"
        )
        t0 = time.perf_counter()
        with phase("generate"):
            truth = write_dataset(
                cfg,
                out_dir,
                n_partitions=1,
                history_fraction=1.0 - args.partition_ratings / n_ratings,
                fmt=args.format,
            )
        secs["generate"] = common.seconds(t0)
        files = truth["files"]
        hist_rows = sum(f["rows"] for f in files if f["path"].startswith("history/"))
        part_rows = sum(f["rows"] for f in files if f["path"].startswith("partitions/"))
        disk_mb = (
            sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out_dir) for f in fs) / 2**20
        )
        say(
            f"generated in {secs['generate']:.1f}s: history {hist_rows}, partition {part_rows} ratings, "
            f"{disk_mb:.0f} MB on disk, best possible RMSE {truth['best_rmse']:.4f}"
        )

        extra = {"spark.driver.memory": args.driver_memory} if args.driver_memory else None
        t0 = time.perf_counter()
        sampler.set_phase("spark_start")
        with common.spark_session("bench-scale", extra_conf=extra) as (spark, events):
            jvm = spark.sparkContext._jvm
            sampler.jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
            runtime = jvm.java.lang.Runtime.getRuntime()
            sampler.heap_used = lambda: runtime.totalMemory() - runtime.freeMemory()

            def gc() -> None:  # outside the timed phases: start each phase's heap from live data only
                jvm.java.lang.System.gc()

            secs["spark_start"] = common.seconds(t0)
            say(f"Spark JVM pid {sampler.jvm_pid}, driver memory {spark.conf.get('spark.driver.memory')}")

            t0 = time.perf_counter()
            with phase("read_history"):
                history = read_ratings(spark, os.path.join(out_dir, "history"))
            secs["read_history"] = common.seconds(t0)
            say(f"read_ratings(history) validated in {secs['read_history']:.1f}s")

            params = BootstrapParams(
                rank=args.rank, **({"iterations": SMOKE["iterations"]} if args.smoke else {})
            )
            say(f"bootstrap.fit {params}")
            gc()
            t0 = time.perf_counter()
            with phase("bootstrap"):
                model = common.checkpoint_model(bootstrap.fit(history, params))
            secs["bootstrap"] = common.seconds(t0)
            say(
                f"bootstrap: {secs['bootstrap']:.1f}s (JVM peak so far {sampler.peaks['bootstrap']['jvm']:.0f} MB)"
            )

            t0 = time.perf_counter()
            with phase("read_partition"):
                part = read_ratings(spark, os.path.join(out_dir, "partitions")).cache()
                part.count()
            secs["read_partition"] = common.seconds(t0)

            with phase("prequential"):
                preq = evaluate.prequential(model, part)
            say(
                f"prequential RMSE of the partition before the update: {preq['rmse']:.4f} "
                f"(fallbacks {preq['fallbacks']})"
            )

            up = UpdateParams()
            gc()
            t0 = time.perf_counter()
            with phase("update"):
                new = update.apply(model, part, up)
                new.users, new.items = new.users.localCheckpoint(), new.items.localCheckpoint()
            secs["update"] = common.seconds(t0)
            say(f"update: {secs['update']:.1f}s")
            with phase("counts"):
                n_users_model, n_items_model = new.users.count(), new.items.count()

            sampler.set_phase("end")
            sampler.heap_used = None
            jvm_hwm = _status_kb(sampler.jvm_pid, "VmHWM") / 1024
            spark.stop()
            stages = common.stage_summary(events, phases.windows)
        sampler.stop()
        peaks = sampler.peaks
        result = {
            "data": f"synthetic: streamrec.core.synth.write_dataset(SynthConfig(n_users={n_users}, n_items={n_items}, "
            f"n_ratings={n_ratings}, rank={args.rank}, seed=42), format {args.format})",
            "n_ratings": n_ratings,
            "code": code,
            "n_history": hist_rows,
            "n_partition": part_rows,
            "n_users_model": n_users_model,
            "n_items_model": n_items_model,
            "data_mb_on_disk": disk_mb,
            "generate_seconds": secs["generate"],
            "spark_start_seconds": secs["spark_start"],
            "read_history_seconds": secs["read_history"],
            "bootstrap_seconds": secs["bootstrap"],
            "read_partition_seconds": secs["read_partition"],
            "update_seconds": secs["update"],
            "update_vs_bootstrap": secs["update"] / secs["bootstrap"],
            "update_ratings_per_second": part_rows / secs["update"],
            "bootstrap_params": params.as_dict(),
            "update_params": up.as_dict(),
            "prequential_rmse_partition": preq["rmse"],
            "truth_best_rmse": truth["best_rmse"],
            "peak_rss_mb": {
                "jvm_bootstrap": peaks.get("bootstrap", {}).get("jvm"),
                "jvm_update": peaks.get("update", {}).get("jvm"),
                "jvm_update_growth": peaks.get("update", {}).get("jvm", 0)
                - peaks.get("update", {}).get("jvm_at_start", 0),
                "jvm_heap_used_bootstrap": peaks.get("bootstrap", {}).get("jvm_heap_used"),
                "jvm_heap_used_update": peaks.get("update", {}).get("jvm_heap_used"),
                "jvm_heap_used_update_at_start": peaks.get("update", {}).get("jvm_heap_used_at_start"),
                "jvm_read_history": peaks.get("read_history", {}).get("jvm"),
                "jvm_vmhwm_whole_run": jvm_hwm,
                "driver_python_getrusage_whole_run": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                / 1024,
                "driver_python_generate": peaks.get("generate", {}).get("driver"),
                "driver_python_bootstrap": peaks.get("bootstrap", {}).get("driver"),
                "driver_python_update": peaks.get("update", {}).get("driver"),
                "python_workers_update": peaks.get("update", {}).get("python_workers"),
                "python_workers_bootstrap": peaks.get("bootstrap", {}).get("python_workers"),
                "per_phase": peaks,
                "note": "VmRSS and JVM heap in use (Runtime total-free) sampled every 0.5 s per phase (short spikes "
                "can be missed; System.gc() before bootstrap and update, outside their timing). JVM RSS rarely "
                "shrinks, so jvm_update includes what the bootstrap left: see jvm_update_growth and the heap "
                "figures. VmHWM and getrusage are true peaks over the whole process life; python_workers sums "
                "the JVM's forked Python workers (over-counts shared pages)",
            },
            "spark_stages": stages,
            "machine": {"start": load0, "end_loadavg_1_5_15": list(os.getloadavg())},
        }
    finally:
        if args.keep:
            say(f"kept {out_dir}")
        else:
            shutil.rmtree(out_dir, ignore_errors=True)
    common.emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Airflow's local-settings hook, used for one thing: the scheduler imports the update run's heavy modules once.

Every Airflow process imports ``airflow_local_settings`` when it starts (``airflow.settings.initialize``, after
putting the plugins folder on ``sys.path``). With the LocalExecutor, a task runs in a process forked from an
executor worker, itself forked from the scheduler (``multiprocessing`` fork, then ``os.fork`` by the task
supervisor), so whatever the scheduler imported before starting its executor is already imported in every task.
Importing Great Expectations took ~2.7 s of each ``validate`` task's 3.5-3.8 s (``docs/STREAMING.md`` §4); the
gate, publish and report tasks import numpy, pyarrow and the reports' templates. So in the ``airflow scheduler``
process only (not the API server, DAG processor, triggerer or a CLI call), this imports :data:`PRELOAD`
before the executor starts: ~4 s more for the scheduler to start and ~300 MB of its memory, shared with the
tasks it forks. ``STREAMREC_PRELOAD=0`` turns it off; a module that fails to import is logged and skipped (the
task imports it itself, as without the preload).

It defines no cluster policy and changes no setting. (Airflow's plugin manager also imports every file of the
plugins folder, this one included, looking for plugins: in a process forked from the scheduler that finds the
modules already imported and does nothing.)
"""

from __future__ import annotations

import os
import sys

PRELOAD = (
    "great_expectations",
    "streamrec.pipeline.contract.gx",
    "streamrec.pipeline.tasks",
    "streamrec.pipeline.plans",
    "streamrec.pipeline.reports",
)
"""What the update run's tasks import (``dags/streamrec_update.py``): the data contract (GX), the gate's numpy
and pyarrow, the plan and the reports."""


def _is_scheduler(argv: list[str]) -> bool:
    return len(argv) > 1 and os.path.basename(argv[0]) == "airflow" and argv[1] == "scheduler"


def preload(names: tuple[str, ...] = PRELOAD) -> dict[str, str]:
    """Import ``names``; returns what each did (``ok`` or the error). One line on stderr (the scheduler's log:
    this runs before Airflow configures logging)."""
    import importlib
    import time

    done: dict[str, str] = {}
    t0 = time.perf_counter()
    for name in names:
        try:
            importlib.import_module(name)
            done[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - a preload is an optimisation, never a failed start
            done[name] = f"{type(exc).__name__}: {exc}"
    failed = {k: v for k, v in done.items() if v != "ok"}
    print(
        f"streamrec preload: {len(done) - len(failed)} of {len(done)} modules imported in "
        f"{time.perf_counter() - t0:.1f} s for the tasks this scheduler forks"
        + (f"; not imported (the tasks import them themselves): {failed}" if failed else ""),
        file=sys.stderr,
        flush=True,
    )
    return done


if (
    os.environ.get("STREAMREC_PRELOAD", "1") != "0"
    and _is_scheduler(sys.argv)
    and not all(name in sys.modules for name in PRELOAD)  # not again in a fork that has them
):
    preload()

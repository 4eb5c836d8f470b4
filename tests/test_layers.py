"""The core package's layers, enforced (docs/ARCHITECTURE.md).

* ``lint-imports`` keeps every contract of ``[tool.importlinter]`` in pyproject.toml: the layers (pipeline | spark
  above storage | launch above core), no Airflow in streamrec, pyspark only in ``streamrec.spark``, DAGs and plugins
  through ``streamrec.pipeline`` only, jobs into ``streamrec.spark``, no import cycles.
* What the light Airflow tasks, the review page and serving load never pulls in pyspark, checked in a fresh
  interpreter (an import that a contract misses, e.g. through ``importlib``, still shows here).
* No module of the core package grows past ~500 lines: a module that long holds more than one idea.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and " KEPT" in done.stdout


@pytest.mark.parametrize(
    "modules",
    [
        ["streamrec.pipeline"],
        ["streamrec.pipeline.lookup", "streamrec.pipeline.review", "streamrec.pipeline.reports"],
        ["streamrec.pipeline.contract", "streamrec.pipeline.tuning", "streamrec.pipeline.tuning_report"],
        ["streamrec.core.sgd", "streamrec.core.arrays", "streamrec.core.synth", "streamrec.storage.store"],
        ["streamrec_review"],  # the Airflow plugin (the review page)
    ],
)
def test_light_paths_never_load_pyspark(modules: list[str]) -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k == 'pyspark' or k.startswith(('pyspark.', 'py4j')))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'plugins'}", "PATH": "/usr/bin:/bin", "HOME": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], f"{modules} loaded pyspark"


def test_no_module_over_500_lines() -> None:
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted((REPO / "streamrec").rglob("*.py"))
    }
    assert sizes, "no modules found"
    too_long = {k: n for k, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them along their ideas): {too_long}"

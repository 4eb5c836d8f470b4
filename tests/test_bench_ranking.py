"""``bench/ranking.py --smoke``: the ranking benchmark runs end to end on tiny generated data and prints its table
and one JSON line (its figures are checked for shape and sanity, not for a value: the data are tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def test_ranking_bench_smoke():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ranking.py"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    assert any("method" in line and "NDCG@10" in line for line in lines)  # the table
    methods = out["methods"]
    assert set(methods) >= {"popularity", "biases_only", "spark_als_defaults", "ours_plain", "ours_chosen"}
    for m in methods.values():
        assert set(m) >= {"precision@10", "recall@10", "ndcg@10", "map@10", "coverage"}
        assert 0.0 <= m["ndcg@10"] <= 1.0 and 0.0 < m["coverage"] <= 1.0 and m["users"] > 10
    # the seen filter can only help: a rated item is never relevant in the test part
    assert methods["ours_plain"]["precision@10"] >= methods["ours_plain_no_seen_filter"]["precision@10"]
    # the rule was chosen on the validation part of train, and it is at least as good there as the plain one
    sel = {
        (r["min_ratings"], r["shrink"], r["popularity"]): r["ndcg@10"] for r in out["selection_validation"]
    }
    chosen = out["chosen_on_train"]
    assert sel[(chosen["min_ratings"], chosen["shrink"], chosen["popularity"])] == max(sel.values())
    # the Spark recommend step wrote every user's top-k, equal to the library's ranking bit for bit
    assert out["recommend_step"]["equal_to_ranker"] is True and out["recommend_step"]["users"] > 0

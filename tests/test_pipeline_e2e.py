"""End to end with real parts on a local bucket: Airflow's ``dag.test()`` (a real DagRun, tasks run for real),
real ``spark-submit`` jobs, the real data contract.

The scenario (bootstrap, then the update DAG over a good, a bad and a damaging partition, then a run that finds
nothing) and its assertions live in ``tests/e2e_support.py``, shared with ``tests/test_pipeline_e2e_s3.py``
(the same on ``s3://``). Here, a retrain through the gate follows.
"""

from __future__ import annotations

import pytest
from e2e_support import airflow_env, check_retrain, check_scenario, run_scenario


@pytest.mark.integration
@pytest.mark.slow
def test_bootstrap_then_three_partitions(tmp_path):
    from streamrec.storage.bucket import LocalBucket

    bucket = tmp_path / "bucket"
    env = airflow_env(tmp_path / "airflow", bucket)
    res, out = run_scenario(tmp_path, env, str(bucket), retrain=True)
    check_scenario(res, LocalBucket(bucket))
    check_retrain(res, LocalBucket(bucket))
    # every spark-submit started its driver with streamrec.launch.jvm's options (prepare_task, the DAGs' pre_execute)
    from streamrec.launch import jvm

    submits = [line for line in out.splitlines() if "Spark-Submit cmd" in line]
    assert submits and all(jvm.driver_java_options() in line for line in submits), submits[:2]

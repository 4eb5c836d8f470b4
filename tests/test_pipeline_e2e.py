"""End to end with real parts on a local bucket: Airflow's ``dag.test()`` (a real DagRun, tasks run for real),
real ``spark-submit`` jobs for the batch side and, for the update, ``jobs/update.py`` attached to a real Spark
Connect server (``conftest.connect_server``: the warm Spark the stacks start), the real data contract.

The scenario (bootstrap, then the update DAG over a good, a bad and a damaging partition, then a run that finds
nothing) and its assertions live in ``tests/e2e_support.py``, shared with ``tests/test_pipeline_e2e_s3.py``
(the same on ``s3://``). Here, a retrain through the gate follows.
"""

from __future__ import annotations

import pytest
from e2e_support import airflow_env, check_retrain, check_scenario, run_scenario


@pytest.mark.integration
@pytest.mark.slow
def test_bootstrap_then_three_partitions(tmp_path, connect_server):
    from streamrec.storage.bucket import LocalBucket

    bucket = tmp_path / "bucket"
    # as on the stacks: the update task attaches to a warm Spark Connect server, the batch jobs are spark-submits
    env = airflow_env(tmp_path / "airflow", bucket, STREAMREC_SPARK_REMOTE=connect_server.url)
    res, out = run_scenario(tmp_path, env, str(bucket), retrain=True)
    check_scenario(res, LocalBucket(bucket))
    check_retrain(res, LocalBucket(bucket))
    # every spark-submit started its driver with streamrec.launch.jvm's options (prepare_task, the DAGs' pre_execute)
    from streamrec.launch import jvm

    submits = [line for line in out.splitlines() if "Spark-Submit cmd" in line]
    assert submits and all(jvm.driver_java_options() in line for line in submits), submits[:2]
    assert not any("jobs/update.py" in line for line in submits), "the update should not be a spark-submit"
    over_connect = [
        line for line in out.splitlines() if "update.py over Spark Connect at " + connect_server.url in line
    ]
    assert len(over_connect) >= 2, "each update run's update task attaches to the server"

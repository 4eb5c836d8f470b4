"""Injected faults (issue 5, part 2): the update pipeline survives a crash, an S3 outage, a lost success and a
concurrent run, with real parts only (real Spark and spark-submit, a real moto server, a real SIGKILL).

Every fault ends with the same three checks (``bench/reliability_faults.py`` holds the scenarios, shared with the
benchmark, and documents them):

* the published model equals, bit for bit, the one a clean run produces from the same inputs (the update is
  deterministic for the same inputs, version id and seed: hash hold-out, no random draw, one grouped-map task);
* every partition is applied exactly once, in order (the published manifest's ``partitions``);
* no half-written version is ever visible (a reader thread polls the pointer during the whole scenario).

One bootstrap (``world``, module scope) is shared; each test clones its bucket.
"""

from __future__ import annotations

import time

import pytest

from streamrec import faults


# ----------------------------------------------------------------------------------------------------------------
# the failpoints themselves
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_failpoint_is_inert_unless_named(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("after_pointer")  # nothing
    monkeypatch.setenv(faults.ENV, "before_pointer")
    faults.point("after_pointer")  # another point: nothing
    with pytest.raises(faults.InjectedFault, match="before_pointer"):
        faults.point("before_pointer")


@pytest.mark.unit
def test_failpoint_sleep_and_parsing(monkeypatch):
    assert faults.active("after_pointer, before_pointer=sleep(0.2)") == {
        "after_pointer": "raise",
        "before_pointer": "sleep(0.2)",
    }
    monkeypatch.setenv(faults.ENV, "before_pointer=sleep(0.2)")
    t0 = time.monotonic()
    faults.point("before_pointer")
    assert 0.15 < time.monotonic() - t0 < 2
    for bad in ("no_such_point", "after_pointer=explode", "after_pointer=sleep(x)"):
        with pytest.raises(ValueError):
            faults.active(bad)
    with pytest.raises(ValueError):
        faults.point("no_such_point")

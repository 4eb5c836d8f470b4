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

import contextlib
import os
import threading
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


# ----------------------------------------------------------------------------------------------------------------
# the pointer's compare-and-swap (ModelStore.publish), without Spark
# ----------------------------------------------------------------------------------------------------------------
def _tiny_store(uri):
    import numpy as np

    from streamrec.store import ModelArrays, ModelStore

    store = ModelStore(uri)
    rng = np.random.default_rng(0)
    for v in ("v0", "v1", "v2"):
        arrays = ModelArrays(
            mu=3.5,
            rank=2,
            user_ids=[1, 2],
            user_bias=rng.normal(size=2),
            user_factors=rng.normal(size=(2, 2)),
            item_ids=[10],
            item_bias=[0.1],
            item_factors=[[0.2, 0.3]],
        )
        store.write_arrays(arrays, {"kind": "update", "parent": "v0", "partitions": [v]}, v)
    store.publish("v0")
    return store


def _race(store, versions, expected="v0", overlap=0.5):
    """Publish each version from its own thread at once, held ``overlap`` s between the pointer's read and write."""
    from streamrec.store import ModelStore, StoreError

    out: dict[str, str] = {}

    def publish(v: str) -> None:
        try:
            ModelStore(store.bucket).publish(v, expected_current=expected)
            out[v] = "published"
        except StoreError as exc:
            out[v] = f"refused: {exc}"

    threads = [threading.Thread(target=publish, args=(v,)) for v in versions]
    with _env(faults.ENV, f"before_pointer=sleep({overlap})"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    return out


@contextlib.contextmanager
def _env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _check_cas(store):
    from streamrec.store import PointerMovedError

    store.publish("v1", expected_current="v0")
    with pytest.raises(PointerMovedError, match="moved"):
        store.publish("v2", expected_current="v0")
    assert store.current() == "v1"
    assert store.read_manifest("v2")["status"] == "candidate"
    out = _race(store, ["v0", "v2"], expected="v1")
    assert sorted(o.split(":")[0] for o in out.values()) == ["published", "refused"], out
    winner = next(v for v, o in out.items() if o == "published")
    loser = next(v for v in out if v != winner)
    assert store.current() == winner
    # the loser's manifest is what it was before (v0: published earlier, a rollback target; v2: a candidate)
    assert store.read_manifest(loser)["status"] == ("published" if loser == "v0" else "candidate")


@pytest.mark.unit
def test_publish_is_compare_and_swap_local(tmp_path):
    _check_cas(_tiny_store(str(tmp_path / "bucket")))


@pytest.mark.integration
def test_publish_is_compare_and_swap_s3(s3_bucket_uri):
    _check_cas(_tiny_store(s3_bucket_uri))

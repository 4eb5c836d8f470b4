"""Versioned model store: bit-identical round trips, manifest-last / pointer-last publishing, refusals.

The Spark write path is tested on a local folder; the publishing rules run on a local folder and on a real S3
server (moto) through the non-Spark ``write_arrays`` path (Spark cannot reach S3 here without the s3a jars).
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamrec.core.arrays import ModelArrays
from streamrec.core.seen import SeenItems
from streamrec.spark.model import load_model, to_arrays, write_model
from streamrec.storage.bucket import Bucket, LocalBucket
from streamrec.storage.store import POINTER, ModelStore, StoreError, VersionNotFoundError

SPECIAL = [0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1e300, -1e-300, 0.1, 1 / 3]


def random_arrays(seed: int = 0, n_users: int = 40, n_items: int = 25, rank: int = 4) -> ModelArrays:
    """A random model with awkward floats (signed zero, subnormals, huge) and unsorted, sparse ids."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(n_users, rank))
    item_factors = rng.normal(size=(n_items, rank))
    user_bias = rng.normal(size=n_users)
    user_bias[: len(SPECIAL)] = SPECIAL[: min(len(SPECIAL), n_users)]
    item_factors.flat[: len(SPECIAL)] = SPECIAL[: min(len(SPECIAL), item_factors.size)]
    return ModelArrays(
        mu=3.5123456789012345,
        rank=rank,
        user_ids=rng.permutation(np.arange(1, 10 * n_users + 1, dtype=np.int64))[:n_users],
        user_bias=user_bias,
        user_factors=user_factors,
        item_ids=rng.permutation(np.arange(1, 10 * n_items + 1, dtype=np.int64))[:n_items] + 2**40,
        item_bias=rng.normal(size=n_items),
        item_factors=item_factors,
        n=123_456_789,
        user_n=rng.integers(0, 1000, size=n_users),
        item_n=rng.integers(0, 1000, size=n_items),
    )


def assert_bit_identical(a: ModelArrays, b: ModelArrays) -> None:
    """Same ids, counts, and the exact same float64 bits for mu, biases and factors."""
    assert (a.rank, a.n) == (b.rank, b.n)
    assert np.float64(a.mu).view(np.int64) == np.float64(b.mu).view(np.int64)
    for side in ("user", "item"):
        np.testing.assert_array_equal(getattr(a, f"{side}_ids"), getattr(b, f"{side}_ids"))
        np.testing.assert_array_equal(getattr(a, f"{side}_n"), getattr(b, f"{side}_n"))
        for name in (f"{side}_bias", f"{side}_factors"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.shape == y.shape and x.dtype == y.dtype == np.float64, name
            np.testing.assert_array_equal(x.view(np.int64), y.view(np.int64), err_msg=name)


def to_factor_model(spark, arrays: ModelArrays):
    """The Spark ``FactorModel`` holding ``arrays``."""
    import pandas as pd

    from streamrec.spark.model import FactorModel
    from streamrec.spark.schema import FACTOR_SCHEMA

    def frame(ids, bias, n, factors):
        pdf = pd.DataFrame({"id": ids, "bias": bias, "n": n, "factors": [row for row in factors]})
        return spark.createDataFrame(pdf, schema=FACTOR_SCHEMA)

    return FactorModel(
        mu=arrays.mu,
        n=arrays.n,
        rank=arrays.rank,
        users=frame(arrays.user_ids, arrays.user_bias, arrays.user_n, arrays.user_factors),
        items=frame(arrays.item_ids, arrays.item_bias, arrays.item_n, arrays.item_factors),
    )


LINEAGE = {
    "parent": None,
    "kind": "bootstrap",
    "params": {"rank": 4, "reg": 0.1},
    "metrics": {"rmse": 0.87},
    "partitions": ["p-0001"],
    "inputs": ["ratings/history/ratings.csv"],
}


class FixedClock:
    """A settable clock for version ids and timestamps."""

    def __init__(self, ts: datetime) -> None:
        self.ts = ts

    def __call__(self) -> datetime:
        return self.ts


# --- Spark write path ------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_spark_round_trip_is_bit_identical(spark, tmp_path) -> None:
    arrays = random_arrays(seed=1)
    store = ModelStore(tmp_path, clock=FixedClock(datetime(2026, 11, 26, 18, 30, tzinfo=UTC)))
    version = write_model(store, to_factor_model(spark, arrays), dict(LINEAGE))
    assert re.fullmatch(r"v20261126T183000-[0-9a-f]{6}", version)

    manifest = store.read_manifest(version)
    assert manifest["status"] == "candidate"
    assert manifest["created_at"] == "2026-11-26T18:30:00+00:00"
    assert (manifest["rank"], manifest["n_users"], manifest["n_items"]) == (4, 40, 25)
    assert (manifest["mu"], manifest["n_ratings"]) == (arrays.mu, arrays.n)
    assert {k: manifest[k] for k in LINEAGE} == LINEAGE
    assert all(
        f["key"].endswith(".parquet")
        for side in ("users", "items")
        for f in manifest["tables"][side]["files"]
    )

    assert_bit_identical(store.load_arrays(version), arrays)  # pyarrow path, no Spark
    loaded = load_model(store, spark, version)  # Spark path
    assert (loaded.mu, loaded.n, loaded.rank) == (arrays.mu, arrays.n, arrays.rank)
    assert loaded.users.schema.fieldNames() == ["id", "bias", "n", "factors"]
    assert_bit_identical(to_arrays(loaded), arrays)


@pytest.mark.spark
def test_spark_retry_rewrites_cleanly_and_manifest_comes_last(spark, tmp_path) -> None:
    store = ModelStore(tmp_path)
    # a first attempt left a complete-looking candidate with more rows (written without Spark to keep this fast)
    store.write_arrays(random_arrays(seed=2, n_users=30), {}, version="v-retry")
    seen_at_manifest_write: list[bool] = []
    write_json = store.bucket.write_json

    def spy(key, obj):
        if key.endswith("manifest.json"):  # both tables must already be complete
            tables = [o.key for o in store.bucket.list("models/versions/v-retry")]
            seen_at_manifest_write.append(
                any(k.startswith("models/versions/v-retry/users/part-") for k in tables)
                and any(k.startswith("models/versions/v-retry/items/part-") for k in tables)
            )
        write_json(key, obj)

    store.bucket.write_json = spy  # type: ignore[method-assign]
    smaller = random_arrays(seed=3, n_users=7, n_items=5)
    assert (
        write_model(store, to_factor_model(spark, smaller), {"kind": "retrain"}, version="v-retry")
        == "v-retry"
    )
    assert seen_at_manifest_write == [True]
    assert_bit_identical(store.load_arrays("v-retry"), smaller)  # no stale rows from the first attempt
    assert load_model(store, spark, "v-retry").users.count() == 7
    store.publish("v-retry")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        write_model(store, to_factor_model(spark, smaller), {}, version="v-retry")


# --- numpy write path: exact round trip for any values ---------------------------------------------------------
def _side(draw, rank: int):
    n = draw(st.integers(0, 12))
    ids = draw(hnp.arrays(np.int64, n, elements=st.integers(-(2**63), 2**63 - 1), unique=True))
    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    bias = draw(hnp.arrays(np.float64, n, elements=floats))
    factors = draw(hnp.arrays(np.float64, (n, rank), elements=floats))
    counts = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2**62)))
    return ids, bias, factors, counts


@st.composite
def model_arrays(draw) -> ModelArrays:
    rank = draw(st.integers(1, 5))
    u_ids, u_bias, u_factors, u_n = _side(draw, rank)
    i_ids, i_bias, i_factors, i_n = _side(draw, rank)
    return ModelArrays(
        mu=draw(st.floats(allow_nan=False, allow_infinity=False)),
        rank=rank,
        user_ids=u_ids,
        user_bias=u_bias,
        user_factors=u_factors,
        item_ids=i_ids,
        item_bias=i_bias,
        item_factors=i_factors,
        n=draw(st.integers(0, 2**62)),
        user_n=u_n,
        item_n=i_n,
    )


@pytest.mark.unit
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=model_arrays())
def test_arrays_round_trip_is_bit_identical(arrays: ModelArrays) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp)
        version = store.write_arrays(arrays, {"kind": "bootstrap"})
        assert_bit_identical(store.load_arrays(version), arrays)


@pytest.mark.unit
def test_model_arrays_sorts_by_id_and_looks_ids_up() -> None:
    arrays = ModelArrays(
        mu=3.0,
        rank=1,
        user_ids=[30, 10, 20],
        user_bias=[0.3, 0.1, 0.2],
        user_factors=[[3.0], [1.0], [2.0]],
        item_ids=[7],
        item_bias=[0.0],
        item_factors=[[1.0]],
    )
    np.testing.assert_array_equal(arrays.user_ids, [10, 20, 30])
    np.testing.assert_array_equal(arrays.user_bias, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(arrays.user_factors[:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(arrays.user_rows([20, 5, 30, 99]), [1, -1, 2, -1])
    assert (arrays.user_row(10), arrays.user_row(11), arrays.item_row(7), arrays.item_row(8)) == (
        0,
        -1,
        0,
        -1,
    )
    with pytest.raises(ValueError, match="duplicate user id 10"):
        ModelArrays(3.0, 1, [10, 10], [0, 0], [[0.0], [0.0]], [], [], np.empty((0, 1)))
    with pytest.raises(ValueError, match="disagree"):
        ModelArrays(3.0, 2, [1], [0.0], [[0.0]], [], [], np.empty((0, 2)))


# --- publishing rules, on a local folder and on S3 -------------------------------------------------------------
@pytest.fixture(
    params=[pytest.param("local", marks=pytest.mark.unit), pytest.param("s3", marks=pytest.mark.integration)]
)
def store(request, tmp_path) -> ModelStore:
    if request.param == "local":
        root: str | Bucket = str(tmp_path)
    else:
        root = request.getfixturevalue("s3_bucket_uri") + "/streamrec"
    return ModelStore(root, clock=FixedClock(datetime(2026, 11, 26, 18, 30, tzinfo=UTC)))


def test_pointer_only_after_publish(store: ModelStore) -> None:
    arrays = random_arrays(seed=4)
    v1 = store.write_arrays(arrays, dict(LINEAGE), version="v1")
    assert store.current() is None
    assert not store.bucket.exists(POINTER)
    assert [m["version"] for m in store.list_versions()] == ["v1"]
    with pytest.raises(VersionNotFoundError):
        store.load_arrays()  # nothing published yet

    order: list[str] = []
    write_json = store.bucket.write_json
    store.bucket.write_json = lambda key, obj: (order.append(key), write_json(key, obj))  # type: ignore[method-assign]
    swap = store._swap_pointer  # the pointer's compare-and-swap (a conditional PUT on S3, not write_json)
    store._swap_pointer = lambda new, token: (order.append("swap"), swap(new, token))  # type: ignore[method-assign]
    store.publish(v1)
    assert [k for k in order if k != POINTER] == ["models/versions/v1/manifest.json", "swap"]  # pointer last
    assert store.current() == "v1"
    assert store.bucket.read_json(POINTER) == {
        "version": "v1",
        "published_at": "2026-11-26T18:30:00+00:00",
        "previous": None,
    }
    assert store.read_manifest("v1")["status"] == "published"
    assert_bit_identical(store.load_arrays(), arrays)  # None = current

    v2 = store.write_arrays(random_arrays(seed=5), dict(LINEAGE, parent="v1", kind="update"), version="v2")
    assert store.current() == "v1"  # a new candidate changes nothing
    store.publish(v2)
    assert store.bucket.read_json(POINTER)["previous"] == "v1"
    store.publish(v1)  # rollback
    assert store.current() == "v1"
    assert [(m["version"], m["status"], m.get("parent")) for m in store.list_versions()] == [
        ("v1", "published", None),
        ("v2", "published", "v1"),
    ]


def test_version_without_manifest_is_invisible(store: ModelStore) -> None:
    store.write_arrays(random_arrays(seed=6), {}, version="v-crashed")
    store.bucket.delete("models/versions/v-crashed/manifest.json")  # the writer died before the manifest
    store.bucket.write_bytes("models/versions/v-half/users/part-00000.parquet", b"PAR1 torn")
    assert store.list_versions() == []
    for call in (
        lambda: store.read_manifest("v-crashed"),
        lambda: store.load_arrays("v-crashed"),
        lambda: store.publish("v-crashed"),
        lambda: store.publish("v-half"),
        lambda: store.update_manifest("v-crashed", metrics={}),
    ):
        with pytest.raises(VersionNotFoundError, match="no manifest"):
            call()
    assert store.current() is None


def test_reject_prevents_publish(store: ModelStore) -> None:
    store.write_arrays(random_arrays(seed=7), {}, version="v1")
    store.publish("v1")
    store.write_arrays(random_arrays(seed=8), {"parent": "v1"}, version="v2")
    gate = {"rmse": 1.4, "threshold": 1.0, "passed": False}
    store.reject("v2", "RMSE regression", gate=gate)
    manifest = store.read_manifest("v2")
    assert (manifest["status"], manifest["reason"], manifest["gate"]) == ("rejected", "RMSE regression", gate)
    with pytest.raises(StoreError, match="rejected"):
        store.publish("v2")
    assert store.current() == "v1"
    with pytest.raises(StoreError, match="current"):
        store.reject("v1", "oops")  # the served version cannot be rejected in place
    # a rejected (never published) version may be rewritten by a retried task, and becomes a candidate again
    store.write_arrays(random_arrays(seed=9), {"parent": "v1"}, version="v2")
    assert store.read_manifest("v2")["status"] == "candidate"


def test_published_version_is_never_overwritten(store: ModelStore) -> None:
    arrays = random_arrays(seed=10)
    store.write_arrays(arrays, {}, version="v1")
    store.write_arrays(arrays, {}, version="v1")  # an unpublished candidate may be rewritten (task retry)
    store.publish("v1")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        store.write_arrays(random_arrays(seed=11), {}, version="v1")
    assert_bit_identical(store.load_arrays("v1"), arrays)


def test_update_manifest(store: ModelStore) -> None:
    store.write_arrays(random_arrays(seed=12), dict(LINEAGE), version="v1")
    updated = store.update_manifest("v1", metrics={"rmse": 0.85, "ndcg@10": 0.31}, gate={"passed": True})
    assert store.read_manifest("v1") == updated
    assert updated["metrics"] == {"rmse": 0.85, "ndcg@10": 0.31} and updated["partitions"] == ["p-0001"]
    with pytest.raises(ValueError, match="written by the store"):
        store.update_manifest("v1", mu=0.0)
    with pytest.raises(StoreError, match="publish"):
        store.update_manifest("v1", status="published")
    store.update_manifest("v1", status="pending_review")
    store.publish("v1")
    with pytest.raises(StoreError, match="current"):
        store.update_manifest("v1", status="rejected")


def test_publish_refuses_damaged_version(store: ModelStore) -> None:
    store.write_arrays(random_arrays(seed=13), {}, version="v1")
    store.bucket.delete("models/versions/v1/items/part-00000.parquet")
    with pytest.raises(StoreError, match="damaged"):
        store.publish("v1")
    assert store.current() is None


@pytest.mark.unit
def test_version_ids(tmp_path) -> None:
    clock = FixedClock(datetime(2026, 11, 26, 18, 30, 0, tzinfo=UTC))
    store = ModelStore(LocalBucket(tmp_path), clock=clock)
    first = store.new_version_id()
    clock.ts = datetime(2026, 11, 26, 18, 30, 1, tzinfo=UTC)
    second = store.new_version_id()
    assert re.fullmatch(r"v20261126T183000-[0-9a-f]{6}", first) and first < second
    arrays = random_arrays(seed=14, n_users=3, n_items=3)
    for version in ("b", "a", "c"):
        store.write_arrays(arrays, {}, version=version)
    assert [m["version"] for m in store.list_versions()] == ["a", "b", "c"]
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200, "v 1"):
        with pytest.raises(ValueError, match="invalid model version"):
            store.write_arrays(arrays, {}, version=bad)
        with pytest.raises(ValueError, match="invalid model version"):
            store.read_manifest(bad)


# --- the seen-items side table (streamrec.core.seen) ------------------------------------------------------------
def _seen() -> SeenItems:
    # user 7 rated item 30 twice: the later timestamp (rating 2.0) counts
    return SeenItems.from_ratings(
        users=[7, 3, 7, 7, 3, 7],
        items=[30, 10, 20, 30, 2**40, 10],
        ratings=[5.0, 4.5, 3.5, 2.0, 1.0, 4.0],
        ts=[100, 5, 50, 200, 6, 7],
    )


def test_seen_table_is_listed_and_round_trips(store: ModelStore) -> None:
    seen = _seen()
    v1 = store.write_arrays(random_arrays(seed=15), dict(LINEAGE), version="v1", seen=seen)
    manifest = store.read_manifest(v1)
    assert manifest["tables"]["seen"]["rows"] == 2
    assert [f["key"] for f in manifest["tables"]["seen"]["files"]] == ["seen/part-00000.parquet"]
    loaded = store.load_seen(v1)
    assert list(loaded) == [3, 7] and loaded.n_ratings == 5
    np.testing.assert_array_equal(loaded[7], [10, 20, 30])
    np.testing.assert_array_equal(loaded.rated(7)[1], [4.0, 3.5, 2.0])
    np.testing.assert_array_equal(loaded[3], [10, 2**40])
    # a version written without one has none (not an empty one): the lookup cannot exclude anything there
    v2 = store.write_arrays(random_arrays(seed=16), {}, version="v2")
    assert store.load_seen(v2) is None and "seen" not in store.read_manifest(v2)["tables"]
    # publishing checks the seen table's files like the factor tables
    store.bucket.delete("models/versions/v1/seen/part-00000.parquet")
    with pytest.raises(StoreError, match="damaged"):
        store.publish(v1)


def test_seen_table_is_written_before_the_manifest_and_a_rewrite_drops_it(store: ModelStore) -> None:
    order: list[str] = []
    write_bytes, write_json = store.bucket.write_bytes, store.bucket.write_json
    store.bucket.write_bytes = lambda key, data: (order.append(key), write_bytes(key, data))  # type: ignore[method-assign]
    store.bucket.write_json = lambda key, obj: (order.append(key), write_json(key, obj))  # type: ignore[method-assign]
    store.write_arrays(random_arrays(seed=17), {}, version="v1", seen=_seen())
    assert order[-1] == "models/versions/v1/manifest.json"
    assert "models/versions/v1/seen/part-00000.parquet" in order[:-1]
    store.write_arrays(random_arrays(seed=17), {}, version="v1")  # a retried task without seen items
    assert store.load_seen("v1") is None
    assert not [o for o in store.bucket.list("models/versions/v1/seen")]

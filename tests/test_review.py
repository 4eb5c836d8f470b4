"""streamrec.pipeline.review without HTTP: the review log decides what is held, report keys are confined to reports/,
MovieLens titles parse, and the lookup cache follows the pointer."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec import pipeline
from streamrec.core.arrays import ModelArrays
from streamrec.pipeline import review
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore, StoreError

pytestmark = pytest.mark.unit


def arrays(seed: int, n_users: int = 5, n_items: int = 30) -> ModelArrays:
    rng = np.random.default_rng(seed)
    return ModelArrays(
        mu=3.0,
        rank=2,
        user_ids=np.arange(1, n_users + 1),
        user_bias=rng.normal(0, 0.1, n_users),
        user_factors=rng.normal(0, 0.3, (n_users, 2)),
        item_ids=np.arange(1, n_items + 1),
        item_bias=rng.normal(0, 0.3, n_items),
        item_factors=rng.normal(0, 0.3, (n_items, 2)),
    )


@pytest.fixture
def chain(tmp_path):
    """v1 (p1) -> v2 (p1, p2) -> v3 (p1, p2, p3), all published, v3 current; p1..p3 dropped in incoming/."""
    bucket = Bucket.from_uri(tmp_path / "b")
    store = ModelStore(bucket)
    parts: list[str] = []
    for k in (1, 2, 3):
        parts.append(f"p{k}")
        bucket.write_text(f"ratings/incoming/p{k}.csv", "user,item,rating\n1,1,4\n")
        store.write_arrays(arrays(k), {"kind": "update", "partitions": list(parts)}, f"v{k}")
        store.publish(f"v{k}")
    return bucket, store


def test_rollback_holds_and_requeue_releases_in_log_order(chain):
    bucket, store = chain
    ev = review.rollback(bucket, store, "v1", "bad p2", actor="ann")
    assert store.current() == "v1" and ev["held"] == ["p2", "p3"] and ev["from"] == "v3"
    assert store.read_manifest("v3")["rolled_back"]["to"] == "v1"
    plan = pipeline.pending(bucket, store)
    assert plan["base"] == "v1" and plan["pending"] == []
    assert plan["skipped"] == {
        "p1": "applied",
        "p2": f"held by rollback {ev['id']}",
        "p3": f"held by rollback {ev['id']}",
    }
    review.requeue(bucket, store, "p3", "p3 is fine")
    assert [p["id"] for p in pipeline.pending(bucket, store)["pending"]] == ["p3"]
    # a later rollback holds again what it rolls back from
    ev2 = review.rollback(bucket, store, "v3", "forward again")
    assert ev2["held"] == [] and store.current() == "v3"
    ev3 = review.rollback(bucket, store, "v2", "p3 after all", expected_current="v3")
    assert ev3["held"] == ["p3"]
    # going forward to v3 restored p2 (v3 absorbed it); going back to v2 holds p3 only
    assert ev2["restored"] == ["p2"] and ev3["restored"] == []
    assert review.hold_state(bucket)["held"] == {"p3": ev3["id"]}
    assert pipeline.pending(bucket, store)["skipped"]["p2"] == "applied"
    assert [e["action"] for e in review.events(bucket)] == ["rollback", "requeue", "rollback", "rollback"]


def test_rollback_refusals(chain):
    bucket, store = chain
    store.write_arrays(arrays(9), {"kind": "update", "partitions": ["p1", "p2", "p3", "p4"]}, "v4")
    store.reject("v4", "worse")
    with pytest.raises(StoreError, match="rejected"):
        review.rollback(bucket, store, "v4", "try")
    with pytest.raises(StoreError, match="already the current"):
        review.rollback(bucket, store, "v3", "try")
    with pytest.raises(StoreError, match="reload the page"):
        review.rollback(bucket, store, "v1", "try", expected_current="v2")
    with pytest.raises(ValueError, match="reason is required"):
        review.rollback(bucket, store, "v1", "   ")
    with pytest.raises(LookupError):
        review.rollback(bucket, store, "v-missing", "try")
    assert store.current() == "v3" and review.events(bucket) == []


def test_read_report_only_under_reports(tmp_path):
    bucket = Bucket.from_uri(tmp_path)
    bucket.write_text("reports/a/index.html", "<p>ok</p>")
    bucket.write_text("models/CURRENT", "{}")
    assert review.read_report(bucket, "reports/a/index.html") == b"<p>ok</p>"
    for key in (
        "models/CURRENT",
        "reports/../models/CURRENT",
        "/etc/passwd",
        "reports",
        "reports/./a",
        "a\\b",
    ):
        with pytest.raises(PermissionError):
            review.read_report(bucket, key)
    with pytest.raises(FileNotFoundError):
        review.read_report(bucket, "reports/none.html")


def test_read_movies_movielens_format():
    data = 'movieId,title,genres\n1,Toy Story (1995),Animation\n2,"Heat, The (1995)",Crime\nx,Bad,Drama\n'
    assert review.read_movies(data.encode()) == {1: "Toy Story (1995)", 2: "Heat, The (1995)"}
    with pytest.raises(ValueError, match="movieId and title"):
        review.read_movies(b"id,name\n1,a\n")


def test_lookup_cache_follows_the_pointer(chain):
    bucket, store = chain
    now = [0.0]
    cache = review.LookupCache(pointer_ttl=5.0, clock=lambda: now[0])
    first = review.lookup(store, 1, 5, cache=cache)
    assert first["version"] == "v3" and len(first["items"]) == 5 and first["known_user"]
    expected = sorted(
        range(30),
        key=lambda j: -(arrays(3).item_bias[j] + arrays(3).item_factors[j] @ arrays(3).user_factors[0]),
    )[:5]
    assert [it["item"] for it in first["items"]] == [j + 1 for j in expected]
    store.publish("v1")
    assert review.lookup(store, 1, 5, cache=cache)["version"] == "v3"  # pointer cached for 5 s
    now[0] = 6.0
    assert review.lookup(store, 1, 5, cache=cache)["version"] == "v1"
    assert review.lookup(store, 99, 3, cache=cache)["known_user"] is False
    with pytest.raises(ValueError):
        review.lookup(store, 1, 0, cache=cache)

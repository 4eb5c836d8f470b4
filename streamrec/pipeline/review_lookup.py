"""The review page's lookup: top-K recommendations of a user from a stored version, with item titles
(``ratings/movies.csv``), served from a small thread-safe cache of loaded versions (:class:`LookupCache`).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from streamrec.core import layout
from streamrec.core.seen import SeenItems
from streamrec.pipeline.tasks import scale_bounds
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import PUBLISHED, ModelStore, VersionNotFoundError

log = logging.getLogger("streamrec.pipeline.review")

MOVIES = layout.MOVIES


class LookupCache:
    """Loaded recommenders of the last ``max_versions`` versions, item titles, and the current pointer.

    Thread-safe (the API server may call it from a thread pool); a model is loaded at most once at a time per
    version."""

    def __init__(
        self, max_versions: int = 2, pointer_ttl: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_versions = max_versions
        self.pointer_ttl = pointer_ttl
        self.clock = clock
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._titles: dict[str, tuple[float, tuple | None, dict[int, str]]] = {}
        self._pointer: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def current(self, store: ModelStore) -> str | None:
        """``store.current()``, re-read at most every ``pointer_ttl`` seconds."""
        key = store.bucket.uri()
        now = self.clock()
        with self._lock:
            hit = self._pointer.get(key)
        if hit is not None and now - hit[0] < self.pointer_ttl:
            return hit[1]
        value = store.current()
        with self._lock:
            self._pointer[key] = (now, value)
        return value

    def forget_pointer(self) -> None:
        """Drop the cached pointer (after a rollback from this process)."""
        with self._lock:
            self._pointer.clear()

    def recommender(self, store: ModelStore, version: str) -> Any:
        """The :class:`~streamrec.pipeline.lookup.Recommender` of ``version`` (loaded once, then from memory)."""
        from streamrec.pipeline.lookup import Recommender

        key = (store.bucket.uri(), version)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None and hit[0] == PUBLISHED:
                self._models.move_to_end(key)
                return hit[2]
        manifest = store.read_manifest(version)
        stamp = (manifest.get("status"), manifest.get("created_at"))
        if hit is not None and hit[:2] == stamp and stamp[0] != PUBLISHED:
            return hit[2]
        with self._load_lock:
            rec = Recommender(
                store.load_arrays(version), seen=store.load_seen(version), scale=scale_bounds(manifest)
            )
        with self._lock:
            self._models[key] = (*stamp, rec)
            self._models.move_to_end(key)
            while len(self._models) > self.max_versions:
                self._models.popitem(last=False)
        return rec

    def titles(self, bucket: Bucket) -> dict[int, str]:
        """Item id -> title from :data:`MOVIES` (empty when the bucket has none); the object's size and time
        are checked at most every ``pointer_ttl`` seconds (one LIST on S3)."""
        key = bucket.uri()
        now = self.clock()
        with self._lock:
            hit = self._titles.get(key)
        if hit is not None and now - hit[0] < self.pointer_ttl:
            return hit[2]
        infos = [o for o in bucket.list("ratings", recursive=False) if o.key == MOVIES]
        stamp = (infos[0].size, infos[0].mtime) if infos else None
        if hit is not None and hit[1] == stamp:
            titles = hit[2]
        else:
            titles = read_movies(bucket.read_bytes(MOVIES)) if infos else {}
        with self._lock:
            self._titles[key] = (now, stamp, titles)
        return titles


def read_movies(data: bytes) -> dict[int, str]:
    """Titles from a MovieLens ``movies.csv`` (``movieId,title,genres`` with a header; quoted titles)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig", "replace")))
    header = next(reader, [])
    cols = [c.strip().lower() for c in header]
    if "movieid" not in cols or "title" not in cols:
        raise ValueError(f"{MOVIES}: header must name movieId and title (MovieLens format), got {header}")
    i_id, i_title = cols.index("movieid"), cols.index("title")
    out: dict[int, str] = {}
    for line, row in enumerate(reader, start=2):
        if len(row) <= max(i_id, i_title):
            continue
        try:
            out[int(row[i_id])] = row[i_title]
        except ValueError:
            log.warning("%s line %d: movieId %r is not an integer; skipped", MOVIES, line, row[i_id])
    return out


_DEFAULT_CACHE = LookupCache()


def lookup(
    store: ModelStore,
    user: int,
    k: int = 10,
    version: str | None = None,
    cache: LookupCache | None = None,
) -> dict:
    """Top-``k`` items and predicted ratings for ``user`` from ``version`` (None: the current one).

    Returns ``{"version", "user", "known_user", "items": [{"item", "score", "title"}], "rule", "rated"}``; a
    user the model has not seen gets the cold-start ranking (``mu + b_i``) and ``known_user`` False. ``items``
    never holds an item the user rated (the version's seen table). ``rule`` is the ranking rule applied;
    ``rated``: ``{"known"`` (the version has a seen table), ``"count"`` (items the user rated), ``"top"``: the
    user's ``k`` best-rated items ``[{"item", "rating", "title"}]``}."""
    if not 1 <= int(k) <= 100:
        raise ValueError(f"k must be in 1..100, got {k}")
    cache = cache or _DEFAULT_CACHE
    version = version or cache.current(store)
    if version is None:
        raise VersionNotFoundError(f"no published model version in {store.bucket!r}")
    rec = cache.recommender(store, version)
    titles = cache.titles(store.bucket)
    top = rec.recommend(int(user), int(k))
    seen = rec.seen if isinstance(rec.seen, SeenItems) else None
    arrays = rec.arrays

    def rating_counts(ids: Any) -> Any:
        rows = arrays.item_rows(ids)
        return np.where(rows >= 0, arrays.item_n[np.maximum(rows, 0)], 0)

    rated = seen.top_rated(int(user), int(k), rating_counts) if seen is not None else []
    return {
        "version": version,
        "user": int(user),
        "known_user": rec.arrays.user_row(int(user)) >= 0,
        "items": [{"item": i, "score": round(s, 4), "title": titles.get(i)} for i, s in top],
        "rule": rec.rule.as_dict(),
        "rated": {
            "known": seen is not None,
            "count": len(seen.get(int(user), ())) if seen is not None else None,
            "top": [{"item": i, "rating": r, "title": titles.get(i)} for i, r in rated],
        },
    }

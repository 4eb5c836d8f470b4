"""What every user has rated: the seen-items side table of a model version, and its in-memory form.

Stored beside the factor tables (``models/versions/<version>/seen/part-*.parquet``, listed in the manifest), one
row per user::

    user: long    items: array<long> (sorted ascending, unique)    ratings: array<double> (aligned with items)

``ratings[j]`` is the user's rating of ``items[j]``: when a user rated an item more than once, the latest rating
counts (a later partition over an earlier one; within one batch of ratings, the later timestamp; equal or absent
timestamps, the higher rating). Ratings are kept (not only the item ids) so the lookup can show a user's own
top-rated items exactly, and so folding in a partition is a plain "latest wins" merge: a batch of partitions gives
the same table as the partitions one by one. Held-out validation rows count as rated (the user did rate them),
though the model never trained on them.

:class:`SeenItems` is the table in memory as one CSR structure (sorted user ids, offsets, item ids, ratings):
about 16 bytes per rating (ml-25m: ~400 MB), looked up by binary search. It is a ``Mapping`` from a user id to
the item ids it rated, which is what ``Recommender(seen=...)`` takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

USER, ITEMS, RATINGS = "user", "items", "ratings"

ARROW_SEEN_SCHEMA = pa.schema(
    [
        pa.field(USER, pa.int64(), nullable=False),
        pa.field(ITEMS, pa.list_(pa.field("element", pa.int64())), nullable=False),
        pa.field(RATINGS, pa.list_(pa.field("element", pa.float64())), nullable=False),
    ]
)


class SeenItems(Mapping):
    """Users' rated items and their ratings, as CSR arrays (see the module docstring)."""

    def __init__(self, users: Any, offsets: Any, items: Any, ratings: Any) -> None:
        self.users = np.asarray(users, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.ratings = np.asarray(ratings, dtype=np.float64)
        if len(self.offsets) != len(self.users) + 1 or len(self.items) != len(self.ratings):
            raise ValueError(
                f"seen table arrays disagree: {len(self.users)} users, {len(self.offsets)} offsets, "
                f"{len(self.items)} items, {len(self.ratings)} ratings"
            )
        if len(self.users) > 1 and not bool(np.all(self.users[1:] > self.users[:-1])):
            order = np.argsort(self.users, kind="stable")
            if bool(np.any(self.users[order][1:] == self.users[order][:-1])):
                dup = self.users[order][1:][self.users[order][1:] == self.users[order][:-1]][0]
                raise ValueError(f"seen table: user {int(dup)} has more than one row")
            starts, lengths = self.offsets[:-1][order], np.diff(self.offsets)[order]
            new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            # position j of the new layout takes old element starts[r] + (j - new_offsets[r]) of its row r
            idx = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(int(new_offsets[-1]))
            self.items, self.ratings = self.items[idx], self.ratings[idx]
            self.offsets = new_offsets
            self.users = self.users[order]

    # --- Mapping: user id -> sorted item ids -------------------------------------------------------------
    def _row(self, user: Any) -> int:
        try:
            key = int(user)
        except (TypeError, ValueError):
            return -1
        pos = int(np.searchsorted(self.users, key))
        return pos if pos < len(self.users) and self.users[pos] == key else -1

    def __getitem__(self, user: Any) -> np.ndarray:
        row = self._row(user)
        if row < 0:
            raise KeyError(user)
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    def __contains__(self, user: object) -> bool:
        return self._row(user) >= 0

    def __iter__(self) -> Iterator[int]:
        return (int(u) for u in self.users)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_ratings(self) -> int:
        return len(self.items)

    def rated(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids sorted, their ratings) of ``user``; empty arrays for a user with no row."""
        row = self._row(user)
        if row < 0:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        s, e = self.offsets[row], self.offsets[row + 1]
        return self.items[s:e], self.ratings[s:e]

    def top_rated(self, user: int, n: int, popularity: Any = None) -> list[tuple[int, float]]:
        """The user's ``n`` best-rated items ``(item, rating)``: highest rating first, then the more popular item
        (``popularity``: a function from an array of item ids to their rating counts; e.g. the model's
        ``item_n``), then the smaller id."""
        items, ratings = self.rated(user)
        if not len(items) or n <= 0:
            return []
        pop = np.zeros(len(items)) if popularity is None else np.asarray(popularity(items), dtype=np.float64)
        order = np.lexsort((items, -pop, -ratings))[:n]
        return [(int(i), float(r)) for i, r in zip(items[order], ratings[order], strict=True)]

    # --- conversions -----------------------------------------------------------------------------------------
    @classmethod
    def from_table(cls, table: pa.Table) -> SeenItems:
        """From an Arrow table of :data:`ARROW_SEEN_SCHEMA` (as Spark or :meth:`to_table` writes it)."""
        table = table.select([USER, ITEMS, RATINGS]).combine_chunks()
        users = np.asarray(table.column(USER).to_numpy(), dtype=np.int64)
        if not len(users):
            return cls.empty()
        items_col = _one_chunk(table.column(ITEMS))
        ratings_col = _one_chunk(table.column(RATINGS))
        if items_col.null_count or ratings_col.null_count:
            raise ValueError("seen table: null items or ratings list")
        n_items = items_col.value_lengths().to_numpy(zero_copy_only=False)
        n_ratings = ratings_col.value_lengths().to_numpy(zero_copy_only=False)
        if not np.array_equal(n_items, n_ratings):
            bad = int(np.flatnonzero(n_items != n_ratings)[0])
            raise ValueError(
                f"seen table: user {int(users[bad])} has {int(n_items[bad])} items but {int(n_ratings[bad])} ratings"
            )
        offsets = np.concatenate([[0], np.cumsum(n_items)]).astype(np.int64)
        items = items_col.flatten().to_numpy(zero_copy_only=False)
        ratings = ratings_col.flatten().to_numpy(zero_copy_only=False)
        return cls(users, offsets, items, ratings)

    @classmethod
    def from_ratings(cls, users: Any, items: Any, ratings: Any, ts: Any = None) -> SeenItems:
        """From aligned rating columns, with the module docstring's rule for repeated (user, item) pairs
        (latest timestamp; then the higher rating). ``ts`` may be None or hold NaN / None (oldest)."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        r = np.asarray(ratings, dtype=np.float64)
        if ts is None:
            t = np.zeros(len(u), dtype=np.float64)
        else:
            t = np.asarray(
                [np.nan if x is None else x for x in ts] if isinstance(ts, list) else ts, dtype=float
            )
            t = np.where(np.isnan(t), -np.inf, t)
        if not len(u):
            return cls.empty()
        order = np.lexsort((r, t, i, u))  # by user, item, then ts, then rating: the kept one is the last
        u, i, r = u[order], i[order], r[order]
        last = np.ones(len(u), dtype=bool)
        last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        u, i, r = u[last], i[last], r[last]
        uniq, starts = np.unique(u, return_index=True)
        offsets = np.concatenate([starts, [len(u)]]).astype(np.int64)
        return cls(uniq, offsets, i, r)

    @classmethod
    def empty(cls) -> SeenItems:
        return cls(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0))

    def to_table(self) -> pa.Table:
        """As an Arrow table of :data:`ARROW_SEEN_SCHEMA` (one row per user, ids ascending)."""
        offsets = pa.array(self.offsets.astype(np.int32), pa.int32())
        items = pa.ListArray.from_arrays(offsets, pa.array(self.items, pa.int64()))
        ratings = pa.ListArray.from_arrays(offsets, pa.array(self.ratings, pa.float64()))
        return pa.Table.from_arrays(
            [
                pa.array(self.users, pa.int64()),
                items.cast(ARROW_SEEN_SCHEMA.field(ITEMS).type),
                ratings.cast(ARROW_SEEN_SCHEMA.field(RATINGS).type),
            ],
            schema=ARROW_SEEN_SCHEMA,
        )


def _one_chunk(col: Any) -> Any:
    if isinstance(col, pa.ChunkedArray):
        return pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type)
    return col

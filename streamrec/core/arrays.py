r"""A model version as numpy arrays: the form in which the gate, the prequential scores and serving read it.

``ModelArrays`` holds ``mu``, the rank and, per side, the sorted ids, biases, rating counts and factor rows; the
Parquet factor tables of the store convert to and from it with pyarrow (``side_from_table`` /
``table_from_side``).

:func:`predict` (ids) / :func:`predict_rows` (row indices) is the one numpy form of the prediction rule
``r̂ = mu + b_u + b_i + p_u · q_i`` with its fallbacks and clip: the gate (``streamrec.pipeline.tasks.rmse``), the
prequential scores of the update task (``streamrec.spark.update``) and serving (``streamrec.pipeline.lookup``) all
call it; ``streamrec.spark.evaluate.predict`` writes the same formula as Spark column expressions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

ARROW_FACTOR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bias", pa.float64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("factors", pa.list_(pa.field("element", pa.float64(), nullable=False)), nullable=False),
    ]
)


@dataclass
class ModelArrays:
    """A model version as numpy arrays, rows sorted by id (sorted on construction if needed).

    ``user_factors`` is ``(n_users, rank)`` float64 C-contiguous, likewise ``item_factors``. ``user_n`` /
    ``item_n`` are the per-entity rating counts (zeros when not given) and ``n`` the total ratings absorbed.
    Look ids up with :meth:`user_rows` / :meth:`item_rows` (binary search over the sorted ids, -1 when unknown).
    """

    mu: float
    rank: int
    user_ids: np.ndarray
    user_bias: np.ndarray
    user_factors: np.ndarray
    item_ids: np.ndarray
    item_bias: np.ndarray
    item_factors: np.ndarray
    manifest: dict = field(default_factory=dict)
    n: int = 0
    user_n: np.ndarray | None = None
    item_n: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.mu = float(self.mu)
        self.rank = int(self.rank)
        self.n = int(self.n)
        self.user_ids, self.user_bias, self.user_factors, self.user_n = _normalise_side(
            "user", self.rank, self.user_ids, self.user_bias, self.user_factors, self.user_n
        )
        self.item_ids, self.item_bias, self.item_factors, self.item_n = _normalise_side(
            "item", self.rank, self.item_ids, self.item_bias, self.item_factors, self.item_n
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def version(self) -> str | None:
        """The version id from the manifest (None for arrays not read from a store)."""
        return self.manifest.get("version")

    def user_rows(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Row index of each user id (int64 array, -1 for unknown ids)."""
        return _rows(self.user_ids, ids)

    def item_rows(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Row index of each item id (int64 array, -1 for unknown ids)."""
        return _rows(self.item_ids, ids)

    def user_row(self, user: int) -> int:
        """Row index of one user id, -1 when unknown."""
        return _row(self.user_ids, user)

    def item_row(self, item: int) -> int:
        """Row index of one item id, -1 when unknown."""
        return _row(self.item_ids, item)

    @classmethod
    def from_sides(
        cls,
        mu: float,
        rank: int,
        users: tuple[np.ndarray, ...],
        items: tuple[np.ndarray, ...],
        manifest: dict,
        n: int,
    ) -> ModelArrays:
        """From ``(ids, bias, n, factors)`` tuples of each side, as ``side_from_table`` returns them."""
        return cls(
            mu=mu,
            rank=rank,
            user_ids=users[0],
            user_bias=users[1],
            user_factors=users[3],
            item_ids=items[0],
            item_bias=items[1],
            item_factors=items[3],
            manifest=manifest,
            n=n,
            user_n=users[2],
            item_n=items[2],
        )


class Parts(NamedTuple):
    """The five arrays the prediction rule reads, for state that is not a whole :class:`ModelArrays` (e.g. the
    touched rows of an update task); a ``ModelArrays`` has the same attributes and can be passed instead."""

    mu: float
    user_bias: np.ndarray
    user_factors: np.ndarray
    item_bias: np.ndarray
    item_factors: np.ndarray


def predict(
    model: ModelArrays,
    user_ids: Iterable[int] | np.ndarray,
    item_ids: Iterable[int] | np.ndarray,
    clip: tuple[float, float] | None = None,
    factors: bool = True,
) -> np.ndarray:
    r"""Predicted ratings of the aligned pairs ``(user_ids[k], item_ids[k])`` (float64 array).

    The rule (biased matrix factorisation), with ``b`` the biases and ``p`` / ``q`` the factor rows::

        r̂(u, i) = mu + b_u + b_i + p_u · q_i        u and i known
                  mu + b_i                          u unknown (not in the model)
                  mu + b_u                          i unknown
                  mu                                both unknown

    that is, an unknown id contributes neither its bias nor a dot product (never NaN for a cold id, unlike
    Spark ALS, SPARK-14489). Evaluated in this order, which every caller relies on for its bits:
    ``((mu + b_u) + b_i) + p_u · q_i``, the dot product by ``numpy.einsum("ij,ij->i")``.

    ``clip=(low, high)``: the result is ``min(max(r̂, low), high)`` (``numpy.clip``; NaN stays NaN), i.e.
    clipped to the rating scale; None: unclipped.

    ``factors=False``: the biases-only baseline ``mu + b_u + b_i`` (the dot product left out for every pair,
    fallbacks and clip as above), which the gate scores to show the factors earn their keep.
    """
    return predict_rows(model, model.user_rows(user_ids), model.item_rows(item_ids), clip, factors)


def predict_rows(
    model: ModelArrays | Parts,
    user_rows: np.ndarray,
    item_rows: np.ndarray,
    clip: tuple[float, float] | None = None,
    factors: bool = True,
) -> np.ndarray:
    """:func:`predict` on row indices into ``model``'s arrays (``-1`` = unknown id) instead of ids: the rule,
    the fallbacks, the order of evaluation and the clip of :func:`predict`, which calls it after the lookup."""
    u = np.asarray(user_rows, dtype=np.int64).reshape(-1)
    i = np.asarray(item_rows, dtype=np.int64).reshape(-1)
    if len(u) != len(i):
        raise ValueError(f"{len(u)} users but {len(i)} items")
    ku, ki = u >= 0, i >= 0
    pred = np.full(len(u), float(model.mu), dtype=np.float64)
    pred[ku] += model.user_bias[u[ku]]
    pred[ki] += model.item_bias[i[ki]]
    if factors:
        both = ku & ki
        pred[both] += np.einsum("ij,ij->i", model.user_factors[u[both]], model.item_factors[i[both]])
    if clip is not None:
        pred = np.clip(pred, clip[0], clip[1])
    return pred


def _normalise_side(
    side: str,
    rank: int,
    ids: Any,
    bias: Any,
    factors: Any,
    counts: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    factors = np.asarray(factors, dtype=np.float64)
    if factors.size == 0:
        factors = factors.reshape(len(ids), rank)
    counts = (
        np.zeros(len(ids), dtype=np.int64)
        if counts is None
        else np.asarray(counts, dtype=np.int64).reshape(-1)
    )
    if (
        factors.ndim != 2
        or factors.shape != (len(ids), rank)
        or len(bias) != len(ids)
        or len(counts) != len(ids)
    ):
        raise ValueError(
            f"{side} arrays disagree: {len(ids)} ids, {len(bias)} biases, {len(counts)} counts, "
            f"factors {factors.shape} (rank {rank})"
        )
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        ids, bias, factors, counts = ids[order], bias[order], factors[order], counts[order]
        dup = ids[1:] == ids[:-1]
        if dup.any():
            raise ValueError(
                f"duplicate {side} id {int(ids[1:][dup][0])}: factor tables hold one row per entity"
            )
    return ids, np.ascontiguousarray(bias), np.ascontiguousarray(factors), np.ascontiguousarray(counts)


def _rows(sorted_ids: np.ndarray, ids: Iterable[int] | np.ndarray) -> np.ndarray:
    query = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).reshape(-1)
    if len(sorted_ids) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, query)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos_c] == query, pos_c, -1).astype(np.int64)


def _row(sorted_ids: np.ndarray, key: int) -> int:
    pos = int(np.searchsorted(sorted_ids, key))
    return pos if pos < len(sorted_ids) and sorted_ids[pos] == key else -1


def side_from_table(
    table: pa.Table, rank: int, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, bias, n, factors n×rank) from an Arrow factor table; every factor vector must have length ``rank``."""
    ids = _column(table, "id", np.int64)
    bias = _column(table, "bias", np.float64)
    counts = _column(table, "n", np.int64)
    lists = table.column("factors").combine_chunks()
    if isinstance(lists, pa.ChunkedArray):  # pyarrow < 17 returns a ChunkedArray for zero chunks
        lists = pa.concat_arrays(lists.chunks) if lists.num_chunks else pa.array([], lists.type)
    if lists.null_count:
        raise ValueError(f"{side}: null factor vectors")
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False) if len(lists) else np.empty(0, np.int64)
    if len(lengths) and not bool(np.all(lengths == rank)):
        bad = int(np.flatnonzero(lengths != rank)[0])
        raise ValueError(
            f"{side}: factor vector of id {int(ids[bad])} has length {int(lengths[bad])}, rank is {rank}"
        )
    values = lists.flatten()  # respects offsets/slices
    if values.null_count:
        raise ValueError(f"{side}: null factor values")
    flat = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return ids, bias, counts, flat.reshape(len(ids), rank)


def _column(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise ValueError(f"null values in column {name!r}")
    return np.asarray(col.to_numpy(), dtype=dtype)


def table_from_side(ids: np.ndarray, bias: np.ndarray, counts: np.ndarray, factors: np.ndarray) -> pa.Table:
    n, rank = factors.shape
    offsets = np.arange(n + 1, dtype=np.int64) * rank
    values = pa.array(np.ascontiguousarray(factors).reshape(-1), type=pa.float64())
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), type=pa.int32()), values)
    lists = lists.cast(ARROW_FACTOR_SCHEMA.field("factors").type)
    return pa.Table.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(bias, pa.float64()), pa.array(counts, pa.int64()), lists],
        schema=ARROW_FACTOR_SCHEMA,
    )


# --------------------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------------------

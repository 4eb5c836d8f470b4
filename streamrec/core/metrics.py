r"""Error metrics of point predictions: the one form every scorer returns, and its numpy computation.

For ratings :math:`r_k` and predictions :math:`\hat r_k` (``streamrec.core.arrays.predict``: clipped, with the
fallbacks for unknown ids), :math:`\varepsilon_k = r_k - \hat r_k` and::

    RMSE = sqrt( Σ ε² / n )        MAE = Σ |ε| / n

with the count of rows that used each fallback (:data:`FALLBACKS`): ``none`` (known user and item),
``user_unknown``, ``item_unknown``, ``both_unknown``.

The dict (:func:`metrics_dict`) is what a manifest's ``metrics.validation`` and each ``metrics.prequential``
entry hold, whoever computed it: Spark (``streamrec.spark.evaluate.error_metrics``, column expressions over the
data), the update's grouped-map task (``streamrec.spark.update``: the sums :data:`STATS` of each partition) or
the gate (``streamrec.pipeline.gate_numbers``, in numpy on the candidate's validation set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

FALLBACKS = ("none", "user_unknown", "item_unknown", "both_unknown")
"""Which rule predicted a row: known user and item, unknown user, unknown item, both unknown."""

STATS = ("sse", "sae", *FALLBACKS)
"""The sums :func:`error_sums` returns, in this order: Σ ε², Σ |ε|, then the count of each fallback."""


def fallback_codes(known_user: np.ndarray, known_item: np.ndarray) -> np.ndarray:
    """Index into :data:`FALLBACKS` of each row, from the masks of known users and known items."""
    ku, ki = np.asarray(known_user, bool), np.asarray(known_item, bool)
    return np.where(ku & ki, 0, np.where(ki, 1, np.where(ku, 2, 3)))


def _errors(
    rating: np.ndarray, prediction: np.ndarray, known_user: np.ndarray, known_item: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ε of each row, the count of each fallback in :data:`FALLBACKS` order)."""
    err = np.asarray(rating, np.float64) - np.asarray(prediction, np.float64)
    return err, np.bincount(fallback_codes(known_user, known_item), minlength=len(FALLBACKS))


def error_sums(
    rating: np.ndarray, prediction: np.ndarray, known_user: np.ndarray, known_item: np.ndarray
) -> list[float]:
    """:data:`STATS` of the rows: Σ ε², Σ |ε| and the count of each fallback (floats, summable across parts)."""
    err, counts = _errors(rating, prediction, known_user, known_item)
    return [float(err @ err), float(np.abs(err).sum()), *map(float, counts)]


def metrics_dict(n: int, mse: float | None, mae: float | None, fallbacks: Mapping[str, float | None]) -> dict:
    """The metrics dict every scorer returns (``rmse``, ``mae``, ``n``, ``fallbacks`` other than ``none``);
    ``rmse`` and ``mae`` are None when there is nothing to score."""
    if n == 0:
        return {"rmse": None, "mae": None, "n": 0, "fallbacks": dict.fromkeys(FALLBACKS[1:], 0)}
    return {
        "rmse": math.sqrt(mse) if mse is not None else None,
        "mae": float(mae) if mae is not None else None,
        "n": n,
        "fallbacks": {f: int(fallbacks.get(f) or 0) for f in FALLBACKS[1:]},
    }


def from_sums(n: int, sums: Sequence[float] | None) -> dict:
    """:func:`metrics_dict` of ``n`` rows from their :data:`STATS` sums (None or n = 0: nothing scored)."""
    if not n or sums is None:
        return metrics_dict(0, None, None, {})
    s = dict(zip(STATS, sums, strict=True))
    return metrics_dict(n, s["sse"] / n, s["sae"] / n, s)


def error_metrics(
    rating: np.ndarray, prediction: np.ndarray, known_user: np.ndarray, known_item: np.ndarray
) -> dict:
    """:func:`metrics_dict` of predictions against ratings, in numpy: ``rmse = sqrt(mean(ε²))``,
    ``mae = mean(|ε|)`` (what Spark's ``error_metrics`` returns for the same rows, to rounding: its sums run in
    another order)."""
    err, counts = _errors(rating, prediction, known_user, known_item)
    if len(err) == 0:
        return metrics_dict(0, None, None, {})
    return metrics_dict(
        len(err),
        float(np.mean(err * err)),
        float(np.mean(np.abs(err))),
        dict(zip(FALLBACKS, counts.tolist(), strict=True)),
    )

"""Column names and the rating scale: the data contract every part of streamrec shares (no Spark here;
the Spark types of the same columns are :mod:`streamrec.spark.schema`).

Ratings (every loader returns this, whatever the input format)::

    user: long   (> 0)      item: long (> 0)      rating: double (on the configured scale)
    ts:   long   (epoch seconds, nullable: timestamps are optional in plain CSV/Parquet input)

Factor tables (one per side, exactly one row per entity)::

    id: long    bias: double    n: long (ratings absorbed so far)    factors: array<double> (length = rank)
"""

from __future__ import annotations

from dataclasses import dataclass

USER, ITEM, RATING, TS = "user", "item", "rating", "ts"
RATING_COLUMNS = (USER, ITEM, RATING, TS)


@dataclass(frozen=True)
class RatingScale:
    """The rating scale: ``low <= rating <= high`` and ``(rating - low) / step`` an integer.

    MovieLens latest uses half stars (0.5 .. 5.0, step 0.5); MovieLens 100k/1M use whole stars (1 .. 5, step 1).
    """

    low: float = 0.5
    high: float = 5.0
    step: float = 0.5

    def __post_init__(self) -> None:
        if not (self.low < self.high and self.step > 0):
            raise ValueError(f"invalid rating scale {self}")

    @classmethod
    def parse(cls, text: str) -> RatingScale:
        """Parse ``"0.5:5:0.5"`` (low:high:step)."""
        try:
            low, high, step = (float(x) for x in text.split(":"))
        except ValueError as exc:
            raise ValueError(f"rating scale must be LOW:HIGH:STEP, e.g. 0.5:5:0.5, not {text!r}") from exc
        return cls(low, high, step)

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}:{self.step:g}"


HALF_STAR = RatingScale(0.5, 5.0, 0.5)
WHOLE_STAR = RatingScale(1.0, 5.0, 1.0)

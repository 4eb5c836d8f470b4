"""The small pieces every part of the contract's reports shares: a failure entry, JSON-safe values, counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def jsonable(v: Any) -> Any:
    """A strict-JSON value (NaN/NA -> None, numpy scalars -> Python, containers recursively, else str)."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def entry(
    rule: str,
    column: str | None,
    count: int,
    values: Sequence[Any],
    first: str | None,
    message: str,
) -> dict:
    """One problem of a :class:`~streamrec.pipeline.contract.check.PartitionCheck` (``failed``): the rule (a GX
    expectation or a file rule), the column, how many rows/lines, a few values, where the first one is, and the
    one-line message."""
    return {
        "expectation_type": rule,
        "column": column,
        "unexpected_count": int(count),
        "unexpected_values": [jsonable(v) for v in values],
        "first": first,
        "message": message,
    }


def n_rows(n: int) -> str:
    """``"1 row"``, ``"2 rows"``."""
    return f"{n} row" if n == 1 else f"{n} rows"


def mib(n: int) -> str:
    """Bytes as ``"64.0 MiB"``."""
    return f"{n / (1 << 20):.1f} MiB"


def size_text(n: int) -> str:
    """Bytes for a reader: ``"812 bytes"``, ``"3.4 KiB"``, ``"1.2 MiB"``."""
    if n < 1024:
        return f"{n} byte{'' if n == 1 else 's'}"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return mib(n)

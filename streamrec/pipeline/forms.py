"""The hyper-parameter Params of the DAGs' trigger forms, generated from the parameter dataclasses' fields.

Read by the DAG files when Airflow parses them, so this module imports only :mod:`streamrec.core.params`
(dataclasses, no numpy) and ``streamrec.pipeline`` loads its task functions lazily. No Airflow either: each Param
is a plain dict of ``airflow.sdk.Param``'s keyword arguments (``default``, ``description`` and the JSON Schema:
``type``, ``title``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ...), which the DAG file wraps as
``Param(**spec)``. Airflow validates a trigger's conf against that schema before a run starts, with the bounds
``BootstrapParams`` / ``UpdateParams`` enforce themselves (``streamrec.core.params``): ``rank = 0`` or
``lr = 1.5`` is refused by the form, not by a Spark job minutes later.

Every hyper-parameter Param defaults to ``null``, meaning "not given": the task takes the value from the named
parameter set in the bucket, else the built-in default (``streamrec.storage.paramsets``: explicit > stored set >
built-in default).
"""

from __future__ import annotations

import os
from typing import Any

from streamrec.core.params import BootstrapParams, ParamSpec, UpdateParams, param_specs

PARTS: dict[str, type] = {"bootstrap": BootstrapParams, "update": UpdateParams}
"""The parameter dataclass of each part (as in ``streamrec.storage.paramsets``)."""

DEFAULT_SET = "tuned"
"""The parameter set a form names by default (``streamrec.storage.paramsets.DEFAULT_NAME``; a test keeps them
equal: importing ``storage`` here would load the bucket code when the DAGs are parsed)."""

NULL_MEANS = "empty: the parameter set's value, else the built-in default"
NULL_MEANS_RETRAIN = "empty: the parameter set's value, else the current model's, else the built-in default"

_BOUNDS = (
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("exclusive_minimum", "exclusiveMinimum"),
    ("exclusive_maximum", "exclusiveMaximum"),
)


def specs(part: str) -> tuple[ParamSpec, ...]:
    """The :class:`~streamrec.core.params.ParamSpec` of every field of ``part`` (``bootstrap`` | ``update``)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {sorted(PARTS)}, got {part!r}")
    return param_specs(PARTS[part])


def field_names(part: str) -> list[str]:
    return [s.name for s in specs(part)]


def json_schema(spec: ParamSpec, nullable: bool = True, null_means: str = NULL_MEANS) -> dict[str, Any]:
    """One field as ``Param`` keyword arguments: ``{"default": None, "type": ["null", "integer"], "title": ...,
    "description": ..., "minimum": 1, ...}`` (``nullable=False``: the dataclass default and a plain type;
    ``null_means``: what an empty value stands for, in the description, followed by the built-in default)."""
    out: dict[str, Any] = {
        "default": None if nullable else spec.default,
        "type": ["null", spec.kind] if nullable else spec.kind,
        "title": spec.title,
        "description": spec.doc
        + (f"; {spec.rule()}" if spec.bounded else "")
        + (f" ({null_means} {spec.default})" if nullable else f" (default {spec.default})"),
    }
    for attr, key in _BOUNDS:
        value = getattr(spec, attr)
        if value is not None:
            out[key] = value
    return out


def hyper_params(
    part: str, exclude: tuple[str, ...] = (), null_means: str = NULL_MEANS
) -> dict[str, dict[str, Any]]:
    """``{field: Param kwargs}`` for every field of ``part`` (but ``exclude``), each nullable, default null."""
    return {s.name: json_schema(s, null_means=null_means) for s in specs(part) if s.name not in exclude}


def param_set_param(description: str | None = None) -> dict[str, Any]:
    """The ``param_set`` Param: the name of the stored parameter set (default ``tuned``; empty or ``none``:
    built-in defaults only)."""
    return {
        "default": DEFAULT_SET,
        "type": ["null", "string"],
        "title": "parameter set",
        "description": description
        or "named parameter set params/<name>.json in the bucket, written by streamrec_tune "
        "(empty or 'none': built-in defaults only)",
    }


def hyper_form(
    part: str, exclude: tuple[str, ...] = (), null_means: str = NULL_MEANS
) -> dict[str, dict[str, Any]]:
    """:func:`hyper_params` of ``part`` plus ``param_set``: what a form that fits or updates a model shows."""
    return {**hyper_params(part, exclude, null_means), "param_set": param_set_param()}


MAX_PARTITIONS_ENV = "STREAMREC_MAX_PARTITIONS_PER_RUN"
"""As ``streamrec.pipeline.tasks.MAX_PARTITIONS_ENV`` (a test keeps them equal)."""


def max_partitions_default() -> int:
    """The update form's default for ``max_partitions_per_run``: ``$STREAMREC_MAX_PARTITIONS_PER_RUN`` when it is
    a whole number >= 1, else 1 (read when the DAG is parsed: a bad value must not break the DAG's import; the
    task re-checks the Param with ``pipeline.max_partitions_per_run``)."""
    text = os.environ.get(MAX_PARTITIONS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else 1

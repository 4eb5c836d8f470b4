"""Named parameter sets: hyper-parameters chosen by tuning, stored in the bucket, used by default afterwards.

A parameter set is one JSON object at ``params/<name>.json`` (``name`` default ``tuned``)::

    {"name": "tuned", "created_at": "...", "digest": "3f2a1c9b0e7d",
     "bootstrap": {"rank": 20, "reg": 0.08, "iterations": 12},          # only the fields that were tuned
     "update":    {"lr": 0.7, "reg": 3.1, "passes": 4, "decay": 0.85},
     "tuning": {"bootstrap": {"run": ..., "report": ..., "scores": ...}, "update": {...}}}

Each part (``bootstrap`` / ``update``) is optional; tuning one part keeps the other part of an existing set
(:func:`save` merges), so tuning the update later does not throw away a tuned bootstrap.

Resolution: explicit > stored set > built-in default
----------------------------------------------------
A DAG's trigger form cannot tell "the user typed 50" from "the user left the default 50". So the hyper-parameter
Params of the bootstrap and update DAGs default to ``null``, and ``null`` means "not given":
:func:`resolve` takes each field from the explicit value when it is not ``None``, else from the stored set when
it has that field, else from the dataclass default (``streamrec.core.params``). The set's name is a Param too (default
``tuned``; empty or ``none`` = no set, built-in defaults). A missing set is not an error: a fresh deployment
simply uses the built-in defaults until a tuning run stores one.

Lineage: the fitted version's manifest records ``params.param_set.<part> = {"name", "digest"}`` (see
:func:`lineage` and ``streamrec.spark.runs``), where ``digest`` is a hash of the set's values for that part; an
update version inherits its base's bootstrap entry, so every version says which set produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from streamrec.core import layout, search
from streamrec.storage.bucket import Bucket

PREFIX = layout.PARAMS
DEFAULT_NAME = "tuned"
PARTS = search.PARTS
NO_SET = ("", "none", "default", "defaults")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid set name (letters, digits, ``._-``, one key segment, max 64)."""
    return layout.check_name(name, "parameter set name")


def key(name: str) -> str:
    """Bucket key of a set: ``params/<name>.json``."""
    return f"{PREFIX}/{check_name(name)}.json"


def _param_class(part: str):
    from streamrec.core.params import BootstrapParams, UpdateParams

    if part == "bootstrap":
        return BootstrapParams
    if part == "update":
        return UpdateParams
    raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def field_names(part: str) -> list[str]:
    return [f.name for f in fields(_param_class(part))]


def digest(values: dict | None) -> str | None:
    """12 hex of the SHA-256 of the canonical JSON of ``values`` (None for no values)."""
    if not values:
        return None
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load(bucket: Bucket | str, name: str | None) -> dict | None:
    """The stored set ``name``, or None when ``name`` means "no set" or nothing is stored under it."""
    if name is None or str(name).strip().lower() in NO_SET:
        return None
    b = Bucket.from_uri(bucket)
    try:
        return b.read_json(key(name))
    except FileNotFoundError:
        return None


def save(
    bucket: Bucket | str,
    name: str,
    values: dict[str, dict],
    tuning: dict[str, dict] | None = None,
    when: datetime | None = None,
) -> dict:
    """Store ``values`` (``{"bootstrap": {...}, "update": {...}}``, either part optional) under ``name``.

    Parts not in ``values`` are kept from the set already stored under that name. Each part is validated by
    building its dataclass (unknown fields are refused). Returns the stored document."""
    b = Bucket.from_uri(bucket)
    check_name(name)
    old = load(b, name) or {}
    doc: dict[str, Any] = {"name": name}
    doc["tuning"] = dict(old.get("tuning") or {})
    for part in PARTS:
        if part in values and values[part]:
            given = dict(values[part])
            unknown = sorted(set(given) - set(field_names(part)))
            if unknown:
                raise ValueError(f"unknown {part} parameter(s) {unknown} for set {name!r}")
            _param_class(part).from_dict(given)  # validates ranges
            doc[part] = given
            if tuning and part in tuning:
                doc["tuning"][part] = tuning[part]
        elif old.get(part):
            doc[part] = old[part]
    doc["digests"] = {part: digest(doc.get(part)) for part in PARTS if doc.get(part)}
    doc["digest"] = digest({part: doc.get(part) for part in PARTS if doc.get(part)})
    doc["created_at"] = (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    b.write_json(key(name), doc)
    return doc


def resolve(
    part: str, given: dict | None, stored: dict | None, fallback: dict | None = None
) -> tuple[Any, dict[str, str]]:
    """The parameters of ``part``: per field, ``given`` (when not None) > ``stored[part]`` > ``fallback`` (e.g.
    the parameters of the model a retrain replaces) > dataclass default.

    Returns ``(params dataclass, {field: "explicit" | "set" | "model" | "default"})``."""
    cls = _param_class(part)
    given = given or {}
    fallback = fallback or {}
    from_set = (stored or {}).get(part) or {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in field_names(part):
        if given.get(name) is not None:
            values[name], sources[name] = given[name], "explicit"
        elif from_set.get(name) is not None:
            values[name], sources[name] = from_set[name], "set"
        elif fallback.get(name) is not None:
            values[name], sources[name] = fallback[name], "model"
        else:
            sources[name] = "default"
    return cls.from_dict(values), sources


def lineage(part: str, stored: dict | None, sources: dict[str, str]) -> dict | None:
    """What a manifest records about the set behind ``part``: ``{"name", "digest", "overridden"}``, or None
    when no stored value was used (no set, or every field given explicitly)."""
    if not stored or not stored.get(part) or "set" not in sources.values():
        return None
    return {
        "name": stored.get("name"),
        "digest": digest(stored.get(part)),
        "overridden": sorted(k for k, v in sources.items() if v == "explicit" and k in stored[part]),
    }


def resolve_in_bucket(
    bucket: Bucket | str, name: str | None, part: str, given: dict | None, fallback: dict | None = None
) -> tuple[Any, dict | None, dict[str, str]]:
    """:func:`load` + :func:`resolve` + :func:`lineage`: ``(params, lineage or None, sources)``."""
    stored = load(bucket, name)
    params, sources = resolve(part, given, stored, fallback)
    return params, lineage(part, stored, sources), sources


def lineage_argv(entry: dict | None) -> list[str]:
    """The job flag carrying a lineage entry (``--param-set NAME@DIGEST``); empty when there is none."""
    if not entry:
        return []
    return ["--param-set", f"{entry['name']}@{entry['digest']}"]


def parse_lineage_arg(text: str | None) -> dict | None:
    """Inverse of :func:`lineage_argv`'s value: ``"tuned@3f2a1c9b0e7d"`` -> ``{"name", "digest"}``."""
    if not text:
        return None
    name, sep, dig = text.partition("@")
    if not sep or not dig:
        raise ValueError(f"--param-set expects NAME@DIGEST, got {text!r}")
    return {"name": check_name(name), "digest": dig}

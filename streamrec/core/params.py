"""The hyper-parameters of the two ways to change the factor model (the model's state is
:class:`streamrec.core.arrays.ModelArrays` on the driver and :class:`streamrec.spark.model.FactorModel` on Spark).

Prediction rule (the talk's "streaming ALS" model, Koren's biased MF)::

    r̂(u, i) = mu + b_u + b_i + p_u · q_i

``mu`` is the mean of every rating the model has absorbed and ``n`` their count; ``users`` / ``items`` hold one
row per entity: ``id, bias, n, factors`` (``n``: ratings of that entity absorbed so far, which sets how far a new
observation may move it). The model has no behaviour: ``spark.bootstrap.fit`` makes one, ``spark.update.apply`` makes the next.

One definition per parameter
----------------------------
Each field carries its bounds and its description in ``field(metadata=...)`` (keys ``min``, ``max``,
``exclusive_min``, ``exclusive_max``, ``title``, ``doc``), the way Spark ML's ``ALSParams`` keep one ``Param``
with its validator that every front end reads. :func:`param_specs` reads them as :class:`ParamSpec`; from there

* ``__post_init__`` refuses a value outside its bounds (or of the wrong type), naming the field and the rule;
* ``add_arguments`` puts the description and the rule in each job flag's ``--help``;
* ``streamrec.pipeline.forms`` renders each as the JSON Schema of a DAG trigger-form Param (no Airflow here).
"""

from __future__ import annotations

import argparse
import functools
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_KINDS = {"int": "integer", "float": "number"}


@dataclass(frozen=True)
class ParamSpec:
    """One hyper-parameter as its field's metadata describes it.

    ``kind``: the JSON Schema type (``integer`` or ``number``); ``minimum`` / ``maximum`` are inclusive bounds,
    ``exclusive_minimum`` / ``exclusive_maximum`` strict ones (None: unbounded on that side)."""

    name: str
    kind: str
    default: Any
    title: str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None

    @property
    def bounded(self) -> bool:
        return any(
            b is not None
            for b in (self.minimum, self.maximum, self.exclusive_minimum, self.exclusive_maximum)
        )

    def rule(self) -> str:
        """The bounds in words: ``>= 1``, ``in [0, 1]``, ``in (0, 1]``, ``any value``."""
        low, low_open = (
            (self.exclusive_minimum, True) if self.exclusive_minimum is not None else (self.minimum, False)
        )
        high, high_open = (
            (self.exclusive_maximum, True) if self.exclusive_maximum is not None else (self.maximum, False)
        )
        if low is not None and high is not None:
            return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
        if low is not None:
            return f"{'>' if low_open else '>='} {_num(low)}"
        if high is not None:
            return f"{'<' if high_open else '<='} {_num(high)}"
        return "any value"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (``"<name> must be <rule>, got <value>"``), or None when it is valid."""
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if self.kind == "integer" and not is_int:
            return f"{self.name} must be a whole number ({self.rule()}), got {value!r}"
        if not is_real:
            return f"{self.name} must be a number ({self.rule()}), got {value!r}"
        ok = (
            (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
            and (self.exclusive_minimum is None or value > self.exclusive_minimum)
            and (self.exclusive_maximum is None or value < self.exclusive_maximum)
        )
        if not ok or value != value:  # NaN compares false with every bound
            return f"{self.name} must be {self.rule()}, got {value!r}"
        return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _hp(default: Any, title: str, doc: str, **bounds: float) -> Any:
    """A dataclass field with its bounds (``min``, ``max``, ``exclusive_min``, ``exclusive_max``) and words."""
    unknown = set(bounds) - {"min", "max", "exclusive_min", "exclusive_max"}
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}")
    return field(default=default, metadata={"title": title, "doc": doc, **bounds})


@functools.cache
def param_specs(cls: type) -> tuple[ParamSpec, ...]:
    """The :class:`ParamSpec` of every field of a parameter dataclass, in field order (read once per class)."""
    out = []
    for f in fields(cls):
        kind = _KINDS.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: a hyper-parameter is an int or a float, not {f.type}")
        m = f.metadata
        out.append(
            ParamSpec(
                name=f.name,
                kind=kind,
                default=f.default,
                title=m.get("title", f.name),
                doc=m.get("doc", ""),
                minimum=m.get("min"),
                maximum=m.get("max"),
                exclusive_minimum=m.get("exclusive_min"),
                exclusive_maximum=m.get("exclusive_max"),
            )
        )
    return tuple(out)


class _Params:
    """Mixin: validation, dict round trip and argparse wiring shared by the parameter dataclasses."""

    def __post_init__(self) -> None:
        """Every field within the bounds of its metadata (:meth:`ParamSpec.problem`); ``ValueError`` otherwise."""
        for spec in param_specs(type(self)):
            problem = spec.problem(getattr(self, spec.name))
            if problem:
                raise ValueError(f"{type(self).__name__}: {problem}")

    def as_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict | None):
        """Build from a dict (unknown keys and None values ignored; a whole float such as ``20.0``, as JSON may
        carry it, is taken as the int ``20`` for an integer field)."""
        kinds = {s.name: s.kind for s in param_specs(cls)}
        values = {}
        for k, v in (d or {}).items():
            if k not in kinds or v is None:
                continue
            if kinds[k] == "integer" and isinstance(v, float) and v.is_integer():
                v = int(v)
            values[k] = v
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per field (``reg_user`` -> ``--reg-user``), default = the dataclass default, help = the
        field's description and bounds.

        This is the straight line from a DAG's trigger form to a job's argv to the core function: the DAG renders
        the same field names as flags, the job parses them here, and ``from_args`` builds the dataclass.
        """
        group = parser.add_argument_group(f"{cls.__name__} (see streamrec.core.params)")
        for spec in param_specs(cls):
            group.add_argument(
                "--" + spec.name.replace("_", "-"),
                dest=spec.name,
                type=int if spec.kind == "integer" else float,
                default=spec.default,
                help=f"{spec.title}: {spec.doc} ("
                + (f"{spec.rule()}; " if spec.bounded else "")
                + f"default {spec.default})",
            )

    @classmethod
    def from_args(cls, ns: argparse.Namespace):
        return cls.from_dict(vars(ns))

    def to_argv(self) -> list[str]:
        """The inverse of ``add_arguments``: ``["--rank", "50", ...]``."""
        out: list[str] = []
        for k, v in self.as_dict().items():
            out += ["--" + k.replace("_", "-"), str(v)]
        return out


@dataclass(frozen=True)
class BootstrapParams(_Params):
    """Batch fit (see ``bootstrap.fit``).

    rank, iterations, reg: Spark ML ALS on the bias residuals (``regParam``; ALS scales it by each entity's count).
    reg_user, reg_item: shrinkage of the biases, b_i = Σ(r - mu) / (reg_item + n_i), likewise b_u.
    bias_iterations: alternations of the user and item bias means (2 is converged to 1e-3 on MovieLens).
    seed: ALS initialisation; same data + same seed = same model.
    """

    rank: int = _hp(50, "ALS rank", "latent factors per user and item", min=1, max=1000)
    iterations: int = _hp(10, "ALS iterations", "alternating least-squares sweeps", min=1)
    reg: float = _hp(0.1, "ALS λ", "ALS regParam on the bias residuals (scaled per entity count)", min=0)
    reg_user: float = _hp(5.0, "user bias shrinkage", "b_u = Σ(r - mu - b_i) / (reg_user + n_u)", min=0)
    reg_item: float = _hp(5.0, "item bias shrinkage", "b_i = Σ(r - mu) / (reg_item + n_i)", min=0)
    bias_iterations: int = _hp(2, "bias alternations", "alternations of the user and item bias means", min=1)
    seed: int = _hp(42, "seed", "ALS initialisation: same data + same seed = same model")


@dataclass(frozen=True)
class UpdateParams(_Params):
    """Streaming update (see ``update.apply``).

    lr: step size gamma in [0, 1]; the step of every entity is normalised by its curvature, so any lr <= 1
        cannot overshoot whatever the batch shape (0 freezes the model: a no-op update).
    reg: lambda for biases, reg_factors: lambda' for factors (per rating, as in the talk's update rule).
    passes, decay: passes over the partition; the step is multiplied by ``decay`` after each pass.
    prior_weight: how strongly an entity's absorbed history (its ``n``) holds it in place.
    fold_in_reg: ridge of the least-squares fold-in of new ids, per rating (ALS-WR scaling, like ``reg``).
    seed: reserved for any random draw (none by default: new ids are folded in, not randomly initialised).
    """

    lr: float = _hp(1.0, "step size γ", "normalised step; any γ <= 1 cannot overshoot", min=0, max=1)
    reg: float = _hp(5.0, "bias λ", "λ of the biases, per rating", min=0)
    reg_factors: float = _hp(0.1, "factor λ'", "λ' of the factors, per rating", min=0)
    passes: int = _hp(5, "passes", "passes over the partition", min=0)
    decay: float = _hp(0.9, "step decay", "step multiplier after each pass", exclusive_min=0, max=1)
    prior_weight: float = _hp(
        1.0, "prior weight", "how strongly absorbed history (an entity's n) holds it in place", min=0
    )
    fold_in_reg: float = _hp(0.1, "fold-in ridge", "ridge of the least-squares fold-in of new ids", min=0)
    seed: int = _hp(42, "seed", "reserved for random draws (new ids are folded in, not drawn)")

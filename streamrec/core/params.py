"""The hyper-parameters of the two ways to change the factor model (the model's state is
:class:`streamrec.core.arrays.ModelArrays` on the driver and :class:`streamrec.spark.session.model.FactorModel` on Spark).

Prediction rule (the talk's "streaming ALS" model, Koren's biased MF)::

    r̂(u, i) = mu + b_u + b_i + p_u · q_i

``mu`` is the mean of every rating the model has absorbed and ``n`` their count; ``users`` / ``items`` hold one
row per entity: ``id, bias, n, factors`` (``n``: ratings of that entity absorbed so far, which sets how far a new
observation may move it). The model has no behaviour: ``spark.bootstrap.fit`` makes one, ``spark.update.apply`` makes the next.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields


class _Params:
    """Mixin: validation, dict round trip and argparse wiring shared by the parameter dataclasses."""

    def as_dict(self) -> dict:
        return asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict | None):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in (d or {}).items() if k in names and v is not None})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per field (``reg_user`` -> ``--reg-user``), default = the dataclass default.

        This is the straight line from a DAG's trigger form to a job's argv to the core function: the DAG renders
        the same field names as flags, the job parses them here, and ``from_args`` builds the dataclass.
        """
        group = parser.add_argument_group(f"{cls.__name__} (see streamrec.core.params)")
        for f in fields(cls):  # type: ignore[arg-type]
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                type=type(f.default),
                default=f.default,
                help=f"default {f.default}",
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
    time_bin_days, reg_time_bin: item-bias time bins b_{i,Bin(t)} of this many days (0 = off) and their λ.
    user_drift, drift_beta, reg_drift: the user-bias drift α_u · dev_u(t) (1 = on, 0 = off), β and the λ of α_u.
    user_day, reg_user_day: the per-day user bias b_{u,day} (1 = on, 0 = off) and its λ.
    (Koren 2009, "Collaborative filtering with temporal dynamics"; see ``streamrec.core.temporal``.) Every time
    term off = the time-blind model, bit for bit.
    """

    rank: int = 50
    iterations: int = 10
    reg: float = 0.1
    reg_user: float = 5.0
    reg_item: float = 5.0
    bias_iterations: int = 2
    seed: int = 42
    time_bin_days: int = 0
    reg_time_bin: float = 25.0
    user_drift: int = 0
    drift_beta: float = 0.4
    reg_drift: float = 30.0
    user_day: int = 0
    reg_user_day: float = 5.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.iterations < 1 or self.bias_iterations < 1:
            raise ValueError(f"rank, iterations and bias_iterations must be >= 1: {self}")
        if (
            min(self.reg, self.reg_user, self.reg_item, self.reg_time_bin, self.reg_drift, self.reg_user_day)
            < 0
        ):
            raise ValueError(f"regularisation must be >= 0: {self}")
        if self.time_bin_days < 0 or self.user_drift not in (0, 1) or self.user_day not in (0, 1):
            raise ValueError(f"time_bin_days must be >= 0, user_drift and user_day 0 or 1: {self}")
        if not 0 < self.drift_beta <= 1:
            raise ValueError(f"drift_beta must be in (0, 1], got {self.drift_beta}")


@dataclass(frozen=True)
class UpdateParams(_Params):
    """Streaming update (see ``update.apply``).

    lr: step size gamma in (0, 1]; the step of every entity is normalised by its curvature, so any lr <= 1
        cannot overshoot whatever the batch shape.
    reg: lambda for biases, reg_factors: lambda' for factors (per rating, as in the talk's update rule).
    passes, decay: passes over the partition; the step is multiplied by ``decay`` after each pass.
    prior_weight: how strongly an entity's absorbed history (its ``n``) holds it in place.
    fold_in_reg: ridge of the least-squares fold-in of new ids, per rating (ALS-WR scaling, like ``reg``).
    seed: reserved for any random draw (none by default: new ids are folded in, not randomly initialised).
    """

    lr: float = 1.0
    reg: float = 5.0
    reg_factors: float = 0.1
    passes: int = 5
    decay: float = 0.9
    prior_weight: float = 1.0
    fold_in_reg: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        if not (0.0 <= self.lr <= 1.0):
            raise ValueError(f"lr must be in [0, 1], got {self.lr}")
        if self.passes < 0 or not (0.0 < self.decay <= 1.0):
            raise ValueError(f"passes must be >= 0 and decay in (0, 1]: {self}")
        if min(self.reg, self.reg_factors, self.prior_weight, self.fold_in_reg) < 0:
            raise ValueError(f"regularisation must be >= 0: {self}")

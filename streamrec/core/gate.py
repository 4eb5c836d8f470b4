"""The accuracy gate: may a candidate version be published?

A candidate passes when, on its validation set:

* its RMSE is at most ``ceiling`` (an absolute bar, e.g. the scale's worst sane value), and
* it is not worse than the published model by more than ``tolerance`` (relative):
  ``rmse_candidate <= rmse_published * (1 + tolerance)``, both measured on the candidate's validation set, and
* for a bootstrap / retrain (no published model to compare with, or a fresh start), it beats the biases-only
  baseline measured on the same rows, when that number is given.

The decision is data: a dict that goes into the manifest and the gate report, with the numbers that decided it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateDecision:
    accepted: bool
    reasons: list[str]
    candidate_rmse: float | None
    published_rmse: float | None
    baseline_rmse: float | None
    ceiling: float
    tolerance: float

    def as_dict(self) -> dict:
        return asdict(self)


def decide(
    candidate_rmse: float | None,
    published_rmse: float | None = None,
    baseline_rmse: float | None = None,
    ceiling: float = 1.2,
    tolerance: float = 0.01,
) -> GateDecision:
    reasons: list[str] = []
    if candidate_rmse is None:
        reasons.append("no validation RMSE for the candidate (empty validation set?)")
    else:
        if candidate_rmse > ceiling:
            reasons.append(f"RMSE {candidate_rmse:.4f} is above the ceiling {ceiling:.4f}")
        if published_rmse is not None and candidate_rmse > published_rmse * (1 + tolerance):
            reasons.append(
                f"RMSE {candidate_rmse:.4f} is worse than the published model's {published_rmse:.4f} "
                f"by more than {tolerance:.1%}"
            )
        if baseline_rmse is not None and candidate_rmse >= baseline_rmse:
            reasons.append(
                f"RMSE {candidate_rmse:.4f} does not beat the biases-only baseline {baseline_rmse:.4f}"
            )
    return GateDecision(
        accepted=not reasons,
        reasons=reasons or ["passed"],
        candidate_rmse=candidate_rmse,
        published_rmse=published_rmse,
        baseline_rmse=baseline_rmse,
        ceiling=ceiling,
        tolerance=tolerance,
    )

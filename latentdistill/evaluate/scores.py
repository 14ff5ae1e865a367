"""DD-Ranking's scores (Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset Distillation",
2025): how much of a distilled set's accuracy is its own, not the protocol's.

Accuracies are fractions in [0, 1]. Both scores map a weighted gain ``x`` in [-1, 1] through
``(e^x - e^-1) / (e - e^-1)`` onto [0, 1]; 0.5 is not "no gain" (x = 0 gives 0.269).
"""

from __future__ import annotations

import math


def _normalise(x: float) -> float:
    return (math.exp(x) - math.exp(-1)) / (math.e - math.exp(-1))


def label_robust_score(synthetic: float, random: float, full: float, weight: float = 0.5) -> dict:
    """Hard-label LRS: IOR = synthetic - random (improvement over random), HLR = full - synthetic (the
    gap to the full data), alpha = w * IOR - (1 - w) * HLR."""
    ior = synthetic - random
    hlr = full - synthetic
    alpha = weight * ior - (1 - weight) * hlr
    return {"ior": ior, "hlr": hlr, "alpha": alpha, "score": _normalise(alpha)}


def augmentation_robust_score(synthetic_aug: float, random_aug: float, synthetic_plain: float, random_plain: float,
                              gamma: float = 0.5) -> dict:
    """ARS: beta = gamma * (gain over random with augmentation) + (1 - gamma) * (gain without)."""
    beta = gamma * (synthetic_aug - random_aug) + (1 - gamma) * (synthetic_plain - random_plain)
    return {"beta": beta, "score": _normalise(beta)}

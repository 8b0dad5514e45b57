"""Turning the classifier's tumor-minus-healthy logit into the confidence users read.

The paired classifier learns to rank crops (with vs. without a lesion); its softmax is not a
probability of anything a radiologist asks. Platt scaling, ``p = sigmoid(a * d + b)`` on the logit
difference ``d``, is fitted on the tuning half's real slices (image-level labels) at release; its
error is reported on both halves. ``a > 0`` keeps every ranking (AUROC) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize


@dataclass(frozen=True)
class PlattScaling:
    """``p(tumor) = sigmoid(a * (logit_tumor - logit_healthy) + b)``; (1, 0) is the plain softmax."""

    a: float = 1.0
    b: float = 0.0

    @property
    def identity(self) -> bool:
        return (self.a, self.b) == (1.0, 0.0)

    def probability(self, logit_difference):
        """Works on numpy arrays and torch tensors alike (sigmoid written out)."""
        z = self.a * logit_difference + self.b
        return 1.0 / (1.0 + (-z).exp()) if hasattr(z, "exp") else 1.0 / (1.0 + np.exp(-z))


def logit_difference(p_tumor: np.ndarray) -> np.ndarray:
    """The two-class softmax's logit difference recovered from its p(tumor) (clipped at 1e-7)."""
    p = np.clip(np.asarray(p_tumor, float), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_platt(logit_difference: np.ndarray, y: np.ndarray) -> PlattScaling:
    """Maximum-likelihood (a, b) on labelled slices; a is kept positive so rankings never flip."""
    d, y = np.asarray(logit_difference, float), np.asarray(y, float)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs slices of both classes")

    def nll(params: np.ndarray) -> float:
        z = np.exp(params[0]) * d + params[1]
        return float(np.mean(np.logaddexp(0, z) - y * z))

    res = optimize.minimize(nll, x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
    return PlattScaling(a=float(np.exp(res.x[0])), b=float(res.x[1]))


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |observed tumor fraction - mean p| over equal-width probability bins, weighted by count."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(y[which == k].mean() - p[which == k].mean()) * (which == k).mean() for k in np.unique(which)))


def calibration_record(cal: PlattScaling, d: np.ndarray, y: np.ndarray) -> dict:
    """ECE and Brier score of the plain softmax and of the calibrated probability on one set."""
    raw, fitted = PlattScaling().probability(d), cal.probability(d)
    y = np.asarray(y, float)
    return {
        "n_tumor": int(y.sum()),
        "n_healthy": int((1 - y).sum()),
        "ece_softmax": round(expected_calibration_error(raw, y), 4),
        "ece_calibrated": round(expected_calibration_error(fitted, y), 4),
        "brier_softmax": round(float(np.mean((raw - y) ** 2)), 4),
        "brier_calibrated": round(float(np.mean((fitted - y) ** 2)), 4),
    }

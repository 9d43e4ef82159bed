"""Calibrated confidence: temperature scaling and the expected calibration error (ECE).

Consumers act on ``confidence``, so 0.9 must mean "right 9 times in 10". One temperature
``T`` divides the logits before the softmax: it changes no prediction (the argmax is the
same), only how sure the model claims to be. ``T`` is fitted on a validation split carved
from the training data, never on the holdout, which only reports the result.

Pure numpy: the scorer and the gate read these figures without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, lo: float = 0.05,
                    hi: float = 20.0, iterations: int = 60) -> float:
    """The temperature minimising the NLL on ``(logits, labels)``.

    The NLL is convex in ``1/T``, so a golden-section search over ``log T`` finds the
    minimum deterministically, with no optimiser state or learning rate to tune.
    """
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    a, b = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


@dataclass
class Reliability:
    """A reliability diagram's data: per confidence bin, how sure vs how right."""

    edges: list[float]
    confidence: list[float]  # mean confidence in each bin (nan where empty)
    accuracy: list[float]  # share correct in each bin (nan where empty)
    counts: list[int]
    ece: float

    def as_dict(self) -> dict:
        return asdict(self)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Equal-width confidence bins; ECE = sum over bins of share x |accuracy - confidence|."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    right = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    right_sum = np.bincount(which, weights=right.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / counts, right_sum / counts
    n = max(len(conf), 1)
    ece = float(np.abs(right_sum - conf_sum).sum() / n)
    return Reliability([float(e) for e in edges], [float(v) for v in mean_conf],
                       [float(v) for v in acc], [int(c) for c in counts], ece)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    return reliability(probs, labels, bins).ece

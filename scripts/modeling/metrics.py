"""Detection metrics on scores (fake probabilities) and labels (1 = fake): pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfake_contract import FAKE_THRESHOLD


def accuracy(scores: Sequence[float], labels: Sequence[int], threshold: float = FAKE_THRESHOLD) -> float:
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    return float(np.mean((s >= threshold).astype(int) == y))  # deepfake_contract.reaches: at or above


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) over every distinct threshold, from (0, 0)."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    if y.min(initial=1) == y.max(initial=0) or len(y) == 0:
        raise ValueError("ROC needs both classes among the labels")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tied group
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    return np.r_[0.0, fps / (len(y) - y.sum())], np.r_[0.0, tps / y.sum()]


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve; ties count half (equals the Mann-Whitney U statistic)."""
    fpr, tpr = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The error rate where false positives equal false negatives (linear interpolation on the ROC)."""
    fpr, tpr = roc_curve(scores, labels)
    fnr = 1 - tpr
    diff = fpr - fnr  # increases from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return float(fpr[0])
    x0, x1 = diff[i - 1], diff[i]
    t = 0.0 if x1 == x0 else -x0 / (x1 - x0)
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))

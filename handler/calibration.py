"""Turning logits into calibrated answers, and fitting the calibration.

Two confidence figures are reported for every prediction:

* ``softmax_confidence``: the top probability of ``softmax(logits / T)``; T is fitted by
  ``scripts/modeling/calibrate.py`` (temperature scaling, Guo et al. 2017).
* ``adjusted_confidence``: the original app's ``sigmoid(|logit margin| / alpha)``. For two
  classes ``softmax(z / T)`` of the top class *is* ``sigmoid(|z1 - z0| / T)``, so alpha is a
  temperature too, and a fitted T is the calibrated alpha.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch

from deepfake_contract import Prediction
from handler.settings import ModelSettings


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit (``|z1 - z0|`` for two classes)."""
    top2 = torch.topk(logits.double(), k=2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def adjusted_confidence(logits: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(logit_margin(logits) / alpha)


def predictions_from_logits(logits: torch.Tensor, settings: ModelSettings) -> list[Prediction]:
    """One answer (deepfake_contract) per row of a (N, 2) logits tensor."""
    logits = logits.detach().cpu().double()
    probs = softmax_with_temperature(logits, settings.temperature)
    adjusted = adjusted_confidence(logits, settings.alpha)
    answers = []
    for row, prob, adj in zip(logits.tolist(), probs.tolist(), adjusted.tolist(), strict=True):
        index = max(range(len(row)), key=row.__getitem__)
        answers.append(
            Prediction(
                label=settings.labels[index],
                class_index=index,
                logits=row,
                probabilities=dict(zip(settings.labels, prob, strict=True)),
                fake_probability=prob[settings.fake_index],
                softmax_confidence=max(prob),
                adjusted_confidence=adj,
                temperature=settings.temperature,
                alpha=settings.alpha,
            )
        )
    return answers


# A faster mode (int8 on the CPU, fp16/bf16 on a GPU) is kept only when it agrees with fp32 this well on
# held-out images of the model's own domain: at make mar for the CPU modes, at worker start on a GPU.
MIN_LABEL_AGREEMENT = 0.99
MAX_MEAN_FAKE_PROBABILITY_DIFF = 0.02
MAX_ONE_CLASS_SHARE = 0.95  # a reference giving one class to this share of the check images shows nothing
CHECK_FOLDER = "agreement"  # held-out images make mar packs in the archive, for the check on a GPU worker
CHECK_IMAGES = 32


def agreement(reference: torch.Tensor, candidate: torch.Tensor, temperature: float, fake_index: int) -> dict[str, Any]:
    """How often the candidate's label equals the reference's, and the mean |fake probability difference|,
    from both modes' logits for the same images.

    A reference that gives one class to nearly every check image (>= MAX_ONE_CLASS_SHARE: an untrained
    checkpoint, or images from another domain) cannot show agreement: labels would agree whatever the
    candidate did. Such a check does not pass, and says why."""
    ref = softmax_with_temperature(reference, temperature)
    cand = softmax_with_temperature(candidate, temperature)
    labels = float((ref.argmax(-1) == cand.argmax(-1)).double().mean())
    diff = (ref[:, fake_index] - cand[:, fake_index]).abs()
    one_class = float(torch.bincount(ref.argmax(-1), minlength=2).max()) / len(ref)
    degenerate = one_class >= MAX_ONE_CLASS_SHARE
    return {
        "images": len(ref),
        "label_agreement": round(labels, 4),
        "mean_abs_fake_probability_diff": round(float(diff.mean()), 5),
        "max_abs_fake_probability_diff": round(float(diff.max()), 5),
        "reference_one_class_share": round(one_class, 4),
        "degenerate": degenerate,
        "passes": not degenerate
        and labels >= MIN_LABEL_AGREEMENT
        and float(diff.mean()) <= MAX_MEAN_FAKE_PROBABILITY_DIFF,
    }


def negative_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, targets.long()))


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins over the top-class probability (Guo et al.)."""
    probabilities = probabilities.double()
    confidence, predicted = probabilities.max(dim=-1)
    correct = (predicted == targets.long()).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for low, high in pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            weight = in_bin.double().mean()
            ece += weight * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(ece)


def calibration_metrics(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """NLL, accuracy and ECE (15 bins) of softmax(logits / T): what training and calibration report."""
    probs = softmax_with_temperature(logits, temperature)
    return {
        "temperature": temperature,
        "nll": negative_log_likelihood(logits, targets, temperature),
        "accuracy": float((probs.argmax(-1) == targets.long()).double().mean()),
        "ece": expected_calibration_error(probs, targets),
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising NLL of ``softmax(logits / T)`` (optimised in log space)."""
    # clone: the logits may come from torch.inference_mode(), which autograd cannot use
    logits, targets = logits.detach().double().clone(), targets.detach().long().clone()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())

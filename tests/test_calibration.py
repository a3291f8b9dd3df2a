"""Calibration math against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from handler.calibration import (
    adjusted_confidence,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    predictions_from_logits,
    softmax_with_temperature,
)
from handler.settings import ModelSettings

TIER = "unit"


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_softmax_with_temperature_by_hand():
    probs = softmax_with_temperature(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), temperature=2.0)
    e = math.e
    assert probs[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], abs=1e-12)
    assert probs[1].tolist() == pytest.approx([1 / (1 + math.exp(1.5)), math.exp(1.5) / (1 + math.exp(1.5))], abs=1e-12)


def test_adjusted_confidence_is_the_original_apps_formula():
    # sigmoid(|logit margin| / alpha), whichever class wins
    values = adjusted_confidence(torch.tensor([[1.0, 4.0], [4.0, 1.0], [0.5, 0.5]]), alpha=6.0)
    assert values.tolist() == pytest.approx([sigmoid(0.5), sigmoid(0.5), 0.5], abs=1e-12)


def test_prediction_record_by_hand():
    settings = ModelSettings(labels=("Real", "Fake"), temperature=2.0, alpha=3.0)
    [answer] = predictions_from_logits(torch.tensor([[0.25, 1.75]]), settings)
    p_fake = sigmoid(1.5 / 2.0)
    assert answer.to_json() == {
        "label": "Fake",
        "class_index": 1,
        "logits": [0.25, 1.75],
        "probabilities": {"Real": pytest.approx(1 - p_fake, abs=1e-12), "Fake": pytest.approx(p_fake, abs=1e-12)},
        "fake_probability": pytest.approx(p_fake, abs=1e-12),
        "softmax_confidence": pytest.approx(p_fake, abs=1e-12),
        "adjusted_confidence": pytest.approx(sigmoid(1.5 / 3.0), abs=1e-12),
        "temperature": 2.0,
        "alpha": 3.0,
        "faces": None,  # a whole-image archive
    }


def test_fake_probability_follows_the_fake_label_not_the_index():
    settings = ModelSettings(labels=("fake", "real"))
    [answer] = predictions_from_logits(torch.tensor([[2.0, 0.0]]), settings)
    assert answer.label == "fake"
    assert answer.fake_probability == pytest.approx(sigmoid(2.0), abs=1e-12)


def test_ece_by_hand():
    # confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), in two of the 15 bins
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    targets = torch.tensor([0, 1, 1])
    # bin of 0.9: weight 2/3, |0.9 - 0.5| = 0.4; bin of 0.6: weight 1/3, |0.6 - 1| = 0.4
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4, abs=1e-12)


def test_nll_by_hand():
    logits, targets = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    assert negative_log_likelihood(logits, targets, temperature=2.0) == pytest.approx(
        -math.log(sigmoid(1.0)), abs=1e-12
    )


def test_fit_temperature_recovers_a_known_temperature():
    # Labels drawn from softmax(z / 3): the NLL-optimal temperature is ~3.
    generator = torch.Generator().manual_seed(0)
    margins = torch.randn(20000, generator=generator) * 8
    logits = torch.stack([torch.zeros_like(margins), margins], dim=1)
    targets = torch.bernoulli(torch.sigmoid(margins / 3.0), generator=generator).long()
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = expected_calibration_error(softmax_with_temperature(logits, 1.0), targets)
    after = expected_calibration_error(softmax_with_temperature(logits, temperature), targets)
    assert after < before

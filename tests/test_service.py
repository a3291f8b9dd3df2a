"""DetectorService in-process: exact outputs from a fixed-weight model, per-item isolation."""

from __future__ import annotations

import math

import pytest
import torch

from handler.checkpoint import load_model
from handler.runtimes import TorchRuntime
from handler.service import DetectorService, ItemError
from handler.settings import ModelSettings
from tests.conftest import CONSTANT_LOGITS, constant_checkpoint, image_bytes


@pytest.fixture(scope="module")
def service() -> DetectorService:
    model, _ = load_model(constant_checkpoint())
    return DetectorService(TorchRuntime(model), ModelSettings(temperature=2.0, alpha=3.0))


def test_fixed_weights_give_exact_answers(service: DetectorService):
    [answer] = service.predict([image_bytes()])
    p_fake = 1 / (1 + math.exp(-(CONSTANT_LOGITS[1] - CONSTANT_LOGITS[0]) / 2.0))
    assert answer.logits == pytest.approx(list(CONSTANT_LOGITS), abs=1e-7)
    assert answer.label == "Fake"
    assert answer.fake_probability == pytest.approx(p_fake, abs=1e-7)
    assert answer.adjusted_confidence == pytest.approx(1 / (1 + math.exp(-1.5 / 3.0)), abs=1e-7)


def test_one_bad_item_fails_alone(service: DetectorService):
    results = service.predict([image_bytes(), b"garbage", image_bytes(fmt="PNG")])
    assert isinstance(results[1], ItemError)
    assert results[1].code == 400
    assert results[1].to_json() == {"code": 400, "type": "InvalidImage", "message": results[1].message}
    assert results[0].label == results[2].label == "Fake"


def test_a_batch_of_only_bad_items_runs_no_forward_pass(service: DetectorService):
    rejected = ItemError(400, "InvalidImage", "no image in request")  # what the wire layer hands over
    results = service.predict([b"", rejected])
    assert [r.code for r in results] == [400, 400]
    assert results[1] is rejected
    assert service.last_timing.size == 0


def test_from_checkpoint_resolves_the_architecture(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(constant_checkpoint(), path)
    service = DetectorService.from_checkpoint(path, ModelSettings())
    assert service.describe()["settings"]["arch"] == "resnet18"
    assert service.runtime.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert service.describe()["runtime"] == {
        "engine": "torch",
        "precision": "fp32",
        "requested": "fp32",
        "fallback": None,
    }

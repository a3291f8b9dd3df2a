"""Batched detection with per-item failure isolation, independent of TorchServe.

The TorchServe handler is a thin adapter over ``DetectorService`` so that everything here can be
tested in-process (TorchServe is archived upstream; the logic must not depend on its internals).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from handler.calibration import predictions_from_logits
from handler.checkpoint import load_model
from handler.preprocessing import InvalidImageError, decode_image, extract_image_bytes, to_model_input
from handler.settings import ModelSettings


@dataclass(frozen=True)
class ItemError:
    """A per-request failure: becomes that request's HTTP status and JSON body."""

    status: int
    error: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.status, "type": self.error, "message": self.message}


class DetectorService:
    """A loaded 2-class ResNet plus the settings that say how to feed it and read it."""

    def __init__(self, model: torch.nn.Module, settings: ModelSettings, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.settings = settings
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()

    @classmethod
    def from_checkpoint(
        cls, weights: str | Path, settings: ModelSettings, device: torch.device | str = "cpu"
    ) -> DetectorService:
        model, arch = load_model(weights, arch=settings.arch)
        resolved = dataclasses.replace(settings, arch=arch)
        return cls(model, resolved, device)

    def preprocess_one(self, request: Any) -> torch.Tensor:
        image = decode_image(extract_image_bytes(request))
        return to_model_input(image, self.settings.mean, self.settings.std, self.settings.image_size)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass for a whole batch."""
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return self.model(batch).float().cpu()

    def predict(self, requests: Sequence[Any]) -> list[dict[str, Any] | ItemError]:
        """Answer every request of a batch; a bad item fails alone."""
        results: list[dict[str, Any] | ItemError | None] = [None] * len(requests)
        tensors, positions = [], []
        for index, request in enumerate(requests):
            try:
                tensors.append(self.preprocess_one(request))
                positions.append(index)
            except InvalidImageError as exc:
                results[index] = ItemError(400, "InvalidImage", str(exc))
        if tensors:
            answers = predictions_from_logits(self.logits(torch.stack(tensors)), self.settings)
            for index, answer in zip(positions, answers, strict=True):
                results[index] = answer
        return results  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {"settings": self.settings.to_mapping(), "device": str(self.device)}


def settings_from_model_config(config: Mapping[str, Any] | None) -> ModelSettings:
    """The ``handler:`` section of an archive's model-config.yaml."""
    return ModelSettings.from_mapping((config or {}).get("handler") or {})

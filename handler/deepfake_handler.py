"""TorchServe entry point: a thin adapter from TorchServe's context to ``DetectorService``.

Packed at the archive's root next to the ``handler`` package (see ``scripts/archive.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from handler.service import DetectorService, ItemError, settings_from_model_config

logger = logging.getLogger(__name__)


class DeepfakeHandler(BaseHandler):
    """Real/Fake classification of images, one forward pass per TorchServe batch."""

    service: DetectorService

    def initialize(self, context: Any) -> None:
        self.context = context
        self.manifest = context.manifest
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            device = torch.device(f"cuda:{gpu_id}")
        else:
            device = torch.device("cpu")
        weights = Path(properties["model_dir"]) / self.manifest["model"]["serializedFile"]
        settings = settings_from_model_config(context.model_yaml_config)
        self.service = DetectorService.from_checkpoint(weights, settings, device)
        self.model = self.service.model
        self.device = device
        logger.info("Loaded %s", json.dumps(self.service.describe()))
        self.initialized = True

    def preprocess(self, data: list[Any]) -> list[Any]:
        return data  # decoding happens per item inside the service, so one bad item fails alone

    def inference(self, data: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        return self.service.predict(data)

    def postprocess(self, data: list[Any]) -> list[Any]:
        responses = []
        for index, result in enumerate(data):
            self.context.set_response_content_type(index, "application/json")
            if isinstance(result, ItemError):
                self.context.set_response_status(code=result.status, phrase=result.error, idx=index)
                responses.append(json.dumps(result.to_json()))
            else:
                responses.append(result)
        return responses

    def describe_handle(self) -> dict[str, Any]:
        return self.service.describe()

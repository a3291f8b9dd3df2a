"""TorchServe entry point: TorchServe in, model core, TorchServe out.

Packed at the archive's root next to the ``handler`` package (see ``scripts/archive.py``). Each hook
is one step: ``preprocess`` reads image bytes out of TorchServe's request items (``handler.wire``),
``inference`` hands them to the model core (``handler.service``), ``postprocess`` turns answers and
per-item errors into TorchServe responses.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ts.torch_handler.base_handler import BaseHandler

from handler.preprocessing import InvalidImageError
from handler.service import DetectorService, ItemError, settings_from_model_config
from handler.wire import extract_image_bytes

logger = logging.getLogger(__name__)


class DeepfakeHandler(BaseHandler):
    """Real/Fake classification of images, one forward pass per TorchServe batch."""

    service: DetectorService

    def initialize(self, context: Any) -> None:
        started = time.perf_counter()
        self.context = context
        self.manifest = context.manifest
        model_dir = Path(context.system_properties["model_dir"])
        config = context.model_yaml_config or {}
        settings = settings_from_model_config(config)
        self.service = DetectorService.from_model_dir(model_dir, self.manifest["model"]["serializedFile"], settings)
        loaded = time.perf_counter()
        self.service.warm_up(int(config.get("batchSize", 1)))
        logger.info(
            "Loaded in %.2f s, warmed up batch sizes 1..%s in %.2f s: %s",
            loaded - started,
            config.get("batchSize", 1),
            time.perf_counter() - loaded,
            json.dumps(self.service.describe()),
        )
        self.initialized = True

    def preprocess(self, data: list[Any]) -> list[bytes | ItemError]:
        payloads: list[bytes | ItemError] = []
        for index, request in enumerate(data):
            try:
                payloads.append(extract_image_bytes(request, self._content_types(index, request)))
            except InvalidImageError as exc:
                payloads.append(ItemError.from_exception(exc))
        return payloads

    def _content_types(self, index: int, request: Any) -> dict[str, str | None]:
        """The content type TorchServe recorded for each field of request ``index``."""
        if not isinstance(request, dict):
            return {}
        declared = {}
        for name in request:
            header = self.context.get_request_header(index, name)
            declared[name] = header.get("content-type") if isinstance(header, dict) else None
        return declared

    def inference(self, data: list[bytes | ItemError], *args: Any, **kwargs: Any) -> list[Any]:
        results = self.service.predict(data)
        if timing := self.service.last_timing:
            logger.info(
                "Batch of %d: decode %.1f ms, inference %.1f ms", timing.size, timing.decode_ms, timing.inference_ms
            )
        return results

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

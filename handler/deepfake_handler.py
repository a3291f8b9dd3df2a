"""TorchServe entry point: TorchServe in, model core, TorchServe out.

Packed at the archive's root next to the ``handler`` package (see ``scripts/operations/archive.py``). Each hook
is one step: ``preprocess`` reads every request of TorchServe's batch in its own wire format, native
or Open Inference Protocol (``handler.formats``); ``inference`` hands all their images to the model
core (``handler.service``) in one forward pass, and the few that asked the explanations API to its
explainer; ``postprocess`` answers each request in its format.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from deepfake_contract import NATIVE, OIP, ErrorAnswer, Explanation, Prediction
from handler.formats import WireRequest, decode_request, encode_answer, share_batch_budget, share_explanations
from handler.runtimes import Accelerator, share_cores
from handler.service import DetectorService, settings_from_model_config
from handler.telemetry import Telemetry

logger = logging.getLogger(__name__)

Answered = tuple[WireRequest, list[Prediction | Explanation | ErrorAnswer]]


class DeepfakeHandler:
    """Real/Fake classification of images, one forward pass per TorchServe batch.

    TorchServe needs only ``initialize(context)`` and ``handle(data, context)`` of a handler class. Its
    ``BaseHandler`` is not imported: importing it imports ``openvino.torch`` and with it ``torch._dynamo``, ~3 s
    of every worker's start (cold start, a restarted worker) for a torch.compile backend this handler never uses."""

    service: DetectorService
    context: Any  # TorchServe's, of the batch being handled

    def initialize(self, context: Any) -> None:
        started = time.perf_counter()
        self.context = context
        self.manifest = context.manifest
        self.model_name = self.manifest["model"]["modelName"]
        self.model_version = self.manifest["model"].get("modelVersion")
        model_dir = Path(context.system_properties["model_dir"])
        config = context.model_yaml_config or {}
        settings = settings_from_model_config(config)
        share_cores(int(config.get("minWorkers", 1)))  # before the runtime and the face detector load
        # TorchServe gives a worker a gpu_id when its config has GPUs (number_of_gpu); each worker its own
        accelerator = Accelerator.detect(context.system_properties.get("gpu_id"))
        self.service = DetectorService.from_model_dir(
            model_dir, self.manifest["model"]["serializedFile"], settings, accelerator=accelerator
        )
        self.service.max_batch_size = int(config.get("batchSize", 1))  # forward passes never exceed the warm-up
        self.telemetry = Telemetry(context.metrics, self.model_name)
        loaded = time.perf_counter()
        self.service.warm_up(int(config.get("batchSize", 1)))
        logger.info(
            "Loaded in %.2f s, warmed up batch sizes 1..%s in %.2f s: %s",
            loaded - started,
            config.get("batchSize", 1),
            time.perf_counter() - loaded,
            json.dumps(self.service.describe()),
        )

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """One TorchServe batch: a describe request (management API's ``customized=true``) or requests to
        answer, preprocess -> inference -> postprocess; TorchServe's ``HandlerTime`` metric records it."""
        started = time.perf_counter()
        self.context = context
        if self._describe_asked(data):
            output: list[Any] = [self.describe_handle()]
        else:
            output = self.postprocess(self.inference(self.preprocess(data)))
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1e3, 2), None, "ms")
        return output

    def _describe_asked(self, data: list[Any]) -> bool:
        """The management API's describe comes as a lone request with no input and a ``describe: True`` header.
        TorchServe forwards that header from any inference request too: there it is ignored. (BaseHandler answered a
        whole batch with the description when its first request carried the header, and TorchServe then failed
        every request of the batch with a 503: one crafted header took its neighbours down.)"""
        return len(data) == 1 and not data[0] and self.context.get_request_header(0, "describe") == "True"

    def preprocess(self, data: list[Any]) -> list[WireRequest]:
        requests = []
        for index, request in enumerate(data):
            explain = self._explanation_asked(index)
            endpoint = NATIVE if explain else self._endpoint(index)  # explanations speak the native format
            requests.append(decode_request(request, self._content_types(index, request), endpoint, explain))
        share_batch_budget(requests)
        share_explanations(requests)
        return requests

    def _explanation_asked(self, index: int) -> bool:
        """TorchServe's frontend marks a request to ``/explanations/<model>`` with ``explain: True``. Each request
        is routed by its own header: TorchServe batches explanation requests with predictions (its BaseHandler
        decided by request 0 alone)."""
        return str(self.context.get_request_header(index, "explain")) == "True"

    def _endpoint(self, index: int) -> str:
        """The protocol of the endpoint request ``index`` came to: TorchServe's frontend gives a request to
        ``/predictions/<model>`` a ``url_path`` header (the path after the model's name, usually empty) and
        one to ``/v2/models/<model>/infer`` none (observed in TorchServe 0.12)."""
        return NATIVE if self.context.get_request_header(index, "url_path") is not None else OIP

    def _content_types(self, index: int, request: Any) -> dict[str, str | None]:
        """The content type TorchServe recorded for each field of request ``index``."""
        if not isinstance(request, dict):
            return {}
        declared = {}
        for name in request:
            header = self.context.get_request_header(index, name)
            declared[name] = header.get("content-type") if isinstance(header, dict) else None
        return declared

    def inference(self, data: list[WireRequest]) -> list[Answered]:
        predicted = [request for request in data if not request.explain]
        answers, timing = self.service.predict([image for request in predicted for image in request.images])
        predictions = iter(answers)
        answered: list[Answered] = []
        for request in data:
            if request.explain:
                answered.append((request, [self.service.explain(image) for image in request.images]))
            else:
                answered.append((request, [next(predictions) for _ in request.images]))
        logger.info(
            "Batch of %d: decode %.1f ms, inference %.1f ms", timing.size, timing.decode_ms, timing.inference_ms
        )
        # the prediction metrics count predictions only: the refused requests' errors and the core's answers
        refused: list[Prediction | ErrorAnswer] = [request.error for request in predicted if request.error]
        self.telemetry.record_batch(timing, refused + answers)
        return answered

    def postprocess(self, data: list[Answered]) -> list[str]:
        responses = []
        for index, (request, results) in enumerate(data):
            answer = encode_answer(request, results, self.model_name, self.model_version)
            self.context.set_response_content_type(index, "application/json")
            if answer.error_type is not None:
                self.context.set_response_status(code=answer.status, phrase=answer.error_type, idx=index)
            responses.append(answer.text)
        return responses

    def describe_handle(self) -> dict[str, Any]:
        return self.service.describe()

"""Which wire format a request speaks, and the answer in that same format.

Two formats feed the same model core: native (``POST /predictions/<model>``, ``handler.wire``) and
the Open Inference Protocol (``POST /v2/models/<model>/infer``, ``handler.oip``). A request becomes a
list of images for the core (``READERS``, one per format); the core's answers for them become one HTTP
answer in the request's own format (the contract's ``WireFormat`` of that protocol, which the client
reads with), with the fields ``deepfake_contract`` declares for both.

Every request is read within the budgets ``deepfake_contract`` declares, and nothing raised while
reading one request leaves this module: it becomes that request's 4xx, in its own format.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from deepfake_contract import (
    MAX_ANSWER_BYTES,
    MAX_BATCH_PIXELS,
    MAX_EXPLANATIONS_PER_BATCH,
    NATIVE,
    OIP,
    ErrorAnswer,
    Explanation,
    Prediction,
    wire_format,
)
from handler.oip import images_from_oip, oip_body, request_id
from handler.preprocessing import InvalidImageError, declared_pixels
from handler.service import ItemError
from handler.wire import BatchFullError, InvalidRequestError, OverBudgetError, extract_image_bytes

logger = logging.getLogger(__name__)


@dataclass
class WireRequest:
    """One HTTP request: its format, its images (OIP may carry several), or why it was refused."""

    protocol: str
    images: list[bytes | Image.Image] = field(default_factory=list)
    request_id: str | None = None
    error: ErrorAnswer | None = None
    pixels: int = 0  # what its images declare: the batch's pixel budget is shared out by this
    explain: bool = False  # sent to the explanations API: answered with an Explanation (deepfake_contract)

    def refuse(self, exc: InvalidImageError) -> None:
        self.images, self.error = [], ItemError.from_exception(exc)


@dataclass(frozen=True)
class WireAnswer:
    status: int
    body: dict[str, Any]
    error_type: str | None = None

    @functools.cached_property
    def text(self) -> str:
        return json.dumps(self.body)


def _within_answer_budget(answer: WireAnswer, protocol: str) -> WireAnswer:
    """An answer over MAX_ANSWER_BYTES (TorchServe's frontend would drop the worker for one over its
    max_response_size) is replaced by a small 500 that says so. The budgets keep answers far below it."""
    size = len(answer.text)
    if size <= MAX_ANSWER_BYTES:
        return answer
    error = ErrorAnswer(500, "AnswerTooLarge", f"the answer of {size} bytes is over MAX_ANSWER_BYTES")
    return WireAnswer(error.code, error.to_json(protocol), error.type)


def request_protocol(item: Any, endpoint: str | None = None) -> str:
    """OIP or native: the protocol of the endpoint the request was sent to when known, else from the body."""
    if endpoint is not None:
        return endpoint
    try:
        return OIP if oip_body(item) is not None else NATIVE
    except InvalidImageError:  # a JSON body too deep to parse: refused below, in the native shape
        return NATIVE


def read_native(item: Any, content_types: Mapping[str, str | None] | None, request: WireRequest) -> None:
    """One image: raw bytes, a multipart part or a JSON ``{"image": base64}`` (``handler.wire``)."""
    request.images = [extract_image_bytes(item, content_types)]
    request.pixels = declared_pixels(request.images[0])


def read_oip(item: Any, content_types: Mapping[str, str | None] | None, request: WireRequest) -> None:
    """An inference request's images (``handler.oip``); the explanations API takes an image, not this."""
    if request.explain:
        raise InvalidRequestError("the explanations API takes an image as the body, not an OIP request")
    body = oip_body(item, required=True)
    assert body is not None  # required: raises instead
    request.request_id = request_id(body)
    request.images, request.pixels = images_from_oip(body)


# How the handler reads each wire format's requests (the answers are the contract's WireFormat.answer)
READERS: dict[str, Callable[[Any, Mapping[str, str | None] | None, WireRequest], None]] = {
    NATIVE: read_native,
    OIP: read_oip,
}


def decode_request(
    item: Any, content_types: Mapping[str, str | None] | None = None, endpoint: str | None = None, explain: bool = False
) -> WireRequest:
    """Read one TorchServe request item; a malformed one is refused alone (``error``), never raised.

    ``endpoint``: NATIVE or OIP when the endpoint the request came to is known (every request through
    TorchServe's frontend); an OIP endpoint answers in the OIP shape whatever the body holds.
    ``explain``: the request came to the explanations API.
    """
    protocol = request_protocol(item, endpoint)
    request = WireRequest(protocol, explain=explain)
    try:
        READERS[protocol](item, content_types, request)
    except InvalidImageError as exc:
        request.refuse(exc)
    except Exception as exc:
        logger.exception("Could not read a request")
        request.request_id = None
        request.refuse(OverBudgetError(f"cannot read the request ({type(exc).__name__})", status=400))
    return request


def share_batch_budget(requests: Sequence[WireRequest], budget: int = MAX_BATCH_PIXELS) -> None:
    """Admit a batch's requests smallest first while their declared pixels fit ``budget`` (the first one
    always does: it is within the request budget); the others are answered 503, to be sent again, so a
    few large requests never make the small ones beside them wait."""
    spent = 0
    for request in sorted((r for r in requests if r.error is None), key=lambda r: r.pixels):
        if spent and spent + request.pixels > budget:
            request.refuse(
                BatchFullError(
                    f"this batch's budget of {budget / 1e6:.0f} MP (MAX_BATCH_PIXELS) is spent by other requests; "
                    "send it again"
                )
            )
        else:
            spent += request.pixels


def share_explanations(requests: Sequence[WireRequest], budget: int = MAX_EXPLANATIONS_PER_BATCH) -> None:
    """Explain at most ``budget`` images per batch (each costs a forward and a backward pass in fp32, beside
    the predictions batched with it); the others are answered 503, to be sent again."""
    explained = 0
    for request in requests:
        if not request.explain or request.error is not None:
            continue
        if explained + len(request.images) > budget:
            request.refuse(
                BatchFullError(
                    f"this batch already explains {explained} images (MAX_EXPLANATIONS_PER_BATCH {budget}); "
                    "send it again"
                )
            )
        else:
            explained += len(request.images)


def _first_error(results: Sequence[Prediction | Explanation | ErrorAnswer]) -> ErrorAnswer | None:
    for index, result in enumerate(results):
        if isinstance(result, ErrorAnswer):
            if len(results) == 1:
                return result
            return ErrorAnswer(result.code, result.type, f"image {index} of {len(results)}: {result.message}")
    return None


def encode_answer(
    request: WireRequest,
    results: Sequence[Prediction | Explanation | ErrorAnswer],
    model_name: str,
    model_version: str | None,
) -> WireAnswer:
    """The HTTP answer to ``request`` (a Prediction, or an Explanation for the explanations API). An OIP
    request is one inference: one bad image fails all of it."""
    error = request.error or _first_error(results)
    if error is not None:
        return _within_answer_budget(
            WireAnswer(error.code, error.to_json(request.protocol), error.type), request.protocol
        )
    answered = [result for result in results if not isinstance(result, ErrorAnswer)]  # none, after _first_error
    body = wire_format(request.protocol).answer(model_name, answered, request.request_id, model_version)
    return _within_answer_budget(WireAnswer(200, body), request.protocol)

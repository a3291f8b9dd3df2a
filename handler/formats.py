"""Which wire format a request speaks, and the answer in that same format.

Two formats feed the same model core: native (``POST /predictions/<model>``, ``handler.wire``) and
the Open Inference Protocol (``POST /v2/models/<model>/infer``, ``handler.oip``). A request becomes a
list of images for the core; the core's answers for them become one HTTP answer in the request's
own format, with the fields ``handler.contract`` declares for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from handler.contract import NATIVE, OIP, ErrorAnswer, Prediction, oip_response
from handler.oip import images_from_oip, oip_body, request_id
from handler.preprocessing import InvalidImageError
from handler.service import ItemError
from handler.wire import extract_image_bytes


@dataclass
class WireRequest:
    """One HTTP request: its format, its images (OIP may carry several), or why it was refused."""

    protocol: str
    images: list[bytes | Image.Image] = field(default_factory=list)
    request_id: str | None = None
    error: ErrorAnswer | None = None


@dataclass(frozen=True)
class WireAnswer:
    status: int
    body: dict[str, Any]
    error_type: str | None = None


def decode_request(item: Any, content_types: Mapping[str, str | None] | None = None) -> WireRequest:
    """Read one TorchServe request item; a malformed one is refused alone (``error``), never raised."""
    body = oip_body(item)
    if body is not None:
        try:
            return WireRequest(OIP, images_from_oip(body), request_id(body))
        except InvalidImageError as exc:
            return WireRequest(OIP, request_id=request_id(body), error=ItemError.from_exception(exc))
    try:
        return WireRequest(NATIVE, [extract_image_bytes(item, content_types)])
    except InvalidImageError as exc:
        return WireRequest(NATIVE, error=ItemError.from_exception(exc))


def _first_error(results: Sequence[Prediction | ErrorAnswer]) -> ErrorAnswer | None:
    for index, result in enumerate(results):
        if isinstance(result, ErrorAnswer):
            if len(results) == 1:
                return result
            return ErrorAnswer(result.code, result.type, f"image {index} of {len(results)}: {result.message}")
    return None


def encode_answer(
    request: WireRequest, results: Sequence[Prediction | ErrorAnswer], model_name: str, model_version: str | None
) -> WireAnswer:
    """The HTTP answer to ``request``. An OIP request is one inference: one bad image fails all of it."""
    error = request.error or _first_error(results)
    if error is not None:
        return WireAnswer(error.code, error.to_json(request.protocol), error.type)
    if request.protocol == OIP:
        return WireAnswer(200, oip_response(model_name, list(results), request.request_id, model_version))
    return WireAnswer(200, results[0].to_json())

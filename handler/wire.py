"""The native wire format: TorchServe request items in, JSON answers out.

TorchServe hands the handler the raw body (``{"body": bytes}``), multipart form fields by name, or
an already parsed JSON object. Only this module and ``deepfake_handler`` know that shape; the model
core (``handler.service``) takes image bytes and returns answers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from handler.preprocessing import InvalidImageError

# Fields a JSON or multipart request may carry the image in, in order of preference.
IMAGE_FIELDS = ("data", "body", "image", "file", "b64", "image_base64")


def _from_base64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("the image field is not valid base64") from None


def extract_image_bytes(request: Any) -> bytes:
    """Pull the image bytes out of one TorchServe request item."""
    if isinstance(request, Mapping):
        for key in IMAGE_FIELDS:
            if key in request and request[key] is not None:
                return extract_image_bytes(request[key])
        for value in request.values():  # multipart with an unusual field name
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)
        fields = ", ".join(sorted(map(str, request))) or "none"
        raise InvalidImageError(
            f"no image in request (fields: {fields}); send raw image bytes, a multipart file "
            'field, or JSON {"image": "<base64>"}'
        )
    if isinstance(request, (bytes, bytearray)):
        return bytes(request)
    if isinstance(request, str):
        return _from_base64(request.strip())
    raise InvalidImageError(f"unsupported request payload of type {type(request).__name__}")

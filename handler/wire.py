"""The native wire format: image bytes out of a TorchServe request item.

TorchServe hands the handler the raw body (``{"body": bytes}``), multipart form fields by name, or
an already parsed JSON object. Only this module and ``deepfake_handler`` know that shape; the model
core (``handler.service``) takes image bytes and returns answers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from handler.preprocessing import InvalidImageError


class InvalidRequestError(InvalidImageError):
    """The request's shape is wrong (no image field, bad base64): HTTP 400 "InvalidRequest"."""

    error_type = "InvalidRequest"


# Fields a JSON or multipart request may carry the image in, in order of preference.
IMAGE_FIELDS = ("data", "body", "image", "file", "b64", "image_base64")


def decode_base64(text: str, what: str = "the image field") -> bytes:
    """Image bytes from base64 text (or a data URL); InvalidRequestError names ``what`` otherwise."""
    if text.startswith("data:") and "," in text:  # data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"{what} is not valid base64 ({len(text)} characters); send base64 of the image file"
        ) from None


def _check_not_broken_json(payload: bytes, content_type: str | None) -> bytes:
    """TorchServe forwards a JSON body it cannot parse as raw bytes: name the JSON error then.

    A body that does not even start like JSON is taken for what it most likely is, an image sent
    with the wrong content type, and decoded as one.
    """
    if content_type and "json" in content_type.lower() and payload.lstrip()[:1] in (b"{", b"[", b'"'):
        try:
            json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"malformed JSON body ({exc})") from None
    return payload


def extract_image_bytes(request: Any, content_types: Mapping[str, str | None] | None = None) -> bytes:
    """Pull the image bytes out of one TorchServe request item.

    ``content_types``: the declared content type of each of the item's fields, when known.
    """
    content_types = content_types or {}
    if isinstance(request, Mapping):
        for key in IMAGE_FIELDS:
            if key in request and request[key] is not None:
                value = request[key]
                if isinstance(value, (bytes, bytearray)):
                    return _check_not_broken_json(bytes(value), content_types.get(key))
                return extract_image_bytes(value)
        for value in request.values():  # multipart with an unusual field name
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)
        fields = ", ".join(sorted(map(str, request))) or "none"
        raise InvalidRequestError(
            f"no image in request (fields: {fields}); send raw image bytes, a multipart file "
            'field, or JSON {"image": "<base64>"}'
        )
    if isinstance(request, (bytes, bytearray)):
        return bytes(request)
    if isinstance(request, str):
        return decode_base64(request.strip())
    raise InvalidRequestError(f"unsupported request payload of type {type(request).__name__}")

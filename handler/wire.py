"""The native wire format: image bytes out of a TorchServe request item.

TorchServe hands the handler the raw body (``{"body": bytes}``), multipart form fields by name, or
an already parsed JSON object; this module reads the native format's image out of it (``handler.oip``
reads the Open Inference Protocol's, ``handler.formats`` picks between them). The model core
(``handler.service``) takes image bytes and returns answers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from deepfake_contract import BATCH_BUDGET_ERROR_TYPE, BUDGET_ERROR_TYPE, MAX_JSON_DEPTH, describe
from handler.preprocessing import InvalidImageError


class InvalidRequestError(InvalidImageError):
    """The request's shape is wrong (no image field, bad base64): HTTP 400 "InvalidRequest"."""

    error_type = "InvalidRequest"


class OverBudgetError(InvalidImageError):
    """The request asks for more than one of deepfake_contract's budgets allows (413, or 400 for shape)."""

    error_type = BUDGET_ERROR_TYPE

    def __init__(self, message: str, status: int = 413):
        super().__init__(message)
        self.status = status


class BatchFullError(InvalidImageError):
    """The batch's pixel budget was spent by smaller requests: 503, the client sends it again."""

    status = 503
    error_type = BATCH_BUDGET_ERROR_TYPE


def _names(names: Any, most: int = 8) -> str:
    """Field names for a message: sorted, each cut short, at most ``most`` of them."""
    printable = ("".join(c if c.isprintable() else "?" for c in str(name)[:30]) for name in list(names)[: most + 1])
    listed = sorted(printable)
    return ", ".join(listed[:most]) + (", ..." if len(listed) > most else "")


def parse_json(payload: bytes | str) -> Any:
    """json.loads that turns a body nested past Python's recursion limit into a 400 naming the budget
    (the deeper checks against MAX_JSON_DEPTH happen where the parsed value is walked)."""
    try:
        return json.loads(payload)
    except RecursionError:
        raise too_deep() from None


def too_deep() -> OverBudgetError:
    return OverBudgetError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels (budget MAX_JSON_DEPTH)", status=400)


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
            parse_json(payload)
        except OverBudgetError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"malformed JSON body ({str(exc)[:120]})") from None
    return payload


def extract_image_bytes(request: Any, content_types: Mapping[str, str | None] | None = None, depth: int = 0) -> bytes:
    """Pull the image bytes out of one TorchServe request item: one image, never one of several silently.

    ``content_types``: the declared content type of each of the item's fields, when known. A multipart
    form with more than one file is refused (400): one image per native request, several per OIP request.
    """
    content_types = content_types or {}
    if isinstance(request, Mapping):
        if depth >= 2:  # {"body": {"image": "<base64>"}} is as deep as a native request goes
            raise InvalidRequestError('the image field is nested too deep: send JSON {"image": "<base64>"}')
        files = [name for name, value in request.items() if isinstance(value, (bytes, bytearray))]
        if len(files) > 1:
            shown = _names(files)
            raise InvalidRequestError(
                f"{len(files)} files in one request ({shown}); send one image per request, or several "
                "images in one Open Inference Protocol request (POST /v2/models/<model>/infer)"
            )
        for key in IMAGE_FIELDS:
            if key in request and request[key] is not None:
                value = request[key]
                if isinstance(value, (bytes, bytearray)):
                    return _check_not_broken_json(bytes(value), content_types.get(key))
                return extract_image_bytes(value, depth=depth + 1)
        if files:  # multipart with an unusual field name
            return bytes(request[files[0]])
        fields = _names(request) or "none"
        raise InvalidRequestError(
            f"no image in request (fields: {fields}); send raw image bytes, a multipart file "
            'field, or JSON {"image": "<base64>"}'
        )
    if isinstance(request, (bytes, bytearray)):
        return bytes(request)
    if isinstance(request, str):
        return decode_base64(request.strip())
    raise InvalidRequestError(f"unsupported request payload: {describe(request)}; send the image bytes or base64")

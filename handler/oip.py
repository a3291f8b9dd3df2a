"""The Open Inference Protocol (KServe v2) request format: images out of ``{"inputs": [...]}``.

TorchServe routes ``POST /v2/models/<model>/infer`` to the handler like any prediction, but its own
``kservev2`` envelope answers only the first request of a batch. So the handler reads OIP itself:
this module turns an OIP body into images for the model core, and ``handler.contract`` declares the
answer's tensors. Accepted inputs (any name, several tensors and several images per request):

* ``BYTES``, shape [N]: each element base64 of an image file (JPEG, PNG, ...), as in KServe's examples;
* ``UINT8``, shape [H, W, C] or [N, H, W, C], C = 1, 3 (RGB) or 4: raw pixels, row-major.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from handler.contract import OIP_DATATYPES
from handler.preprocessing import InvalidImageError, check_pixel_count, image_from_array
from handler.wire import InvalidRequestError, decode_base64


def oip_body(request: Any) -> Mapping[str, Any] | None:
    """The OIP body of one TorchServe request item, or None when the item is not an OIP request.

    TorchServe parses a JSON body sent as application/json; sent as anything else it arrives as
    bytes, and is parsed here when it starts like a JSON object (an image never does).
    """
    body = request.get("body", request.get("data")) if isinstance(request, Mapping) else request
    if isinstance(body, (bytes, bytearray)) and bytes(body[:64]).lstrip()[:1] == b"{":
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
    return body if isinstance(body, Mapping) and "inputs" in body else None


def request_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("id")
    return None if value is None else str(value)


def _shape(tensor: Mapping[str, Any], where: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidRequestError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flat(item)]
    return [data]


def _bytes_images(tensor: Mapping[str, Any], where: str) -> list[bytes]:
    shape = _shape(tensor, where)
    elements = _flat(tensor.get("data", []))
    if len(elements) != math.prod(shape):
        raise InvalidRequestError(f"{where}: shape {shape} needs {math.prod(shape)} elements, data has {len(elements)}")
    images = []
    for index, element in enumerate(elements):
        if not isinstance(element, str):
            raise InvalidRequestError(
                f"{where}, element {index}: BYTES elements must be base64 strings of image files, "
                f"got {type(element).__name__}"
            )
        images.append(decode_base64(element.strip(), f"{where}, element {index}"))
    return images


def _pixel_images(tensor: Mapping[str, Any], where: str) -> list[Image.Image]:
    shape = _shape(tensor, where)
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4:
        raise InvalidRequestError(f"{where}: UINT8 images need shape [H, W, C] or [N, H, W, C], got {shape}")
    count, height, width, channels = shape
    if channels not in (1, 3, 4):
        raise InvalidRequestError(f"{where}: {channels} channels; send 1 (gray), 3 (RGB) or 4 (RGBA)")
    check_pixel_count(width, height)  # from the declared shape, before building any array
    try:
        pixels = np.asarray(tensor.get("data", []), dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequestError(f"{where}: UINT8 data must be integers from 0 to 255") from None
    if pixels.size != math.prod(shape):
        raise InvalidRequestError(f"{where}: shape {shape} needs {math.prod(shape)} values, data has {pixels.size}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise InvalidRequestError(f"{where}: UINT8 values must lie in 0..255, got {pixels.min()}..{pixels.max()}")
    pixels = pixels.astype(np.uint8).reshape(count, height, width, channels)
    return [image_from_array(pixels[n]) for n in range(count)]


def images_from_oip(body: Mapping[str, Any]) -> list[bytes | Image.Image]:
    """Every image of an OIP request, in order; InvalidRequestError (400) or ImageTooLargeError (413)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError(
            'OIP request without inputs: send {"inputs": [{"name", "datatype", "shape", "data"}]}'
        )
    images: list[bytes | Image.Image] = []
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise InvalidRequestError(f"inputs[{position}] is a {type(tensor).__name__}, not a tensor object")
        where = f"input {tensor.get('name', position)!r}"
        datatype = str(tensor.get("datatype", "")).upper()
        try:
            if datatype == "BYTES":
                images += _bytes_images(tensor, where)
            elif datatype == "UINT8":
                images += _pixel_images(tensor, where)
            else:
                raise InvalidRequestError(
                    f"{where}: datatype {tensor.get('datatype')!r} is not an image; send "
                    f"{' or '.join(OIP_DATATYPES)} (base64 image files, or pixels of shape [H, W, C])"
                )
        except InvalidRequestError:
            raise
        except InvalidImageError as exc:  # too large, or a bad pixel array: keep its status and type
            raise type(exc)(f"{where}: {exc}") from None
    if not images:
        raise InvalidRequestError("OIP request with no images (every input tensor is empty)")
    return images

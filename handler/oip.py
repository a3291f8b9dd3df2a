"""The Open Inference Protocol (KServe v2) request format: images out of ``{"inputs": [...]}``.

TorchServe routes ``POST /v2/models/<model>/infer`` to the handler like any prediction, but its own
``kservev2`` envelope answers only the first request of a batch. So the handler reads OIP itself:
this module turns an OIP body into images for the model core, and ``deepfake_contract`` declares the
answer's tensors. Accepted inputs (any name, several tensors and several images per request):

* ``BYTES``, shape [N]: each element base64 of an image file (JPEG, PNG, ...), as in KServe's examples;
* ``UINT8``, shape [H, W, C] or [N, H, W, C], C = 1, 3 (RGB) or 4: raw pixels, row-major.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from deepfake_contract import (
    MAX_ID_LENGTH,
    MAX_IMAGES_PER_REQUEST,
    MAX_JSON_DEPTH,
    MAX_REQUEST_PIXELS,
    OIP_DATATYPES,
    describe,
)
from handler.preprocessing import InvalidImageError, check_pixel_count, declared_pixels, image_from_array
from handler.wire import InvalidRequestError, OverBudgetError, decode_base64, parse_json, too_deep

OIP_BODY_HINT = 'send a JSON object {"inputs": [{"name", "datatype", "shape", "data"}]}'


def oip_body(request: Any, required: bool = False) -> Mapping[str, Any] | None:
    """The OIP body of one TorchServe request item, or None when the item is not an OIP request.

    TorchServe parses a JSON body sent as application/json; sent as anything else it arrives as
    bytes, and is parsed here when it starts like a JSON object (an image never does). ``required``:
    the request came to the OIP endpoint, so anything else is a 400 in the protocol's error shape.
    """
    body = request.get("body", request.get("data")) if isinstance(request, Mapping) else request
    if isinstance(body, (bytes, bytearray)) and (required or bytes(body[:64]).lstrip()[:1] == b"{"):
        try:
            body = parse_json(bytes(body))
        except OverBudgetError:
            raise
        except (ValueError, UnicodeDecodeError):
            if required:
                raise InvalidRequestError(f"the body is not JSON ({len(body)} bytes); {OIP_BODY_HINT}") from None
            return None
    if isinstance(body, Mapping) and "inputs" in body:
        return body
    if required:
        raise InvalidRequestError(f"the body is {describe(body)}, not an inference request; {OIP_BODY_HINT}")
    return None


def request_id(body: Mapping[str, Any]) -> str | None:
    """The request's ``id``, echoed in the answer: a string of at most MAX_ID_LENGTH characters."""
    value = body.get("id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"id must be a string, got {describe(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise OverBudgetError(
            f"id of {len(value)} characters over the budget of {MAX_ID_LENGTH} (MAX_ID_LENGTH)", status=400
        )
    return value


def _shape(tensor: Mapping[str, Any], where: str) -> list[int]:
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) <= 4) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequestError(
            f"{where}: shape must be a list of at most 4 non-negative integers, got {describe(shape)}"
        )
    return shape


def flatten(data: Any, max_depth: int) -> list[Any]:
    """The leaves of nested lists in order, iteratively: no recursion, whatever a request nests."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= max_depth:
                    raise too_deep()
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


@dataclass
class Tally:
    """What a request has declared so far, checked against the per-request budgets as it grows."""

    images: int = 0
    pixels: int = 0

    def add_images(self, count: int, where: str) -> None:
        self.images += count
        if self.images > MAX_IMAGES_PER_REQUEST:
            raise OverBudgetError(
                f"{where}: {self.images} images in one request, over the budget of {MAX_IMAGES_PER_REQUEST} "
                "(MAX_IMAGES_PER_REQUEST); send them in several requests"
            )

    def add_pixels(self, pixels: int, where: str) -> None:
        self.pixels += pixels
        if self.pixels > MAX_REQUEST_PIXELS:
            raise OverBudgetError(
                f"{where}: {self.pixels / 1e6:.1f} MP in one request, over the budget of "
                f"{MAX_REQUEST_PIXELS / 1e6:.0f} MP (MAX_REQUEST_PIXELS); send them in several requests"
            )


def _elements(tensor: Mapping[str, Any], shape: list[int], where: str) -> list[Any]:
    elements = flatten(tensor.get("data", []), MAX_JSON_DEPTH)
    if len(elements) != math.prod(shape):
        raise InvalidRequestError(f"{where}: shape {shape} needs {math.prod(shape)} elements, data has {len(elements)}")
    return elements


def _bytes_images(tensor: Mapping[str, Any], where: str, tally: Tally) -> list[bytes]:
    shape = _shape(tensor, where)
    tally.add_images(math.prod(shape), where)  # before any element is decoded
    images = []
    for index, element in enumerate(_elements(tensor, shape, where)):
        if not isinstance(element, str):
            raise InvalidRequestError(
                f"{where}, element {index}: BYTES elements must be base64 strings of image files, "
                f"got {describe(element)}"
            )
        images.append(decode_base64(element.strip(), f"{where}, element {index}"))
        tally.add_pixels(declared_pixels(images[-1]), where)  # from the file's header
    return images


def _pixel_images(tensor: Mapping[str, Any], where: str, tally: Tally) -> list[Image.Image]:
    shape = _shape(tensor, where)
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4:
        raise InvalidRequestError(f"{where}: UINT8 images need shape [H, W, C] or [N, H, W, C], got {shape}")
    count, height, width, channels = shape
    if channels not in (1, 3, 4):
        raise InvalidRequestError(f"{where}: {channels} channels; send 1 (gray), 3 (RGB) or 4 (RGBA)")
    check_pixel_count(width, height)  # from the declared shape, before building any array
    tally.add_images(count, where)
    tally.add_pixels(count * width * height, where)
    values = _elements(tensor, shape, where)
    kinds = set(map(type, values))
    if kinds - {int}:  # bool is a type of its own: True is not a pixel value
        wrong = ", ".join(sorted(kind.__name__ for kind in kinds - {int}))
        raise InvalidRequestError(f"{where}: UINT8 data must be integers from 0 to 255, got {wrong} values")
    try:
        pixels = np.array(values, dtype=np.uint8)
    except OverflowError:
        low, high = min(values), max(values)
        raise InvalidRequestError(
            f"{where}: UINT8 values must lie in 0..255, got {describe(low)}..{describe(high)}"
        ) from None
    pixels = pixels.reshape(count, height, width, channels)
    return [image_from_array(pixels[n]) for n in range(count)]


def images_from_oip(body: Mapping[str, Any]) -> tuple[list[bytes | Image.Image], int]:
    """Every image of an OIP request in order, and the pixels they declare; InvalidRequestError (400),
    OverBudgetError (413 or 400) or ImageTooLargeError (413)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequestError(f"OIP request without inputs: {OIP_BODY_HINT}")
    if len(inputs) > MAX_IMAGES_PER_REQUEST:
        raise OverBudgetError(
            f"{len(inputs)} input tensors, over the budget of {MAX_IMAGES_PER_REQUEST} images (MAX_IMAGES_PER_REQUEST)"
        )
    images: list[bytes | Image.Image] = []
    tally = Tally()
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise InvalidRequestError(f"inputs[{position}] is {describe(tensor)}, not a tensor object")
        name = tensor.get("name", position)
        where = f"input {describe(name, 40)}"
        datatype = tensor.get("datatype")
        try:
            if datatype == "BYTES":
                images += _bytes_images(tensor, where, tally)
            elif datatype == "UINT8":
                images += _pixel_images(tensor, where, tally)
            else:
                raise InvalidRequestError(
                    f"{where}: datatype {describe(datatype, 20)} is not an image; send "
                    f"{' or '.join(OIP_DATATYPES)} (base64 image files, or pixels of shape [H, W, C])"
                )
        except (InvalidRequestError, OverBudgetError):
            raise
        except InvalidImageError as exc:  # too large, or a bad pixel array: keep its status and type
            raise type(exc)(f"{where}: {exc}") from None
    if not images:
        raise InvalidRequestError("OIP request with no images (every input tensor is empty)")
    return images, tally.pixels

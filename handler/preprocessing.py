"""Image decoding and the one preprocessing function shared by serving, training and evaluation.

The original app resized straight to 224x224 (no crop, aspect ratio not kept) with bilinear
filtering, then normalised. Training, evaluation and the handler all call ``to_model_input`` so
a checkpoint always sees at serving time exactly what it saw when it was trained.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Fields a JSON or multipart request may carry the image in, in order of preference.
IMAGE_FIELDS = ("data", "body", "image", "file", "b64", "image_base64")


class InvalidImageError(ValueError):
    """The request did not contain a decodable image."""


def decode_image(payload: bytes) -> Image.Image:
    """Decode image bytes to an RGB image with its EXIF orientation applied."""
    if not payload:
        raise InvalidImageError("empty request body: send the image bytes")
    try:
        image = Image.open(io.BytesIO(payload))
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"not a recognised image format ({len(payload)} bytes); send JPEG, PNG, WebP, BMP or TIFF"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"cannot decode image ({len(payload)} bytes): {exc}") from None
    return image.convert("RGB")


def resize_for_model(image: Image.Image, size: int) -> Image.Image:
    """Direct size x size bilinear resize of an RGB image, as the original app did."""
    return image.convert("RGB").resize((size, size), Image.BILINEAR)


def to_model_input(image: Image.Image, mean: Sequence[float], std: Sequence[float], size: int = 224) -> torch.Tensor:
    """RGB image -> normalised float tensor of shape (3, size, size)."""
    array = np.asarray(resize_for_model(image, size), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (tensor - mean_t) / std_t


def _from_base64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("the image field is not valid base64") from None


def extract_image_bytes(request: Any) -> bytes:
    """Pull the image bytes out of one TorchServe request item.

    TorchServe hands the handler either the raw body (``{"body": bytes}``), the multipart form
    fields by name, or an already parsed JSON object when the content type is JSON.
    """
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

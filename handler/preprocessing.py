"""Image decoding and the one preprocessing function shared by serving, training and evaluation.

The original app resized straight to 224x224 (no crop, aspect ratio not kept) with bilinear
filtering, then normalised. Training, evaluation and the handler all call ``to_model_input`` so
a checkpoint always sees at serving time exactly what it saw when it was trained.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# The largest image decoded (deepfake_contract, shared with the client): a 61 MP full-frame photo, a 48 MP
# phone photo and an 8K frame (33 MP) pass; a decompression bomb (a few KB of PNG or JPEG declaring
# gigapixels) is refused from its header, before any pixel is decoded. Only one image is decoded at a
# time, so a worker needs about 3 bytes x MAX_IMAGE_PIXELS (~200 MB) for it, whatever the batch.
from deepfake_contract import MAX_IMAGE_PIXELS

# Modes whose values are wider than 8 bits: Pillow's convert("RGB") clips them at 255.
_WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 255.0}


class InvalidImageError(ValueError):
    """The request did not contain a decodable image (HTTP 400)."""

    status = 400
    error_type = "InvalidImage"


class ImageTooLargeError(InvalidImageError):
    """The image declares more pixels than MAX_IMAGE_PIXELS (HTTP 413)."""

    status = 413
    error_type = "ImageTooLarge"


def decode_image(payload: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode image bytes to an RGB image with its EXIF orientation applied.

    Any format Pillow reads is accepted and converted: grayscale, 16-bit, CMYK, palette, RGBA (alpha
    dropped, as torchvision's loaders do in training) and the first frame of an animation.
    ``draft_size``: let a large JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), never
    below ``draft_size`` on either side. Several times faster for photos and 4K frames, but not the
    exact pixels: an archive opts in with ``jpeg_draft`` (deviation in docs/benchmark.md).
    """
    if not payload:
        raise InvalidImageError("empty request body: send the image bytes")
    try:
        image: Image.Image = Image.open(io.BytesIO(payload))
        check_pixel_count(*image.size)
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy of the decoded image when it is upright
        return to_rgb(image)
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its default limit
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)) / 1e6:.1f} MP" if declared else "a decompression bomb"
        raise ImageTooLargeError(_too_large_message(size + ",")) from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"not a recognised image format ({len(payload)} bytes); send JPEG, PNG, WebP, BMP, GIF or TIFF"
        ) from None
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"cannot decode image ({len(payload)} bytes): {exc}") from None


def declared_pixels(payload: bytes | Image.Image) -> int:
    """The pixels an image declares, read from its header without decoding it (0 when it has no readable
    header: decoding then fails at once, at no cost)."""
    if isinstance(payload, Image.Image):
        return payload.width * payload.height
    try:
        with Image.open(io.BytesIO(payload)) as image:
            return image.width * image.height
    except Exception:
        return 0


def image_from_array(pixels: np.ndarray) -> Image.Image:
    """An RGB image from uint8 pixels of shape (H, W, C), C = 1 (gray), 3 (RGB) or 4 (RGBA, alpha dropped)."""
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise InvalidImageError(
            f"pixel array of shape {list(pixels.shape)}: expected [height, width, channels] with 1, 3 or 4 channels"
        )
    height, width, channels = pixels.shape
    if height < 1 or width < 1:
        raise InvalidImageError(f"pixel array of shape {list(pixels.shape)} has no pixels")
    check_pixel_count(width, height)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels, dtype=np.uint8), mode)
    return to_rgb(image)


def check_pixel_count(width: int, height: int) -> None:
    """Refuse an image (or video frame) larger than MAX_IMAGE_PIXELS before decoding it."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(_too_large_message(f"{width}x{height} = {width * height / 1e6:.1f} MP,"))


def _too_large_message(size: str) -> str:
    return f"image too large: {size} over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels"


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; 16-bit and float images are scaled, not clipped."""
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(values * (255.0 / _WIDE_MODES[image.mode]), 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_for_model(image: Image.Image, size: int) -> Image.Image:
    """Direct size x size bilinear resize of an RGB image, as the original app did.

    A frame that already has the model's size (what the client sends) is used as it is.
    """
    image = image if image.mode == "RGB" else image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BILINEAR)


def to_model_input(image: Image.Image, mean: Sequence[float], std: Sequence[float], size: int = 224) -> torch.Tensor:
    """RGB image -> normalised float tensor of shape (3, size, size): ``(pixel / 255 - mean) / std``.

    Computed as one multiply-add per channel plane with the constants folded (``pixel * scale +
    offset``): the same values to float32 rounding, ~5x cheaper than normalising HWC floats. In numpy,
    which runs it on the calling thread: torch split these small steps over its threads, and in a worker
    sharing the cores with TorchServe's frontend and the clients each step waited for its slowest thread
    (~4x the time of one thread, measured here).
    """
    scale, offset = _normalisation(tuple(mean), tuple(std))
    pixels = np.asarray(resize_for_model(image, size))
    planes = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    np.copyto(planes, pixels.transpose(2, 0, 1))  # uint8 HWC -> float32 CHW in one pass
    planes *= scale
    planes += offset
    return torch.from_numpy(planes)


EXIF_ORIENTATION = 0x0112


def is_plain_frame(payload: bytes | Image.Image, size: int) -> bool:
    """Whether ``payload`` is a frame as the client sends it: a plain JPEG (``plain_jpeg_size``) of exactly ``size`` x
    ``size``. Such a frame needs no resize, rotation or colour conversion, so a GPU worker may decode it with nvJPEG
    (``decode_frames``), which gives Pillow's pixels (docs/benchmark.md, 14); anything else takes ``decode_image``.
    Reads the header only; never raises."""
    return plain_jpeg_size(payload) == (size, size)


def plain_jpeg_size(payload: bytes | Image.Image) -> tuple[int, int] | None:
    """The (width, height) of a baseline YCbCr JPEG that is upright (no EXIF rotation); None for anything else,
    which needs ``decode_image``'s rotation or colour conversion. Reads the header only; never raises."""
    if not isinstance(payload, bytes) or not payload.startswith(b"\xff\xd8"):
        return None
    try:
        with Image.open(io.BytesIO(payload)) as image:
            plain = (
                image.format == "JPEG"
                and image.mode == "RGB"
                and not image.info.get("progressive")
                and "adobe" not in image.info  # an Adobe APP14 marker may mean RGB or CMYK samples, not YCbCr
                and image.getexif().get(EXIF_ORIENTATION, 1) == 1
            )
            return image.size if plain else None
    except Exception:
        return None


def decode_pixels(payload: bytes) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 RGB pixels, exactly ``np.asarray(decode_image(payload))``; raises
    InvalidImageError. A plain JPEG (``plain_jpeg_size``: the client's frames) is decoded by libjpeg-turbo
    straight into the array (``torchvision.io.decode_jpeg``, the same pixels as Pillow's: checked on every
    subsampling and quality), without Pillow's image of 4 bytes per pixel and its copy into an array: the
    client's 720p frame 0.8-1.7 ms sooner of 8-10 here, a 64 MP photo's peak memory +204 MB instead of +611.
    For face-crop mode, whose detector reads pixel arrays. (torchvision 0.29 deprecates its decoders for
    TorchCodec's; the GPU path's ``decode_frames`` uses them too.)"""
    size = plain_jpeg_size(payload)
    if size is None:
        return np.asarray(decode_image(payload))
    check_pixel_count(*size)
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        decoded = decode_jpeg(torch.frombuffer(bytearray(payload), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as exc:  # libjpeg's error, as decode_image reports Pillow's
        raise InvalidImageError(f"cannot decode image ({len(payload)} bytes): {exc}") from None
    return decoded.permute(1, 2, 0).numpy()  # libjpeg's rows of RGB pixels: (3, H, W) is a view of them


def decode_frames(
    frames: Sequence[bytes], device: torch.device, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Plain frames (``is_plain_frame``) decoded in one nvJPEG batch on ``device`` and normalised there: the model's
    input (N, 3, H, W) float32, as ``to_model_input`` computes it (the same constants, multiply then add), without
    a trip through the host. Raises when nvJPEG refuses any of them (the caller decodes those on the CPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(frame), dtype=torch.uint8) for frame in frames]
    images = torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    scale, offset = (torch.tensor(constant, device=device) for constant in _normalisation(tuple(mean), tuple(std)))
    return images.to(torch.float32).mul_(scale).add_(offset)


@functools.cache
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    std_array = np.asarray(std, dtype=np.float64)
    scale = (1.0 / (255.0 * std_array)).astype(np.float32).reshape(3, 1, 1)
    offset = (-np.asarray(mean, dtype=np.float64) / std_array).astype(np.float32).reshape(3, 1, 1)
    scale.flags.writeable = offset.flags.writeable = False  # cached: shared by every call
    return scale, offset

"""Preprocessing: exact tensors, EXIF orientation, every way a request can carry an image."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from handler.preprocessing import (
    EXIF_ORIENTATION,
    ImageTooLargeError,
    InvalidImageError,
    decode_frames,
    decode_image,
    decode_pixels,
    is_plain_frame,
    plain_jpeg_size,
    to_model_input,
)
from handler.settings import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD
from handler.wire import extract_image_bytes
from tests.conftest import frame_bytes, image_bytes
from tests.inputs import ImageCase, as_torchserve_item, image_cases

TIER = "unit"

PIXELS = [(0, 128, 255), (255, 0, 51), (10, 20, 30), (200, 100, 50)]  # a 2x2 image, row-major


def tiny_image() -> Image.Image:
    image = Image.new("RGB", (2, 2))
    image.putdata(PIXELS)
    return image


@pytest.mark.parametrize(("mean", "std"), [(HALF_MEAN, HALF_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_exact_tensor_for_known_pixels(mean, std):
    tensor = to_model_input(tiny_image(), mean, std, size=2)  # same size: the resize is exact
    expected = torch.tensor(
        [
            [[(PIXELS[r * 2 + c][ch] / 255.0 - mean[ch]) / std[ch] for c in range(2)] for r in range(2)]
            for ch in range(3)
        ]
    )
    assert tensor.shape == (3, 2, 2)
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)


def test_half_normalisation_maps_black_and_white_to_minus_one_and_one():
    white = to_model_input(Image.new("RGB", (7, 5), (255, 255, 255)), HALF_MEAN, HALF_STD)
    black = to_model_input(Image.new("RGB", (7, 5), (0, 0, 0)), HALF_MEAN, HALF_STD)
    assert white.shape == black.shape == (3, 224, 224)  # direct resize, aspect ratio not kept
    assert torch.equal(white, torch.ones(3, 224, 224))
    assert torch.equal(black, -torch.ones(3, 224, 224))


def test_imagenet_normalisation_of_a_uniform_colour():
    tensor = to_model_input(Image.new("RGB", (31, 17), (51, 102, 204)), IMAGENET_MEAN, IMAGENET_STD)
    for channel, value in enumerate((51, 102, 204)):
        expected = (value / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        torch.testing.assert_close(tensor[channel], torch.full((224, 224), expected), rtol=0, atol=1e-6)


def test_resize_is_bilinear_like_torchvision_resize():
    from torchvision import transforms

    image = decode_image(image_bytes(size=(97, 61)))
    reference = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(HALF_MEAN, HALF_STD)]
    )(image)
    torch.testing.assert_close(to_model_input(image, HALF_MEAN, HALF_STD), reference, rtol=0, atol=1e-6)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).size == (20, 40)


def test_grayscale_and_alpha_images_become_rgb():
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (8, 8)).save(buffer, format="PNG")
        assert decode_image(buffer.getvalue()).mode == "RGB"


@pytest.mark.parametrize("payload", [b"", b"not an image", image_bytes()[:40]])
def test_undecodable_bytes_raise_a_clear_error(payload):
    with pytest.raises(InvalidImageError, match=r"empty request body|not a recognised image|cannot decode"):
        decode_image(payload)


def test_request_shapes():
    raw = image_bytes()
    encoded = base64.b64encode(raw).decode()
    assert extract_image_bytes(raw) == raw
    assert extract_image_bytes({"body": bytearray(raw)}) == raw
    assert extract_image_bytes({"data": raw}) == raw
    assert extract_image_bytes({"upload": raw}) == raw  # multipart field with any name
    assert extract_image_bytes({"body": {"image": encoded}}) == raw  # parsed JSON body
    assert extract_image_bytes({"body": {"image": f"data:image/jpeg;base64,{encoded}"}}) == raw
    assert extract_image_bytes({"body": encoded}) == raw  # text/plain base64


def test_request_without_an_image_names_its_fields():
    with pytest.raises(InvalidImageError, match=r"no image in request \(fields: caption, id\)"):
        extract_image_bytes({"body": {"caption": "x", "id": 3}})
    with pytest.raises(InvalidImageError, match="not valid base64"):
        extract_image_bytes({"body": {"image": "***"}})


def test_jpeg_draft_decodes_large_jpegs_at_reduced_scale_only_when_asked():
    photo = io.BytesIO()
    Image.new("RGB", (1920, 1080), (120, 80, 40)).save(photo, format="JPEG")
    assert decode_image(photo.getvalue()).size == (1920, 1080)  # exact by default
    drafted = decode_image(photo.getvalue(), draft_size=224)
    assert drafted.size == (480, 270)  # 1/4 scale: the smallest libjpeg scale keeping both sides >= 224
    small = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(small, format="JPEG")
    assert decode_image(small.getvalue(), draft_size=224).size == (300, 200)  # no scale keeps 224
    png = io.BytesIO()
    Image.new("RGB", (1920, 1080)).save(png, format="PNG")
    assert decode_image(png.getvalue(), draft_size=224).size == (1920, 1080)  # JPEG only


@pytest.mark.parametrize("case", [c for c in image_cases() if c.error_type or c.valid], ids=lambda c: c.name)
def test_the_input_battery_in_process(case: ImageCase):
    """Valid images decode to exactly the reference pixels; broken ones raise the case's error."""
    item, content_types = as_torchserve_item(case)
    if case.valid:
        decoded = decode_image(extract_image_bytes(item, content_types))
        assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(io.BytesIO(case.reference)).convert("RGB")))
        return
    with pytest.raises(InvalidImageError) as info:
        decode_image(extract_image_bytes(item, content_types))
    assert (info.value.status, info.value.error_type) == (case.status, case.error_type)
    assert case.message in str(info.value)


# --- the client's plain frames: decoded in one batch on a GPU worker (nvJPEG), here on the CPU -------------------
def test_only_an_upright_baseline_rgb_jpeg_of_the_models_size_is_a_plain_frame():
    assert is_plain_frame(frame_bytes(0), 224)
    rotated = Image.open(io.BytesIO(frame_bytes(0)))
    exif = rotated.getexif()
    exif[EXIF_ORIENTATION] = 6
    not_plain = [
        frame_bytes(0, 160, quality=90),  # needs a resize
        frame_bytes(0, progressive=True),
        frame_bytes(0, exif=exif.tobytes()),  # needs a rotation
        image_bytes(size=(224, 224), fmt="PNG"),
    ]
    gray = io.BytesIO()
    Image.new("L", (224, 224), 90).save(gray, format="JPEG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (224, 224), (1, 2, 3, 4)).save(cmyk, format="JPEG")
    assert not any(is_plain_frame(p, 224) for p in not_plain)
    assert is_plain_frame(frame_bytes(0, quality=90), 224)  # any baseline encoder's, not only the client's
    assert not is_plain_frame(gray.getvalue(), 224) and not is_plain_frame(cmyk.getvalue(), 224)
    assert not is_plain_frame(b"\xff\xd8 not a JPEG", 224) and not is_plain_frame(b"", 224)
    assert not is_plain_frame(Image.new("RGB", (224, 224)), 224)  # type: ignore[arg-type]


# --- a face-crop worker decodes to a pixel array (decode_pixels): a plain JPEG by libjpeg-turbo straight into it ----
@pytest.mark.parametrize("case", [c for c in image_cases() if c.error_type or c.valid], ids=lambda c: c.name)
def test_the_input_battery_decoded_to_pixels(case: ImageCase):
    """The same pixels as decode_image's, and the same errors, whichever decoder a payload takes."""
    item, content_types = as_torchserve_item(case)
    if case.valid:
        pixels = decode_pixels(extract_image_bytes(item, content_types))
        assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous
        assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(case.reference)).convert("RGB")))
        return
    with pytest.raises(InvalidImageError) as info:
        decode_pixels(extract_image_bytes(item, content_types))
    assert (info.value.status, info.value.error_type) == (case.status, case.error_type)
    assert case.message in str(info.value)


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4 (the client's), 4:2:2, 4:2:0
@pytest.mark.parametrize(("width", "height", "quality"), [(1280, 720, 95), (333, 97, 60), (1, 1, 100)])
def test_a_plain_jpeg_decodes_to_pillows_pixels(width: int, height: int, quality: int, subsampling: int):
    rng = np.random.default_rng(width)
    scene = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).filter(ImageFilter.BoxBlur(1))
    buffer = io.BytesIO()
    scene.save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    payload = buffer.getvalue()
    assert plain_jpeg_size(payload) == (width, height)
    assert np.array_equal(decode_pixels(payload), np.asarray(decode_image(payload)))


def test_a_plain_jpeg_declaring_too_many_pixels_is_refused_from_its_header():
    payload = bytearray(frame_bytes(0, quality=90))
    sof = payload.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    payload[sof + 5 : sof + 9] = (8000).to_bytes(2, "big") + (9000).to_bytes(2, "big")
    assert plain_jpeg_size(bytes(payload)) == (9000, 8000)
    with pytest.raises(ImageTooLargeError, match=r"9000x8000 = 72\.0 MP"):
        decode_pixels(bytes(payload))


@pytest.mark.parametrize(("mean", "std"), [(HALF_MEAN, HALF_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_a_batch_of_frames_decodes_to_exactly_the_one_preprocessing_functions_input(mean, std):
    frames = [frame_bytes(seed) for seed in range(5)]
    batch = decode_frames(frames, torch.device("cpu"), mean, std)
    expected = torch.stack([to_model_input(decode_image(frame), mean, std) for frame in frames])
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)
    with pytest.raises(RuntimeError):  # a header that passes, with its data cut: the caller falls back per frame
        decode_frames([frames[0], frames[1][: len(frames[1]) // 2]], torch.device("cpu"), mean, std)

"""The bad-input battery: unusual but valid images, broken ones, and broken requests and videos.

Each case says what a correct deployment answers. The same cases drive the in-process tests of the
model core (test_preprocessing.py), the tests against real TorchServe, the CLI and the library
(test_reliability.py), and the matrix in docs/reliability.md.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from tests.media import constant_rate, write_audio_only, write_video

MAX_REQUEST_SIZE = 33554432  # config.properties


@dataclass(frozen=True)
class ImageCase:
    name: str
    payload: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    error_type: str | None = None  # the JSON "type" of the error
    message: str | None = None  # a fragment of the error message
    reference: bytes | None = None  # lossless PNG of the pixels the model must see (valid cases)
    on_disk: bool = True  # a file the CLI and the library can be given (not a request-shape case)

    @property
    def valid(self) -> bool:
        return self.status == 200


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    return _save(image, "PNG")


def scene(size: tuple[int, int] = (120, 90), seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with structure in both directions (orientation matters)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    r, g, b = rng.integers(0, 256, 3)
    array = np.stack([(r + 2 * x) % 256, (g + 3 * y) % 256, (b + x * y // 7) % 256], axis=-1)
    array[: height // 3, : width // 4] = (250, 250, 20)  # a block in one corner
    return Image.fromarray(array.astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    return _png_header(width, height, 16, 2) + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


@functools.cache
def black_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed as a stream: tiny on the wire, huge once decoded."""
    compressor, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return _png_header(width, height, 1, 0) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> tuple[bytes, bytes]:
    """(JPEG stored sideways with EXIF orientation 6, the upright pixels as PNG).

    The upright reference is made without ImageOps.exif_transpose: the stored pixels, decoded, turned
    90 degrees clockwise by hand (orientation 6 means "rotate 90 CW to display").
    """
    stored = scene((90, 120), seed=3)  # portrait as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = _save(stored, "JPEG", quality=95, exif=exif.tobytes())
    decoded = Image.open(io.BytesIO(payload))
    decoded.load()
    upright = decoded.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    return payload, png(upright)


@functools.cache
def image_cases() -> tuple[ImageCase, ...]:
    picture = scene()
    jpeg = _save(picture, "JPEG", quality=92)
    png_bytes = png(picture)
    gray = picture.convert("L")
    wide = (np.arange(90 * 120, dtype=np.uint32).reshape(90, 120) * 6).astype(np.uint16)
    wide_rgb = np.stack([wide, 65535 - wide, wide // 3], axis=-1)
    scaled = np.round(wide.astype(np.float64) * 255 / 65535).astype(np.uint8)
    cmyk = picture.convert("CMYK")
    cmyk_jpeg = _save(cmyk, "JPEG", quality=95)
    rgba = picture.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(picture.size))
    palette = picture.quantize(64)
    frames = [scene(seed=s).quantize(32) for s in (5, 6, 7)]
    animated = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rotated, upright = exif_rotated_jpeg()

    def decoded_png(payload: bytes) -> bytes:  # what Pillow decodes, as lossless RGB
        return png(Image.open(io.BytesIO(payload)).convert("RGB"))

    over_limit, bomb = black_bilevel_png(9000, 8000), black_bilevel_png(40000, 40000)
    return (
        # unusual but valid: converted and classified
        ImageCase("JPEG (baseline)", jpeg, "image/jpeg", reference=decoded_png(jpeg)),
        ImageCase("1x1 PNG", png(Image.new("RGB", (1, 1), (200, 30, 60))), "image/png",
                  reference=png(Image.new("RGB", (1, 1), (200, 30, 60)))),
        ImageCase("grayscale JPEG", _save(gray, "JPEG", quality=95), "image/jpeg",
                  reference=decoded_png(_save(gray, "JPEG", quality=95))),
        ImageCase("16-bit grayscale PNG (scaled, not clipped)", png(Image.fromarray(wide)), "image/png",
                  reference=png(Image.fromarray(scaled).convert("RGB"))),
        ImageCase("16-bit RGB PNG", png16_rgb(wide_rgb), "image/png",
                  reference=png(Image.fromarray((wide_rgb >> 8).astype(np.uint8), "RGB"))),
        ImageCase("CMYK JPEG", cmyk_jpeg, "image/jpeg", reference=decoded_png(cmyk_jpeg)),
        ImageCase("RGBA PNG (alpha dropped)", png(rgba), "image/png", reference=png_bytes),
        ImageCase("palette PNG", png(palette), "image/png", reference=png(palette.convert("RGB"))),
        ImageCase("animated GIF (first frame)", animated, "image/gif", reference=png(frames[0].convert("RGB"))),
        ImageCase("EXIF-rotated JPEG (= upright image)", rotated, "image/jpeg", reference=upright),
        ImageCase("WebP (lossless)", _save(picture, "WEBP", lossless=True), "image/webp", reference=png_bytes),
        ImageCase("BMP", _save(picture, "BMP"), "image/bmp", reference=png_bytes),
        ImageCase("TIFF", _save(picture, "TIFF"), "image/tiff", reference=png_bytes),
        ImageCase("JPEG sent as text/plain", jpeg, "text/plain", reference=decoded_png(jpeg), on_disk=False),
        ImageCase("PNG sent as application/json", png_bytes, "application/json", reference=png_bytes,
                  on_disk=False),
        # broken images: a specific 4xx
        ImageCase("empty body", b"", status=400, error_type="InvalidImage", message="empty request body"),
        ImageCase("text bytes", b"just some notes, not an image\n" * 8, status=400, error_type="InvalidImage",
                  message="not a recognised image format"),
        ImageCase("truncated JPEG", jpeg[: len(jpeg) // 2], "image/jpeg", 400, "InvalidImage",
                  "cannot decode image"),
        ImageCase("truncated PNG", png_bytes[: len(png_bytes) // 2], "image/png", 400, "InvalidImage",
                  "cannot decode image"),
        ImageCase(f"decompression bomb (40000x40000 PNG, {len(bomb) // 1024} KB)", bomb, "image/png", 413,
                  "ImageTooLarge", "image too large: 1600.0 MP, over the limit of 64 megapixels"),
        ImageCase(f"over the pixel limit (9000x8000 = 72 MP, {len(over_limit) // 1024} KB)", over_limit,
                  "image/png", 413, "ImageTooLarge", "9000x8000 = 72.0 MP, over the limit of 64 megapixels"),
        # TorchServe's frontend refuses it before any handler runs, with an empty body
        ImageCase("body over max_request_size (32 MiB)", b"\xff\xd8" + b"\0" * MAX_REQUEST_SIZE, "image/jpeg",
                  413, None, None),
        # broken requests
        ImageCase("malformed JSON", b'{"image": "iVBORw0KGgo', "application/json", 400, "InvalidRequest",
                  "malformed JSON body", on_disk=False),
        ImageCase("malformed base64 in JSON", json.dumps({"image": "not*base64!"}).encode(), "application/json",
                  400, "InvalidRequest", "not valid base64", on_disk=False),
        ImageCase("JSON without an image field", json.dumps({"picture": 1}).encode(), "application/json", 400,
                  "InvalidRequest", "no image in request (fields: picture)", on_disk=False),
        ImageCase("base64 JSON (valid)", json.dumps({"image": base64.b64encode(jpeg).decode()}).encode(),
                  "application/json", reference=decoded_png(jpeg), on_disk=False),
    )  # fmt: skip


@dataclass(frozen=True)
class VideoCase:
    name: str
    make: object  # (folder) -> path of the video file
    message: str  # a fragment of the one-line error


def _truncated(folder: Path) -> Path:
    data = write_video(folder / "full.mp4", constant_rate(60, Fraction(30))).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return folder / "truncated.mp4"


def _text(folder: Path) -> Path:
    (folder / "notes.mp4").write_text("just some notes, renamed\n" * 40)
    return folder / "notes.mp4"


def _empty(folder: Path) -> Path:
    import av

    with av.open(str(folder / "empty.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return folder / "empty.mp4"


def _huge(folder: Path) -> Path:
    """One black 8640x8640 H.264 frame, made as YUV (encoding a 74.6 MP picture from RGB took 3.5 s)."""
    import av

    with av.open(str(folder / "huge.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = 8640, 8640, "yuv420p"
        frame = av.VideoFrame(8640, 8640, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return folder / "huge.mp4"


def _unknown_codec(folder: Path) -> Path:
    data = write_video(folder / "h264.mp4", constant_rate(10, Fraction(30))).read_bytes()
    (folder / "unknown_codec.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))  # a codec FFmpeg has never heard of
    return folder / "unknown_codec.mp4"


VIDEO_CASES = (
    VideoCase("truncated mp4 (first third)", _truncated, "not a readable video"),
    VideoCase("text file named .mp4", _text, "not a readable video"),
    VideoCase("audio-only mp4", lambda folder: write_audio_only(folder / "audio.mp4"), "no video stream (only audio)"),
    VideoCase("zero-duration mp4 (no frames)", _empty, "no video stream (no streams at all"),
    VideoCase("8640x8640 stream", _huge, "8640x8640 frames (74.6 MP) are over the limit of 64 megapixels"),
    VideoCase("undecodable codec", _unknown_codec, "video codec is unknown to this FFmpeg build"),
)


def as_torchserve_item(case: ImageCase) -> tuple[dict, dict]:
    """(request item, content types) as TorchServe's Python worker hands them to the handler.

    Its frontend puts a raw body in the "body" field; a JSON body that parses arrives parsed, one
    that does not arrives as bytes (ts/protocol/otf_message_handler.py).
    """
    value: object = case.payload
    if case.content_type == "application/json":
        with contextlib.suppress(ValueError):
            value = json.loads(case.payload)
    elif case.content_type.startswith("text"):
        with contextlib.suppress(UnicodeDecodeError):
            value = case.payload.decode()
    return {"body": value}, {"body": case.content_type}

"""Real photos with faces for the face-crop tests: scikit-image's wheel carries them (no network)."""

from __future__ import annotations

import io
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import numpy as np
from PIL import Image

# Where MTCNN finds the faces in scikit-image's photos ([x1, y1, x2, y2], checked by eye once).
ASTRONAUT_FACE = (181, 62, 268, 172)
CAMERA_FACE = (199, 119, 254, 192)


def photo(name: str) -> Image.Image:
    """astronaut (a face), camera (a face), coffee (no face): 512x512 and 600x400 RGB."""
    return Image.open(resources.files("skimage") / "data" / f"{name}.png").convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pasted(size: tuple[int, int], *placements: tuple[Image.Image, tuple[int, int]]) -> Image.Image:
    """A plain background of ``size`` with each image pasted at its top-left corner."""
    canvas = Image.new("RGB", size, (96, 120, 72))
    for image, corner in placements:
        canvas.paste(image, corner)
    return canvas


def shifted(box: tuple[float, ...], corner: tuple[int, int], scale: float = 1.0) -> tuple[float, ...]:
    x, y = corner
    return (box[0] * scale + x, box[1] * scale + y, box[2] * scale + x, box[3] * scale + y)


def write_frames(path: Path, frames: list[Image.Image], rate: Fraction) -> Path:
    """An H.264 .mp4 showing ``frames`` one after another at ``rate`` frames per second."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def face_video(path: Path) -> tuple[Path, list[bool]]:
    """6 s at 5 fps, 960x540: 2 s of background, the astronaut panning across for 2 s, 2 s of background
    again. Returns the video and, per 2 fps sample, whether a face is on screen."""
    face = photo("astronaut").resize((300, 300))
    frames = [pasted((960, 540)) for _ in range(10)]
    frames += [pasted((960, 540), (face, (60 + 50 * i, 120))) for i in range(10)]
    frames += [pasted((960, 540)) for _ in range(10)]
    return write_frames(path, frames, Fraction(5)), [2.0 <= t / 2 < 4.0 for t in range(12)]

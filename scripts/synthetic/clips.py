"""The one H.264 writer of generated clips: the demo's scene clips, the benchmark's panning clip, the
two-people clip and the tests' face clips all go through ``write_h264``."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_h264(
    path: Path,
    frames: Iterable[np.ndarray | Image.Image],
    fps: int | Fraction,
    options: dict[str, str] | None = None,
) -> Path:
    """An .mp4 (H.264, yuv420p) showing ``frames`` (RGB, all one size) one after another at ``fps``."""
    with av.open(str(path), "w") as container:
        stream = None
        for image in frames:
            pixels = np.asarray(image, dtype=np.uint8)
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = dict(options or {})
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode(None):
            container.mux(packet)
    return Path(path)

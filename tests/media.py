"""Test media: videos whose every frame carries its own index in its pixels."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

BITS = 10
BAND = 16  # pixels per bit band: wide enough to survive lossy compression


def indexed_frame(index: int, width: int = BITS * BAND, height: int = 48) -> np.ndarray:
    """An RGB frame with ``index`` written as BITS black/white vertical bands (MSB first)."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            array[:, bit * BAND : (bit + 1) * BAND] = 255
    return array


def read_index(image: Image.Image) -> int:
    """Recover the index written by ``indexed_frame`` (the image must be upright)."""
    array = np.asarray(image.convert("L"), dtype=np.float32)
    band = array.shape[1] / BITS
    value = 0
    for bit in range(BITS):
        column = array[:, int(bit * band + band / 4) : int((bit + 1) * band - band / 4)]
        value = value * 2 + int(column.mean() > 127)
    return value


def write_video(
    path: Path,
    timestamps: Sequence[Fraction],
    *,
    rate: Fraction = Fraction(30),
    time_base: Fraction | None = None,
    size: tuple[int, int] = (BITS * BAND, 48),
    rotation: int = 0,
    audio_first: bool = False,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Frame i is shown from timestamps[i] (seconds); its pixels encode i."""
    time_base = time_base or 1 / rate
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=48000) if audio_first else None
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        if audio is not None:
            silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            silence.sample_rate = 48000
            silence.pts = 0
            for packet in audio.encode(silence):
                container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
        for index, stamp in enumerate(timestamps):
            array = indexed_frame(index, *size)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = int(Fraction(stamp) / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def constant_rate(count: int, rate: Fraction) -> list[Fraction]:
    return [Fraction(i) / rate for i in range(count)]


def write_audio_only(path: Path) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path

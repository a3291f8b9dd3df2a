"""Streaming frame sampling with PyAV at an exact rate, by presentation timestamp.

Target times are 0, 1/fps, 2/fps, ... seconds from the first frame, and each takes the frame
*displayed* at that time: the last frame whose timestamp is <= the target. This holds for
constant and variable frame rates and for streams that do not start at 0. Timestamps are
compared as exact fractions, so 29.97 fps (30000/1001) never drifts. Only a couple of frames are
held at once, so memory stays bounded whatever the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from deepfake_client._config import DEFAULT_FPS
from deepfake_client._exceptions import BadVideoError
from deepfake_contract import MAX_IMAGE_PIXELS

# The largest frame the client decodes is the server's image limit (the wire contract): 8K (33 MP)
# and beyond pass; a stream declaring more is refused before its first frame is decoded.
MAX_FRAME_PIXELS = MAX_IMAGE_PIXELS

_TRANSPOSE_FOR_ROTATION = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: ``time`` is the target time (seconds from the video's first frame)."""

    index: int  # position in the sample sequence: 0, 1, 2, ...
    time: float
    frame_time: float  # when the chosen frame starts being displayed (seconds from the first frame)
    frame_number: int  # the chosen frame's position among the decoded frames
    image: Image.Image


def _upright(frame: av.VideoFrame) -> Image.Image:
    """RGB image as it is meant to be displayed (display-matrix rotation applied)."""
    image = frame.to_image()
    rotation = round(frame.rotation or 0) % 360  # degrees counter-clockwise
    if rotation in _TRANSPOSE_FOR_ROTATION:
        image = image.transpose(_TRANSPOSE_FOR_ROTATION[rotation])
    elif rotation:
        image = image.rotate(rotation, expand=True)
    return image


def _as_fraction(value: float | Fraction | str) -> Fraction:
    rate = Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {value}")
    return rate


def sample_frames(path: str | Path, fps: float | Fraction = DEFAULT_FPS) -> Iterator[SampledFrame]:
    """Yield the frames displayed at 0, 1/fps, 2/fps, ... seconds, in time order."""
    rate = _as_fraction(fps)
    path = Path(path)
    if not path.is_file():
        raise BadVideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise BadVideoError(f"{path}: not a readable video ({_reason(exc)})") from None
    with container:
        if _is_still_image(container):
            raise BadVideoError(f"{path}: this is an image, not a video: use deepfake-detect image")
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        yield from _sample_stream(container, stream, rate, path)


def _is_still_image(container: av.container.InputContainer) -> bool:
    """FFmpeg opens a PNG, JPEG, WebP, BMP or TIFF as a one-frame "video" through an image demuxer."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def native_frame_rate(path: str | Path) -> Fraction | None:
    """The video stream's own frame rate, when the file says: its nominal rate (exact for a constant rate),
    or its average where the nominal one is far from it (a variable-rate stream's time base)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is None:
                return None
            nominal, average = stream.guessed_rate, stream.average_rate
    except (av.FFmpegError, OSError, ValueError, ZeroDivisionError):
        return None
    if nominal and nominal > 0 and (not average or average / 2 <= nominal <= average * 2):
        return Fraction(nominal)
    return Fraction(average) if average and average > 0 else None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first video stream, if this FFmpeg can decode it and its frames are of a sane size."""
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams)
        found = f"only {kinds}" if kinds else "no streams at all: an empty or zero-duration file"
        raise BadVideoError(f"{path}: no video stream ({found})")
    stream = container.streams.video[0]  # not streams[0]: audio often comes first
    if stream.codec_context is None:
        raise BadVideoError(f"{path}: its video codec is unknown to this FFmpeg build, so it cannot be decoded")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_FRAME_PIXELS:
        raise BadVideoError(
            f"{path}: {width}x{height} frames ({width * height / 1e6:.1f} MP) are over the limit of "
            f"{MAX_FRAME_PIXELS / 1e6:.0f} megapixels"
        )
    return stream


def _sample_stream(container: av.container.InputContainer, stream: av.VideoStream, rate: Fraction, path: Path):
    origin: Fraction | None = None
    previous: tuple[av.VideoFrame, Fraction, int] | None = None  # (frame, time from origin, number)
    last_step = Fraction(1, 30)
    next_target = 0  # index of the next target time: next_target / rate
    decoded = 0
    try:
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            stamp = frame.pts * Fraction(frame.time_base)
            if origin is None:
                origin = stamp
            current = stamp - origin
            if previous is not None:
                if current <= previous[1]:  # out-of-order or duplicate timestamp: keep the earlier frame
                    continue
                last_step = current - previous[1]
                while Fraction(next_target) / rate < current:
                    yield _sample(next_target, rate, previous)
                    next_target += 1
            previous = (frame, current, decoded)
            decoded += 1
    except av.FFmpegError as exc:
        if previous is None:
            raise BadVideoError(f"{path}: cannot decode video ({_reason(exc)})") from None
        # A truncated tail: keep what decoded, sample up to the last good frame only.
        last_step = Fraction(0)
    if previous is None:
        raise BadVideoError(f"{path}: the video stream has no decodable frames")
    frame, start, _ = previous
    duration = Fraction(frame.duration) * Fraction(frame.time_base) if frame.duration and frame.time_base else last_step
    end = start + duration
    while next_target == 0 or Fraction(next_target) / rate < end:  # the last frame shows until `end`
        yield _sample(next_target, rate, previous)
        next_target += 1


def _sample(target: int, rate: Fraction, chosen: tuple[av.VideoFrame, Fraction, int]) -> SampledFrame:
    frame, start, number = chosen
    return SampledFrame(target, float(target / rate), float(start), number, _upright(frame))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def probe_duration(path: str | Path) -> float | None:
    """Container duration in seconds, when the file says (for progress bars)."""
    try:
        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / av.time_base
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None
    return None

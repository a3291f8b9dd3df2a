"""Streaming frame sampling with PyAV at an exact rate, by presentation timestamp.

Target times are 0, 1/fps, 2/fps, ... seconds from the first frame, and each takes the frame
*displayed* at that time: the last frame whose timestamp is <= the target. This holds for
constant and variable frame rates and for streams that do not start at 0. Timestamps are
compared as exact fractions, so 29.97 fps (30000/1001) never drifts. Only a couple of frames are
held at once, so memory stays bounded whatever the video's length.

In an MP4 or MOV, only the frames the samples need are decoded in full: the packets' timestamps are read
first (no decoding), and a non-reference frame no sample shows (most B-frames of H.264 and HEVC) is
skipped by the decoder, which nothing else refers to. The samples are the same frames, pixel for pixel,
as decoding everything gives; where the plan does not hold (missing or repeated timestamps, a frame that
does not come, a decoding error), the video is decoded again, every frame, from where the samples stopped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import numpy as np
from PIL import Image

from deepfake_client._config import DEFAULT_FPS
from deepfake_client._exceptions import BadVideoError
from deepfake_contract import MAX_IMAGE_PIXELS

# The largest frame the client decodes is the server's image limit (the wire contract): 8K (33 MP)
# and beyond pass; a stream declaring more is refused before its first frame is decoded.
MAX_FRAME_PIXELS = MAX_IMAGE_PIXELS

# A plan holds every frame's timestamp: past this many frames (9 hours at 30 fps) sampling decodes every
# frame instead, in memory that does not grow with the video's length.
MAX_PLANNED_FRAMES = 1_000_000

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
    frame: av.VideoFrame = field(repr=False, compare=False)  # as decoded

    @cached_property
    def image(self) -> Image.Image:
        """The frame as shown, in RGB (rotation applied): converted on first use, in the thread that needs it
        (the client converts and encodes beside the decoding)."""
        return _upright(self.frame)


def _upright(frame: av.VideoFrame) -> Image.Image:
    """RGB image as it is meant to be displayed (display-matrix rotation applied), read-only.

    The same pixels as PyAV's ``to_image`` (tested), without its copies: ``to_image`` copies the
    converted frame row by row, then twice more (8 ms for a 720p frame here); this image is the
    converted frame's own buffer (under 1 ms)."""
    pixels = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))  # copied only where rows are padded
    image = Image.frombuffer("RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1)
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
    with _open(path) as container:
        plan = _plan(container, _video_stream(container, path), rate)
    yielded = 0
    if plan is not None:
        with _open(path) as container:
            stream = _decoding(_video_stream(container, path))
            try:
                for sample in _sample_stream(_planned_frames(container, stream, plan), rate, path):
                    yield sample
                    yielded += 1
                return
            except _PlanFailed:
                pass  # decode every frame instead, from where the samples stopped
    with _open(path) as container:
        stream = _decoding(_video_stream(container, path))
        for sample in _sample_stream(_every_frame(container, stream), rate, path):
            if sample.index >= yielded:
                yield sample


def _decoding(stream: av.VideoStream) -> av.VideoStream:
    stream.thread_type = "AUTO"  # frame and slice threads: decoding is the client's main cost
    return stream


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise BadVideoError(f"{path}: not a readable video ({_reason(exc)})") from None
    if _is_still_image(container):
        container.close()
        raise BadVideoError(f"{path}: this is an image, not a video: use deepfake-detect image")
    return container


class _PlanFailed(Exception):
    """The packets' timestamps did not describe the decoded frames: decode every frame instead."""


@dataclass(frozen=True)
class _Plan:
    """Every frame's timestamp (in the stream's time base, ascending) and those the samples show."""

    stamps: list[int]
    needed: list[int]  # ascending

    def number(self, pts: int) -> int | None:
        """The frame's position among all frames, or None for a timestamp no packet has."""
        position = bisect_left(self.stamps, pts)
        return position if position < len(self.stamps) and self.stamps[position] == pts else None


def _plan(container: av.container.InputContainer, stream: av.VideoStream, rate: Fraction) -> _Plan | None:
    """Which frames the samples show, from the packets alone (a demux, no decoding): for target k/rate
    the last frame starting at or before it, and the last two frames (the end of the video). None
    where the packets cannot say: a timestamp missing or repeated, a packet the demuxer marks corrupt,
    or a container other than MP4/MOV (whose header indexes every sample, so that none can be lost
    unnoticed: a stream missing packets decodes differently once frames are skipped)."""
    if stream.time_base is None or "mp4" not in container.format.name.split(","):
        return None
    try:
        stamps: list[int] = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            if packet.pts is None or packet.is_corrupt or len(stamps) >= MAX_PLANNED_FRAMES:
                return None
            stamps.append(packet.pts)
    except av.FFmpegError:
        return None  # a damaged file: decoding everything finds where it breaks
    stamps.sort()
    if not stamps or len(set(stamps)) < len(stamps):
        return None
    # frame i shows from (stamps[i] - origin) * time_base s until the next one starts; target k is at
    # k / rate s. Frame i is needed when a target falls in its span: with step = time_base * rate, some
    # integer k in [starts[i], starts[i + 1]), starts[i] = (stamps[i] - origin) * step (integers only).
    step = Fraction(stream.time_base) * rate
    scaled = [(stamp - stamps[0]) * step.numerator for stamp in stamps]  # starts[i] * step.denominator
    first_target = [-(-start // step.denominator) * step.denominator for start in scaled[:-1]]  # ceil, scaled
    spans = zip(stamps[:-1], first_target, scaled[1:], strict=True)
    needed = sorted({*(stamp for stamp, target, end in spans if target < end), *stamps[-2:]})
    return _Plan(stamps, needed)


def _planned_frames(
    container: av.container.InputContainer, stream: av.VideoStream, plan: _Plan
) -> Iterator[tuple[av.VideoFrame, int]]:
    """(frame, its position among all frames), decoding in full only the packets of frames the plan
    needs: the decoder skips the other packets when nothing refers to them (non-reference frames).
    Raises _PlanFailed before handing on a frame that shows the plan wrong."""
    context = stream.codec_context
    wanted = set(plan.needed)
    pending = iter(plan.needed)
    next_needed = next(pending, None)
    last = -1
    try:
        for packet in container.demux(stream):
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            for frame in packet.decode():
                pts = frame.pts
                number = plan.number(pts) if pts is not None else None
                if pts is None or number is None or frame.time_base != stream.time_base or pts <= last:
                    raise _PlanFailed  # not a frame the packets announced, or out of order
                if next_needed is not None and pts > next_needed:
                    raise _PlanFailed  # a frame the samples show did not come
                if pts == next_needed:
                    next_needed = next(pending, None)
                last = pts
                yield frame, number
    except av.FFmpegError:
        raise _PlanFailed from None
    if next_needed is not None:
        raise _PlanFailed


def _every_frame(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[tuple[av.VideoFrame, int]]:
    """Every decoded frame in display order, with its position: a frame without a timestamp, or not
    later than the one before (out of order, a duplicate), is left out and not counted."""
    last: Fraction | None = None
    number = 0
    for frame in container.decode(stream):
        if frame.pts is None or frame.time_base is None:
            continue
        stamp = frame.pts * Fraction(frame.time_base)
        if last is not None and stamp <= last:
            continue
        last = stamp
        yield frame, number
        number += 1


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


def _sample_stream(frames: Iterator[tuple[av.VideoFrame, int]], rate: Fraction, path: Path) -> Iterator[SampledFrame]:
    """The samples, from frames in display order with their positions among all frames."""
    origin: Fraction | None = None
    previous: tuple[av.VideoFrame, Fraction, int] | None = None  # (frame, time from origin, number)
    last_step = Fraction(1, 30)
    next_target = 0  # index of the next target time: next_target / rate
    try:
        for frame, number in frames:
            stamp = Fraction(frame.pts or 0) * Fraction(frame.time_base or 1)  # both present: checked upstream
            if origin is None:
                origin = stamp
            current = stamp - origin
            if previous is not None:
                last_step = current - previous[1]
                while Fraction(next_target) / rate < current:
                    yield _sample(next_target, rate, previous)
                    next_target += 1
            previous = (frame, current, number)
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
    return SampledFrame(target, float(target / rate), float(start), number, frame)


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

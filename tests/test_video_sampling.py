"""Frame sampling at exact rates, against videos whose frames carry their own index."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from deepfake_client import BadVideoError, sample_frames
from scripts.synthetic.clips import write_h264
from tests.inputs import VIDEO_CASES, VideoCase
from tests.media import constant_rate, read_index, write_video

TIER = "unit"


def taken(path: Path, fps: float = 2.0) -> list[tuple[float, int, int]]:
    """(target time, frame number, index read from the pixels) for each sample."""
    return [(s.time, s.frame_number, read_index(s.image)) for s in sample_frames(path, fps)]


def by_definition(path: Path, fps: Fraction) -> list[int]:
    """Brute force: for t = k/fps < end, the last frame whose start <= t (end = last start + its duration)."""
    with av.open(str(path)) as container:
        frames = [(f.pts * f.time_base, f.duration * f.time_base) for f in container.decode(video=0)]
    origin = frames[0][0]
    starts = [s - origin for s, _ in frames]
    end = starts[-1] + frames[-1][1]
    expected, k = [], 0
    while k == 0 or Fraction(k) / fps < end:
        expected.append(max(i for i, s in enumerate(starts) if s <= Fraction(k) / fps))
        k += 1
    return expected


def test_30_fps(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", constant_rate(45, Fraction(30)))  # 1.5 s
    assert taken(path) == [(0.0, 0, 0), (0.5, 15, 15), (1.0, 30, 30)]


def test_29_97_fps_does_not_drift(tmp_path: Path):
    rate = Fraction(30000, 1001)
    path = write_video(tmp_path / "a.mp4", constant_rate(60, rate), rate=rate)  # 2.002 s
    # frame i starts at i * 1001/30000 s: t=0.5 -> i=14 (14.985), t=2.0 -> i=59 (59.94)
    assert taken(path) == [(0.0, 0, 0), (0.5, 14, 14), (1.0, 29, 29), (1.5, 44, 44), (2.0, 59, 59)]


def test_25_fps(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", constant_rate(50, Fraction(25)), rate=Fraction(25))  # 2.0 s
    assert taken(path) == [(0.0, 0, 0), (0.5, 12, 12), (1.0, 25, 25), (1.5, 37, 37)]


def test_other_rates_and_long_videos_match_the_definition(tmp_path: Path):
    rate = Fraction(24000, 1001)
    path = write_video(tmp_path / "a.mp4", constant_rate(300, rate), rate=rate)  # 12.5 s
    for fps in (Fraction(2), Fraction(1, 3), Fraction(5)):
        assert [index for _, _, index in taken(path, fps)] == by_definition(path, fps)
    assert len(taken(path, 2.0)) == 26  # 0, 0.5, ..., 12.5 (12.5 < 12.5125)


def test_variable_frame_rate(tmp_path: Path):
    stamps = [Fraction(ms, 1000) for ms in (0, 100, 450, 500, 1200, 1250, 2050, 2100)]
    path = write_video(tmp_path / "vfr.mp4", stamps, time_base=Fraction(1, 1000))
    samples = taken(path)
    # t=0 -> frame 0; t=0.5 -> frame 3 (shown from exactly 0.5); t=1.0 -> still 3; t=1.5 -> 5; t=2.0 -> 5
    assert samples[:5] == [(0.0, 0, 0), (0.5, 3, 3), (1.0, 3, 3), (1.5, 5, 5), (2.0, 5, 5)]
    assert [index for _, _, index in samples] == by_definition(path, Fraction(2))
    assert all(index == 7 for _, _, index in samples[5:])  # past 2.1 s the last frame is on screen


def test_non_zero_start_time(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", [Fraction(3, 2) + t for t in constant_rate(30, Fraction(30))])
    with av.open(str(path)) as container:
        assert container.streams.video[0].start_time > 0  # the stream really starts at 1.5 s
    assert taken(path) == [(0.0, 0, 0), (0.5, 15, 15)]


def test_one_frame_video(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", [Fraction(0)])
    assert taken(path) == [(0.0, 0, 0)]


def test_0_4_second_video_gives_one_frame(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", constant_rate(12, Fraction(30)))
    assert taken(path) == [(0.0, 0, 0)]


def test_audio_stream_first(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", constant_rate(30, Fraction(30)), audio_first=True)
    with av.open(str(path)) as container:
        assert container.streams[0].type == "audio"
    assert taken(path) == [(0.0, 0, 0), (0.5, 15, 15)]


def test_rotation_metadata_is_applied(tmp_path: Path):
    path = write_video(tmp_path / "a.mp4", constant_rate(15, Fraction(30)), rotation=90)
    [sample] = list(sample_frames(path, 2.0))
    assert sample.image.size == (48, 160)  # 160x48 stored, shown upright as 48x160
    # rotated 90 degrees counter-clockwise: undo it to read the bands
    assert read_index(sample.image.transpose(Image.Transpose.ROTATE_270)) == 0
    encoded = write_video(tmp_path / "b.mp4", [Fraction(0)], rotation=90)
    first = next(iter(sample_frames(encoded)))
    column = np.asarray(first.image.convert("L"))[:, 24]
    assert column[:16].mean() < 60  # index 0: every band dark, whatever the orientation


def test_odd_frame_size(tmp_path: Path):
    path = write_video(
        tmp_path / "a.mkv",
        constant_rate(20, Fraction(20)),
        size=(161, 47),
        codec="mjpeg",
        pix_fmt="yuvj444p",
        rate=Fraction(20),
    )
    samples = list(sample_frames(path, 2.0))
    assert [s.frame_number for s in samples] == [0, 10]
    assert samples[0].image.size == (161, 47)


@pytest.mark.parametrize(
    ("suffix", "codec", "pix_fmt", "size"),
    [
        ("mp4", "libx264", "yuv420p", (160, 48)),
        ("mkv", "mjpeg", "yuvj444p", (161, 47)),  # odd width: rows padded in the decoder's buffers
        ("mkv", "libx264", "yuv444p", (98, 66)),
        ("mkv", "ffv1", "bgr0", (131, 33)),
    ],
)
def test_frames_have_pyav_to_image_pixels(tmp_path: Path, suffix, codec, pix_fmt, size):
    """The client converts frames through to_ndarray (faster): the very pixels of PyAV's to_image, on
    coloured noise (every channel different)."""
    path = tmp_path / f"a.{suffix}"
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=20)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        for _ in range(20):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    samples = list(sample_frames(path, 2.0))
    assert len(samples) == 2
    for sample in samples:
        assert sample.frame.format.name == pix_fmt
        expected = np.asarray(sample.frame.to_image())
        assert np.array_equal(np.asarray(sample.image), expected)
        assert sample.image.mode == "RGB" and sample.image.size == size


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("this is not a video\n" * 50), "not a readable video"),
        (lambda p: p.write_bytes(b""), "not a readable video"),
    ],
    ids=["text-renamed", "empty"],
)
def test_bad_files_raise_bad_video_error(tmp_path: Path, make, message):
    path = tmp_path / "clip.mp4"
    make(path)
    with pytest.raises(BadVideoError, match=message):
        list(sample_frames(path))


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: c.name)
def test_the_video_battery(tmp_path: Path, case: VideoCase):
    path = case.make(tmp_path)
    with pytest.raises(BadVideoError) as info:
        list(sample_frames(path))
    assert str(info.value).startswith(str(path)) and case.message in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(BadVideoError, match="no such file"):
        list(sample_frames(tmp_path / "absent.mp4"))


# Sampling decodes in full only the frames the samples show (a non-reference frame no sample needs is
# skipped by the decoder); these check that the samples stay exactly what decoding every frame gives.


def every_frame_sampled(path: Path, fps: Fraction) -> list[tuple[int, int, bytes]]:
    """Brute force over every frame that decodes in display order (up to a decoding error, as a truncated
    file ends): (sample index, frame number, pixels) for t = k/fps up to the last frame's end (its start,
    after an error)."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as the client decodes: threads conceal damage differently
        try:
            for frame in container.decode(stream):
                start = frame.pts * frame.time_base
                if not frames or start > frames[-1][0]:  # a frame out of order or repeated is left out
                    frames.append((start, frame.duration * frame.time_base, frame.to_image()))
        except av.FFmpegError:
            frames[-1] = (*frames[-1][:1], Fraction(0), frames[-1][2])
    starts = [start - frames[0][0] for start, _, _ in frames]
    end, expected, k = starts[-1] + frames[-1][1], [], 0
    while k == 0 or Fraction(k) / fps < end:
        number = max(i for i, start in enumerate(starts) if start <= Fraction(k) / fps)
        expected.append((k, number, frames[number][2].tobytes()))
        k += 1
    return expected


def sampled(path: Path, fps: Fraction) -> list[tuple[int, int, bytes]]:
    return [(s.index, s.frame_number, s.image.tobytes()) for s in sample_frames(path, fps)]


def panning_clip(path: Path, count: int = 150) -> Path:
    """Random texture moving every frame, H.264 with B-frames and a keyframe every 50 frames: a frame
    decoded from a wrong reference would show it."""
    texture = (np.random.default_rng(3).random((12, 24, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    frames = (np.roll(texture, 3 * i, axis=1) for i in range(count))
    return write_h264(path, frames, 30, {"preset": "medium", "g": "50"})


def remux(source: Path, target: Path, keep=lambda i, packet: True, **options: str) -> Path:
    """The video stream's packets (same timestamps) copied into ``target``'s container, those
    ``keep(i, packet)`` accepts: damage that only a decoder notices."""
    with av.open(str(source)) as reader, av.open(str(target), "w", options=options) as writer:
        video = reader.streams.video[0]
        out = writer.add_stream_from_template(video)
        for i, packet in enumerate(p for p in reader.demux(video) if p.size):
            if keep(i, packet):
                packet.stream = out
                writer.mux(packet)
    return target


def test_samples_are_the_frames_decoding_everything_gives(tmp_path: Path):
    path = panning_clip(tmp_path / "pan.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        references = sum(1 for _ in container.decode(stream))
    assert references < 150 * 0.75  # the clip has non-reference frames to skip
    for fps in (Fraction(2), Fraction(1, 3), Fraction(7), Fraction(30)):
        assert sampled(path, fps) == every_frame_sampled(path, fps), fps
    assert sampled(path, Fraction(2)) == sampled(remux(path, tmp_path / "pan.mkv"), Fraction(2))  # Matroska too


def test_damaged_streams_sample_as_decoding_everything_does(tmp_path: Path):
    source = panning_clip(tmp_path / "pan.mp4")
    with av.open(str(source)) as container:
        keyframes = [i for i, p in enumerate(container.demux(video=0)) if p.size and p.is_keyframe]
    assert len(keyframes) >= 2, keyframes
    damaged = {
        # cut after its first keyframe without re-encoding: the frames before the next one do not decode
        "late start": remux(source, tmp_path / "late.mp4", lambda i, _: i > 2),
        "lost keyframe": remux(source, tmp_path / "hole.mkv", lambda i, _: i != keyframes[1]),
    }
    whole = remux(source, tmp_path / "fast.mp4", movflags="faststart").read_bytes()
    damaged["truncated"] = tmp_path / "truncated.mp4"
    damaged["truncated"].write_bytes(whole[: len(whole) * 7 // 10])  # the index whole, the data cut
    for name, path in damaged.items():
        assert sampled(path, Fraction(2)) == every_frame_sampled(path, Fraction(2)), name

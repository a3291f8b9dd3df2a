"""Face tracks: the faces of a face-crop analysis linked across sampled frames into people.

A face-crop archive answers each frame with its faces (box, detector score, prediction). To say
"person 2 is fake from 0:05 to 0:10" the faces of successive frames are linked, frame by frame:

* motion: a track's next box is expected where its last one was, moved by its last velocity; a face
  further than ``max_shift`` box sizes from there, or whose size changed by more than
  ``max_size_ratio``, is not that track's;
* appearance: a 16x16 colour thumbnail of each face (taken by the client from the frame it sent),
  compared by correlation, keeps two faces that pass each other apart, and links a face that left
  the frame and came back to its earlier track (``reentry_similarity``) rather than starting a new one;
* gaps: a track survives ``max_gap_frames`` sampled frames without its face (a missed detection, a
  turned head) before it ends.

Pairs are linked cheapest first (motion plus appearance cost): with the handful of faces a frame
holds, greedy assignment is as good as an optimal one and needs no solver. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from deepfake_client._aggregate import AggregationConfig, find_segments
from deepfake_client._results import FaceTrack, FrameResult, TrackPoint
from deepfake_contract import Prediction

SIGNATURE_SIDE = 16  # pixels of the thumbnail a face is compared by


@dataclass(frozen=True)
class TrackConfig:
    max_gap_frames: int = 3  # sampled frames a track may miss its face (1.5 s at 2 fps) before it ends
    max_shift: float = 1.5  # how far (in box sizes) a face may be from where its track was expected
    max_size_ratio: float = 1.6  # how much a face's size may change from one of its frames to the next
    min_similarity: float = 0.3  # appearance correlation below which a nearby face is someone else
    reentry_similarity: float = 0.75  # a face this similar to an earlier track's continues it, wherever it is


def face_signature(image: Image.Image, box: Sequence[float]) -> np.ndarray:
    """A face's appearance: its box as a 16x16 RGB thumbnail, zero-mean and unit-norm (correlation by dot)."""
    left, top, right, bottom = (float(v) for v in box)
    crop = image.crop(
        (round(left), round(top), max(round(right), round(left) + 1), max(round(bottom), round(top) + 1))
    ).convert("RGB")  # the crop alone, not the frame, converted
    values = np.asarray(
        crop.resize((SIGNATURE_SIDE, SIGNATURE_SIDE), Image.Resampling.BILINEAR), dtype=np.float32
    ).ravel()
    values = values - values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 1e-6 else values


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _size(box: Sequence[float]) -> float:
    return max(1.0, math.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))


@dataclass
class _Open:
    """A track being built."""

    number: int
    points: list[TrackPoint] = field(default_factory=list)
    signature: np.ndarray | None = None
    velocity: tuple[float, float] = (0.0, 0.0)  # centre pixels per sampled frame

    @property
    def last(self) -> TrackPoint:
        return self.points[-1]

    def expected_centre(self, index: int) -> tuple[float, float]:
        gap = index - self.last.index
        x, y = _centre(self.last.box)
        return x + self.velocity[0] * gap, y + self.velocity[1] * gap

    def add(self, point: TrackPoint, signature: np.ndarray | None) -> None:
        if self.points:
            gap = max(1, point.index - self.last.index)
            (x0, y0), (x1, y1) = _centre(self.last.box), _centre(point.box)
            self.velocity = ((x1 - x0) / gap, (y1 - y0) / gap)
        self.points.append(point)
        if signature is not None:  # a running mean of the face's look
            mixed = signature if self.signature is None else 0.7 * self.signature + 0.3 * signature
            norm = float(np.linalg.norm(mixed))
            self.signature = mixed / norm if norm > 1e-6 else mixed

    def similarity(self, signature: np.ndarray | None) -> float | None:
        if signature is None or self.signature is None:
            return None
        return float(np.dot(self.signature, signature))


DEFAULT_TRACKING = TrackConfig()


def _answer(point: TrackPoint | None) -> Prediction | None:
    return None if point is None else point.prediction


def link_tracks(
    frames: Sequence[FrameResult],
    frame_interval: float,
    config: TrackConfig = DEFAULT_TRACKING,
    aggregation: AggregationConfig | None = None,
) -> list[FaceTrack]:
    """The people of a face-crop analysis, numbered by first appearance (empty without faces)."""
    aggregation = aggregation or AggregationConfig()
    tracks: list[_Open] = []
    for frame in frames:
        faces = frame.prediction.faces if frame.prediction is not None and frame.prediction.faces else []
        signatures = list(frame.face_signatures or []) or [None] * len(faces)
        live = [t for t in tracks if frame.index - t.last.index <= config.max_gap_frames + 1]
        pairs = []
        for track in live:
            expected = track.expected_centre(frame.index)
            size = _size(track.last.box)
            for j, face in enumerate(faces):
                x, y = _centre(face.box)
                shift = math.hypot(x - expected[0], y - expected[1]) / size
                ratio = _size(face.box) / size
                similarity = track.similarity(signatures[j])
                if shift > config.max_shift or not 1 / config.max_size_ratio <= ratio <= config.max_size_ratio:
                    continue
                if similarity is not None and similarity < config.min_similarity:
                    continue
                pairs.append((shift + 2 * (1 - (similarity if similarity is not None else 0.75)), track.number, j))
        taken_tracks: set[int] = set()
        assigned: dict[int, _Open] = {}
        by_number = {t.number: t for t in tracks}
        for _cost, number, j in sorted(pairs):
            if number not in taken_tracks and j not in assigned:
                taken_tracks.add(number)
                assigned[j] = by_number[number]
        for j, face in enumerate(faces):
            chosen = assigned.get(j)
            if chosen is None:  # someone coming back into view, or someone new
                returning = [
                    (similarity, t)
                    for t in tracks
                    if t.number not in taken_tracks
                    and (similarity := t.similarity(signatures[j])) is not None
                    and similarity >= config.reentry_similarity
                ]
                if returning:
                    chosen = max(returning, key=lambda pair: pair[0])[1]
                else:
                    chosen = _Open(len(tracks) + 1)
                    tracks.append(chosen)
                taken_tracks.add(chosen.number)
            chosen.add(TrackPoint(frame.index, frame.time, list(face.box), face.prediction), signatures[j])
    return [_finish(track, frame_interval, config, aggregation) for track in tracks]


def _finish(track: _Open, frame_interval: float, config: TrackConfig, aggregation: AggregationConfig) -> FaceTrack:
    points = track.points
    probabilities = [p.prediction.fake_probability for p in points]
    peak = max(range(len(points)), key=probabilities.__getitem__)
    # the track's own series: its face's answer in each sampled frame it spans, nothing where it was not seen
    seen = {p.index: p for p in points}
    first = points[0]
    series = [
        FrameResult(index, first.time + (index - first.index) * frame_interval, 0.0, 0, _answer(seen.get(index)))
        for index in range(first.index, points[-1].index + 1)
    ]
    segments = find_segments(
        series, frame_interval, aggregation.segment_threshold, aggregation.segment_low, aggregation.min_segment_seconds
    )
    spans: list[list[float]] = []
    previous: int | None = None
    for point in points:  # where the person is in view: runs of frames no further apart than the allowed gap
        if previous is not None and point.index - previous <= config.max_gap_frames + 1:
            spans[-1][1] = point.time + frame_interval
        else:
            spans.append([point.time, point.time + frame_interval])
        previous = point.index
    return FaceTrack(
        number=track.number,
        start=points[0].time,
        end=points[-1].time + frame_interval,
        frames=len(points),
        mean_fake_probability=sum(probabilities) / len(probabilities),
        peak_fake_probability=probabilities[peak],
        peak_time=points[peak].time,
        spans=spans,
        segments=segments,
        points=points,
    )

"""Typed results that serialise to plain JSON (one image's answer, ``Prediction``, is the wire contract's)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from deepfake_contract import Prediction


@dataclass(frozen=True)
class ImageResult:
    """One image of a batch: a prediction, or why that image alone failed."""

    source: str
    prediction: Prediction | None = None
    error: str | None = None
    no_face: bool = False  # a face-crop archive found no face: no verdict, and not an error of the input
    model_notice: str = ""  # what the served model's metadata says every reader must know (e.g. a demo)

    def to_dict(self) -> dict[str, Any]:
        notice = {"model_notice": self.model_notice} if self.model_notice else {}
        if self.prediction is None:
            return {"source": self.source, "error": self.error, "no_face": self.no_face, **notice}
        return {"source": self.source, **self.prediction.to_json(), **notice}


@dataclass(frozen=True)
class FrameResult:
    """One sampled frame: a prediction, or the error that frame alone ran into."""

    index: int
    time: float  # sampling time, seconds from the first frame
    frame_time: float  # when the chosen frame starts being displayed
    frame_number: int  # the chosen frame's position among the decoded frames
    prediction: Prediction | None = None
    error: str | None = None
    no_face: bool = False  # a face-crop archive found no face in this frame: neither real nor fake
    # face-crop archives: each face's look (deepfake_client._tracks.face_signature), to link faces into tracks
    face_signatures: list[Any] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "time": self.time,
            "frame_time": self.frame_time,
            "frame_number": self.frame_number,
        }
        if self.prediction is not None:
            p = self.prediction
            data.update(
                fake_probability=p.fake_probability,
                label=p.label,
                softmax_confidence=p.softmax_confidence,
                adjusted_confidence=p.adjusted_confidence,
                logits=p.logits,
            )
            if p.faces is not None:
                data["faces"] = [face.to_json() for face in p.faces]
        else:
            data.update(fake_probability=None, error=self.error, no_face=self.no_face)
        return data


@dataclass(frozen=True)
class Segment:
    """A contiguous time range whose frames all score above the segment threshold."""

    start: float
    end: float
    peak_time: float
    peak_probability: float
    mean_probability: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrackPoint:
    """One sampled frame of a face track: where the face was and the model's answer for it."""

    index: int  # the sampled frame's index
    time: float
    box: list[float]
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "time": self.time, "box": list(self.box),
                "fake_probability": self.prediction.fake_probability}  # fmt: skip


@dataclass(frozen=True)
class FaceTrack:
    """One person of a face-crop analysis: the same face linked across sampled frames (_tracks.link_tracks)."""

    number: int  # 1, 2, ... in order of first appearance
    start: float
    end: float
    frames: int
    mean_fake_probability: float
    peak_fake_probability: float
    peak_time: float
    spans: list[list[float]]  # [start, end) ranges in view (a person may leave and come back)
    segments: list[Segment]  # this person's sustained manipulated segments
    points: list[TrackPoint]

    @property
    def name(self) -> str:
        return f"person {self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.number,
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "frames": self.frames,
            "mean_fake_probability": self.mean_fake_probability,
            "peak_fake_probability": self.peak_fake_probability,
            "peak_time": self.peak_time,
            "spans": [list(span) for span in self.spans],
            "segments": [s.to_dict() for s in self.segments],
            "points": [p.to_dict() for p in self.points],
        }


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    analyzed: int
    failed: int  # frames the server refused (never counted as real)
    fake_frames: int
    fake_frame_ratio: float
    mean_adjusted_confidence: float
    mean_fake_probability: float
    top_k: int
    top_k_mean: float
    confident_score: float
    verdict: str  # _aggregate.VERDICTS: sees partial manipulation
    no_face_frames: int = 0  # face-crop archives: frames without a face (neither real nor fake, not failed)
    ratio_verdict: str = ""  # the original app's: "likely deepfake" at a fake-frame ratio >= 0.5
    reason: str = ""  # the verdict in words, e.g. "5.0-10.0 s manipulated, peak 1.00"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VideoAnalysis:
    source: str
    fps: float
    frames: list[FrameResult]
    summary: VideoSummary
    segments: list[Segment]
    thresholds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was changed of the request, e.g. an fps capped
    model_notice: str = ""  # what the served model's metadata says every reader must know (e.g. a demo)
    tracks: list[FaceTrack] = field(default_factory=list)  # face-crop archives: the people, linked across frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fps": self.fps,
            "notes": list(self.notes),
            "model_notice": self.model_notice,
            "summary": self.summary.to_dict(),
            "segments": [s.to_dict() for s in self.segments],
            "thresholds": dict(self.thresholds),
            "frames": [f.to_dict() for f in self.frames],
            "tracks": [t.to_dict() for t in self.tracks],
        }


def json_safe(data: Any) -> Any:
    """``data`` with NaN (no frame analysed) as None, which every JSON parser accepts."""
    if isinstance(data, float) and math.isnan(data):
        return None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data

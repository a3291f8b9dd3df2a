"""From per-frame answers to a video verdict (pure functions, no I/O).

The original app summarised a video by its fake-frame ratio and mean (adjusted) confidence and
called it a likely deepfake when at least half the frames were fake. Those numbers are kept and
joined by steadier ones: mean fake probability, the mean of the top-k frames (a short
manipulated segment is not averaged away), the confident-frame strategy of the DFDC winner
(Seferbekov, 2020), and the time ranges that look manipulated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from deepfake_client._results import FaceTrack, FrameResult, Segment, VideoSummary
from deepfake_contract import FAKE_THRESHOLD, reaches

# The video verdict: sees partial manipulation (sustained segments, hysteresis + a minimum duration).
MANIPULATED_THROUGHOUT = "manipulated throughout"
MANIPULATED_SEGMENTS = "manipulated segments found"
NO_MANIPULATION = "no manipulation found"
NOT_ENOUGH_FRAMES = "not enough frames"
VERDICTS = (MANIPULATED_THROUGHOUT, MANIPULATED_SEGMENTS, NO_MANIPULATION, NOT_ENOUGH_FRAMES)
# The original app's verdict by fake-frame ratio, kept as summary.ratio_verdict: a manipulation shorter than
# half the video hides in it.
LIKELY_DEEPFAKE = "likely deepfake"
LIKELY_REAL = "likely real"
NO_VERDICT = "no verdict (no frame could be analysed)"


@dataclass(frozen=True)
class AggregationConfig:
    fake_ratio_threshold: float = 0.5  # the original app: ratio >= 0.5 -> likely deepfake
    segment_threshold: float = 0.9  # a manipulated segment opens at a frame with this fake probability or more
    top_k: int = 5
    confident_threshold: float = 0.8  # DFDC winner: "confident fake" frames score above this
    confident_divisor: float = 2.5  # ... and there must be more than len // 2.5 of them
    confident_min_frames: int = 11  # ... and more than 11 (for 32 sampled frames)
    real_threshold: float = 0.2  # "confident real" frames score below this
    real_min_fraction: float = 0.9  # ... and must be more than 90% of frames
    # Sustained segments (hysteresis): a segment opens at a frame >= segment_threshold, goes on while frames stay
    # >= segment_low, and counts when it lasts >= min_segment_seconds, so one-frame blips do not count. Chosen by
    # measurement on generated partly manipulated and clean videos (scripts/modeling/evaluate.py --tune, README).
    segment_low: float = 0.5
    min_segment_seconds: float = 1.0
    throughout_fraction: float = 0.8  # segments covering this share of the analysed time: manipulated throughout
    min_frames: int = 4  # fewer analysed frames: "not enough frames"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def confident_strategy(probabilities: Sequence[float], config: AggregationConfig = AggregationConfig()) -> float:
    """The DFDC winner's video score: trust confident frames when there are enough of them."""
    if not probabilities:
        return math.nan
    size = len(probabilities)
    fakes = [p for p in probabilities if reaches(p, config.confident_threshold)]
    if len(fakes) > size // config.confident_divisor and len(fakes) > config.confident_min_frames:
        return sum(fakes) / len(fakes)
    reals = [p for p in probabilities if not reaches(p, config.real_threshold)]
    if len(reals) > config.real_min_fraction * size:
        return sum(reals) / len(reals)
    return sum(probabilities) / size


def top_k_mean(probabilities: Sequence[float], k: int) -> float:
    if not probabilities:
        return math.nan
    top = sorted(probabilities, reverse=True)[: max(1, k)]
    return sum(top) / len(top)


def sustained_segments(
    frames: Sequence[FrameResult], frame_interval: float, config: AggregationConfig = AggregationConfig()
) -> list[Segment]:
    """The manipulated time ranges the verdict rests on: find_segments with the configured hysteresis and
    minimum duration."""
    return find_segments(
        frames, frame_interval, config.segment_threshold, config.segment_low, config.min_segment_seconds
    )


def video_verdict(
    frames: Sequence[FrameResult],
    frame_interval: float,
    config: AggregationConfig = AggregationConfig(),
    segments: Sequence[Segment] | None = None,
    tracks: Sequence[FaceTrack] = (),
) -> tuple[str, str]:
    """(verdict, reason in words): manipulated throughout, manipulated segments found (named), no manipulation
    found, or not enough frames. ``segments``: the sustained segments, when the caller has them already;
    ``tracks``: the people of a face-crop analysis, named in the reason when their faces drive it."""
    verdict, reason = _verdict(frames, frame_interval, config, segments)
    if segments is None:
        segments = sustained_segments(frames, frame_interval, config)
    drivers = [
        track
        for track in tracks
        if any(own.start < s.end and s.start < own.end for own in track.segments for s in segments)
    ]
    if verdict in (MANIPULATED_THROUGHOUT, MANIPULATED_SEGMENTS) and drivers:
        named = "; ".join(f"{t.name}: {', '.join(f'{s.start:.1f}-{s.end:.1f} s' for s in t.segments)}" for t in drivers)
        reason = f"{reason} ({named})"
    return verdict, reason


def _verdict(
    frames: Sequence[FrameResult],
    frame_interval: float,
    config: AggregationConfig,
    segments: Sequence[Segment] | None,
) -> tuple[str, str]:
    analysed = [f for f in frames if f.prediction is not None]
    if len(analysed) < config.min_frames:
        return NOT_ENOUGH_FRAMES, f"{len(analysed)} frames analysed, at least {config.min_frames} are needed"
    if segments is None:
        segments = sustained_segments(frames, frame_interval, config)
    if not segments:
        peak = max(f.prediction.fake_probability for f in analysed)  # type: ignore[union-attr]
        return NO_MANIPULATION, f"no sustained manipulation in {len(analysed)} frames (peak {peak:.2f})"
    covered = sum(s.frames for s in segments) / len(analysed)
    peak = max(s.peak_probability for s in segments)
    if reaches(covered, config.throughout_fraction):
        return MANIPULATED_THROUGHOUT, f"{covered:.0%} of the analysed frames manipulated, peak {peak:.2f}"
    spans = ", ".join(f"{s.start:.1f}-{s.end:.1f} s" for s in segments)
    return MANIPULATED_SEGMENTS, f"{spans} manipulated, peak {peak:.2f}"


def summarise(
    frames: Sequence[FrameResult],
    config: AggregationConfig = AggregationConfig(),
    frame_interval: float = 0.5,
    segments: Sequence[Segment] | None = None,
    tracks: Sequence[FaceTrack] = (),
) -> VideoSummary:
    """The video's numbers and verdicts (``frame_interval``: seconds between sampled frames, 1 / fps;
    ``segments``: its sustained segments, when the caller has them already)."""
    interval = frame_interval
    answered = [f.prediction for f in frames if f.prediction is not None]
    probabilities = [p.fake_probability for p in answered]
    fake_frames = sum(p.is_fake for p in answered)
    n = len(answered)
    ratio = fake_frames / n if n else math.nan
    if n == 0:
        ratio_verdict = NO_VERDICT
    elif reaches(ratio, config.fake_ratio_threshold):
        ratio_verdict = LIKELY_DEEPFAKE
    else:
        ratio_verdict = LIKELY_REAL
    verdict, reason = video_verdict(frames, interval, config, segments, tracks)
    no_face = sum(f.no_face for f in frames)
    return VideoSummary(
        frames=len(frames),
        analyzed=n,
        failed=len(frames) - n - no_face,
        fake_frames=fake_frames,
        fake_frame_ratio=ratio,
        mean_adjusted_confidence=sum(p.adjusted_confidence for p in answered) / n if n else math.nan,
        mean_fake_probability=sum(probabilities) / n if n else math.nan,
        top_k=min(config.top_k, n),
        top_k_mean=top_k_mean(probabilities, config.top_k),
        confident_score=confident_strategy(probabilities, config),
        verdict=verdict,
        no_face_frames=no_face,
        ratio_verdict=ratio_verdict,
        reason=reason,
    )


def find_segments(
    frames: Sequence[FrameResult],
    frame_interval: float,
    threshold: float = FAKE_THRESHOLD,
    low: float | None = None,
    min_seconds: float = 0.0,
) -> list[Segment]:
    """Runs of frames that open at a score >= ``threshold`` and go on while scores stay >= ``low`` (hysteresis;
    None: ``threshold``), as [start, end) time ranges lasting at least ``min_seconds``.

    A run of sampled frames at times t_i..t_j covers [t_i, t_j + frame_interval): each sample
    stands for the interval until the next one. A frame that failed ends a run: no time range is
    claimed that was not seen.
    """
    low = threshold if low is None else min(low, threshold)
    segments: list[Segment] = []
    run: list[FrameResult] = []

    def close() -> None:
        if run and run[-1].time + frame_interval - run[0].time < min_seconds - 1e-9:
            run.clear()
        if run:
            probs = [f.prediction.fake_probability for f in run]  # type: ignore[union-attr]
            peak = max(range(len(run)), key=probs.__getitem__)
            segments.append(
                Segment(
                    start=run[0].time,
                    end=run[-1].time + frame_interval,
                    peak_time=run[peak].time,
                    peak_probability=probs[peak],
                    mean_probability=sum(probs) / len(probs),
                    frames=len(run),
                )
            )
            run.clear()

    for frame in frames:
        score = frame.prediction.fake_probability if frame.prediction is not None else None
        if score is not None and reaches(score, low if run else threshold):
            run.append(frame)
        else:
            close()
    close()
    return segments

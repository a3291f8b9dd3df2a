"""Aggregation of per-frame answers: every summary number and segment edge by hand."""

from __future__ import annotations

import math

import pytest

from deepfake_client import AggregationConfig, FrameResult, Prediction, confident_strategy, find_segments, summarise
from deepfake_client._aggregate import sustained_segments

TIER = "unit"


def frame(index: int, fake_probability: float | None, adjusted: float = 0.6, fps: float = 2.0) -> FrameResult:
    if fake_probability is None:
        return FrameResult(index, index / fps, index / fps, index * 15, None, "refused")
    p = fake_probability
    prediction = Prediction(
        label="Fake" if p > 0.5 else "Real",
        class_index=int(p > 0.5),
        logits=[0.0, 0.0],
        probabilities={"Real": 1 - p, "Fake": p},
        fake_probability=p,
        softmax_confidence=max(p, 1 - p),
        adjusted_confidence=adjusted,
        temperature=1.0,
        alpha=6.0,
    )
    return FrameResult(index, index / fps, index / fps, index * 15, prediction)


PROBS = [0.1, 0.2, 0.7, 0.9, 0.8, 0.3, None, 0.6, 0.95, 0.4]
ADJUSTED = [0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.0, 0.6, 0.7, 0.6]
FRAMES = [frame(i, p, a) for i, (p, a) in enumerate(zip(PROBS, ADJUSTED, strict=True))]


def test_summary_numbers_by_hand():
    s = summarise(FRAMES, AggregationConfig(top_k=3))
    answered = [p for p in PROBS if p is not None]  # 9 frames answered, 1 failed
    assert (s.frames, s.analyzed, s.failed) == (10, 9, 1)
    assert s.fake_frames == 5  # 0.7, 0.9, 0.8, 0.6, 0.95
    assert s.fake_frame_ratio == pytest.approx(5 / 9)
    assert s.ratio_verdict == "likely deepfake"  # 5/9 >= 0.5
    # sustained (opens at >= 0.9, stays >= 0.5, lasts >= 1 s): frames 3-4 only; 0.95 alone is a 0.5 s blip
    assert s.verdict == "manipulated segments found" and s.reason == "1.5-2.5 s manipulated, peak 0.90"
    assert s.mean_adjusted_confidence == pytest.approx((0.5 + 0.6 + 0.7 + 0.8 + 0.9 + 0.5 + 0.6 + 0.7 + 0.6) / 9)
    assert s.mean_fake_probability == pytest.approx(sum(answered) / 9)
    assert (s.top_k, s.top_k_mean) == (3, pytest.approx((0.95 + 0.9 + 0.8) / 3))
    # confident strategy: 2 frames > 0.8 (0.9, 0.95) is not > 9 // 2.5 = 3 -> no; 0 frames < 0.2
    # in more than 90% -> no; so the plain mean
    assert s.confident_score == pytest.approx(sum(answered) / 9)


def test_verdict_threshold_is_inclusive_and_configurable():
    frames = [frame(i, p) for i, p in enumerate([0.9, 0.1, 0.8, 0.2])]
    assert summarise(frames).ratio_verdict == "likely deepfake"  # ratio 0.5 >= 0.5, as the original app
    assert summarise(frames, AggregationConfig(fake_ratio_threshold=0.75)).ratio_verdict == "likely real"


def test_no_answered_frame_gives_no_verdict():
    s = summarise([frame(0, None), frame(1, None)])
    assert s.ratio_verdict.startswith("no verdict") and s.verdict == "not enough frames"
    assert s.analyzed == 0 and math.isnan(s.fake_frame_ratio) and math.isnan(s.top_k_mean)


def test_confident_strategy_branches():
    confident_fakes = [0.9] * 12 + [0.1] * 8  # 12 > 20 // 2.5 = 8 and 12 > 11
    assert confident_strategy(confident_fakes) == pytest.approx(0.9)
    too_few = [0.9] * 11 + [0.1] * 1  # 11 is not > 11
    assert confident_strategy(too_few) == pytest.approx((0.9 * 11 + 0.1) / 12)
    confident_reals = [0.05] * 19 + [0.6]  # 19 > 0.9 * 20 = 18
    assert confident_strategy(confident_reals) == pytest.approx(0.05)
    assert confident_strategy([0.3, 0.5]) == pytest.approx(0.4)
    # 12 is not > 12: plain mean (12 * 0.9 + 8 * 0.1) / 20
    assert confident_strategy(confident_fakes, AggregationConfig(confident_min_frames=12)) == pytest.approx(0.58)


def test_segments_by_hand():
    segments = find_segments(FRAMES, frame_interval=0.5, threshold=0.5)
    # runs >= 0.5: frames 2-4 (0.7, 0.9, 0.8), then frame 6 failed, then frames 7-8 (0.6, 0.95)
    assert [(s.start, s.end, s.frames) for s in segments] == [(1.0, 2.5, 3), (3.5, 4.5, 2)]
    assert (segments[0].peak_time, segments[0].peak_probability) == (1.5, 0.9)
    assert segments[0].mean_probability == pytest.approx(0.8)
    assert (segments[1].peak_time, segments[1].peak_probability) == (4.0, 0.95)
    assert segments[1].mean_probability == pytest.approx(0.775)


def test_a_failed_frame_splits_a_segment_and_threshold_is_inclusive():
    frames = [frame(0, 0.9), frame(1, None), frame(2, 0.5), frame(3, 0.49)]
    segments = find_segments(frames, frame_interval=0.5, threshold=0.5)
    assert [(s.start, s.end) for s in segments] == [(0.0, 0.5), (1.0, 1.5)]
    assert find_segments(frames, 0.5, threshold=0.95) == []


def test_to_dict_shapes():
    d = FRAMES[6].to_dict()
    assert d["fake_probability"] is None and d["error"] == "refused" and d["time"] == 3.0
    d = FRAMES[3].to_dict()
    assert d["fake_probability"] == 0.9 and d["label"] == "Fake" and "error" not in d


def test_the_report_names_the_manipulated_segment_and_keeps_the_ratio_verdict():
    from deepfake_client import VideoAnalysis
    from deepfake_client._cli import video_report

    frames = [frame(i, p) for i, p in enumerate([0.1, 0.9, 0.95, 0.1, 0.1, 0.2])]  # 2 of 6 fake
    analysis = VideoAnalysis("clip.mp4", 2.0, frames, summarise(frames), sustained_segments(frames, 0.5))
    report = video_report(analysis)
    assert "Verdict:                  manipulated segments found: 0.5-1.5 s manipulated, peak 0.95" in report
    assert "Ratio verdict:            likely real (the original app's" in report
    assert "0.50s -    1.50s  peak 0.950 at 1.00s (2 frames, mean 0.925)" in report
    clean = [frame(i, 0.1) for i in range(4)]
    assert "no manipulation found: no sustained manipulation in 4 frames (peak 0.10)" in video_report(
        VideoAnalysis("c.mp4", 2.0, clean, summarise(clean), [])
    )


def test_a_one_frame_blip_is_no_segment_and_a_sustained_one_is():
    # the demo video's shape: a 0.70 blip at frame 0, frames 10-19 (5.0-10.0 s) manipulated, 30 frames at 2 fps
    scores = [0.70] + [0.05] * 9 + [0.9997] * 10 + [0.05] * 10
    frames = [frame(i, p) for i, p in enumerate(scores)]
    segments = sustained_segments(frames, 0.5)
    assert [(s.start, s.end) for s in segments] == [(5.0, 10.0)]
    s = summarise(frames)
    assert s.verdict == "manipulated segments found" and s.reason == "5.0-10.0 s manipulated, peak 1.00"
    assert s.ratio_verdict == "likely real"  # 10 of 30: the original app called it real


def test_hysteresis_keeps_a_segment_through_a_dip_and_throughout_covers_the_video():
    dip = [frame(i, p) for i, p in enumerate([0.1, 0.95, 0.6, 0.9, 0.1, 0.1])]
    assert [(s.start, s.end) for s in sustained_segments(dip, 0.5)] == [(0.5, 2.0)]  # 0.6 >= segment_low 0.5
    assert sustained_segments(dip, 0.5, AggregationConfig(segment_low=0.9)) == []  # split into 0.5 s blips
    everywhere = [frame(i, 0.9) for i in range(10)]
    s = summarise(everywhere)
    assert s.verdict == "manipulated throughout" and s.reason == "100% of the analysed frames manipulated, peak 0.90"
    few = summarise([frame(i, 0.9) for i in range(3)])
    assert few.verdict == "not enough frames" and few.reason == "3 frames analysed, at least 4 are needed"


def test_the_verdicts_metrics_and_tuning_by_hand():
    from pathlib import Path

    from scripts.modeling.evaluate import tune_verdict, verdict_metrics

    def video(scores: list[float]) -> list[FrameResult]:
        return [frame(i, p) for i, p in enumerate(scores)]

    frames = {
        Path("partial.mp4"): video([0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1]),  # found 1.0-3.0 s
        Path("blip.mp4"): video([0.1, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),  # a clean clip with a 0.5 s blip
    }
    spans = {Path("partial.mp4"): (1.0, 2.5), Path("blip.mp4"): None}
    m = verdict_metrics(frames, spans, fps=2.0)
    assert m["accuracy"] == 1.0 and m["false_alarm_rate"] == 0.0
    assert m["mean_iou"] == pytest.approx(1.5 / 2.0)  # found 1.0-3.0 s, true 1.0-2.5 s
    assert m["per_video"]["partial.mp4"]["reason"] == "1.0-3.0 s manipulated, peak 0.90"
    no_minimum = verdict_metrics(frames, spans, 2.0, AggregationConfig(min_segment_seconds=0.5))
    assert no_minimum["false_alarm_rate"] == 1.0  # the blip counts without a minimum duration
    tuned = tune_verdict(frames, spans, 2.0)
    assert verdict_metrics(frames, spans, 2.0, tuned)["false_alarm_rate"] == 0.0

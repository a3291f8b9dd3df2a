"""Face tracks (deepfake_client._tracks): linking faces across sampled frames, per-person segments, and the
verdict naming the people who drive it. Pure functions on made-up answers; tests/test_faces_server.py runs a
real two-person clip through TorchServe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepfake_client._aggregate import MANIPULATED_SEGMENTS, summarise, sustained_segments
from deepfake_client._cli import track_line
from deepfake_client._plot import plot_timeline, timeline_figure
from deepfake_client._results import FrameResult, VideoAnalysis
from deepfake_client._tracks import link_tracks
from deepfake_client.contract import FaceAnswer, Prediction

TIER = "unit"

INTERVAL = 0.5  # 2 fps


def answer(p: float) -> Prediction:
    logit = float(np.log(p / (1 - p)))
    return Prediction(
        label="Fake" if p > 0.5 else "Real",
        class_index=int(p > 0.5),
        logits=[0.0, logit],
        probabilities={"Real": 1 - p, "Fake": p},
        fake_probability=p,
        softmax_confidence=max(p, 1 - p),
        adjusted_confidence=max(p, 1 - p),
        temperature=1.0,
        alpha=6.0,
    )


def box_at(x: float, y: float, side: float) -> list[float]:
    return [x, y, x + side, y + side]


def frame(index: int, people: list[tuple[list[float], float, np.ndarray | None]]) -> FrameResult:
    """Sampled frame ``index`` with these faces (box, fake probability, look)."""
    if not people:
        return FrameResult(index, index * INTERVAL, index * INTERVAL, index, None, "no face", no_face=True)
    faces = [FaceAnswer(box, 0.99, answer(p)) for box, p, _ in people]
    top = max(faces, key=lambda f: f.prediction.fake_probability)
    prediction = Prediction(**{**top.prediction.__dict__, "faces": faces})
    looks = [look for _, _, look in people]
    return FrameResult(index, index * INTERVAL, index * INTERVAL, index, prediction,
                       face_signatures=None if any(look is None for look in looks) else looks)  # fmt: skip


def look(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=768).astype(np.float32)
    values -= values.mean()
    return values / np.linalg.norm(values)


def noisy(base: np.ndarray, seed: int) -> np.ndarray:
    values = base + 0.2 * np.random.default_rng(seed).normal(size=base.size).astype(np.float32) / np.sqrt(base.size)
    return values / np.linalg.norm(values)


def crossing_clip(with_looks: bool = True) -> list[FrameResult]:
    """A walks right and is fake from 5.0 to 10.0 s; B walks left, crossing A at frame 6; A leaves at frame 10
    and comes back at frame 16 (3 s later), from the other side."""
    a, b = look(1), look(2)
    frames = []
    for i in range(30):
        people = []
        if i < 10 or i >= 16:
            x = 100 + 80 * i if i < 10 else 1100 - 40 * (i - 16)
            p = 0.97 if 10 <= i < 20 else 0.1  # 5.0-10.0 s (A is away 5.0-8.0 s: seen fake 8.0-10.0 s)
            people.append((box_at(x, 100, 90), p, noisy(a, i) if with_looks else None))
        people.append((box_at(1000 - 70 * min(i, 12), 160, 60), 0.05, noisy(b, 100 + i) if with_looks else None))
        frames.append(frame(i, people))
    return frames


def test_two_people_crossing_and_one_coming_back_are_two_tracks():
    tracks = link_tracks(crossing_clip(), INTERVAL)
    assert [t.number for t in tracks] == [1, 2]
    a, b = tracks
    assert a.frames == 24 and [round(v, 1) for span in a.spans for v in span] == [0.0, 5.0, 8.0, 15.0]
    assert all(p.box[1] == 100 for p in a.points) and all(p.box[1] == 160 for p in b.points)  # never swapped
    assert b.frames == 30 and b.spans == [[0.0, 15.0]] and b.segments == []
    assert [(s.start, s.end) for s in a.segments] == [(8.0, 10.0)]
    assert a.peak_fake_probability == 0.97 and a.mean_fake_probability == pytest.approx((4 * 0.97 + 20 * 0.1) / 24)


def test_without_looks_motion_keeps_people_apart_and_a_short_miss_is_tolerated():
    frames = crossing_clip(with_looks=False)[:10]
    missed = [frame(i, [(f.prediction.faces[1].box, 0.05, None)]) if i in (4, 5) else f for i, f in enumerate(frames)]
    tracks = link_tracks(missed, INTERVAL)
    assert len(tracks) == 2
    a = next(t for t in tracks if t.points[0].box[1] == 100)
    assert a.frames == 8 and a.spans == [[0.0, 5.0]]  # two missed frames: the same person, still in view


def test_the_verdict_names_the_person_who_drives_it():
    frames = crossing_clip()
    tracks = link_tracks(frames, INTERVAL)
    segments = sustained_segments(frames, INTERVAL)
    summary = summarise(frames, frame_interval=INTERVAL, segments=segments, tracks=tracks)
    assert summary.verdict == MANIPULATED_SEGMENTS
    assert summary.reason.endswith("(person 1: 8.0-10.0 s)"), summary.reason
    assert "person 2" not in summary.reason
    line = track_line(tracks[0])
    assert line.startswith("Person 1: in view 0.0-5.0 s, 8.0-15.0 s (24 frames)")
    assert line.endswith("manipulated 8.0-10.0 s (peak 0.97)")
    assert track_line(tracks[1]).endswith("no manipulated segment")


def test_the_plot_draws_one_line_per_person(tmp_path: Path):
    frames = crossing_clip()
    tracks = link_tracks(frames, INTERVAL)
    segments = sustained_segments(frames, INTERVAL)
    analysis = VideoAnalysis("two.mp4", 2.0, frames, summarise(frames, frame_interval=INTERVAL, tracks=tracks),
                             segments, tracks=tracks)  # fmt: skip
    lines = timeline_figure(analysis).axes[0].get_lines()
    person_1 = next(line for line in lines if line.get_label() == "person 1")
    assert [line.get_label() for line in lines][:2] == ["person 1", "person 2"]
    times = person_1.get_xdata()
    assert np.isnan(times).sum() == 1  # one break: the frames person 1 was out of view
    assert plot_timeline(analysis, tmp_path / "people.png").stat().st_size > 0
    assert analysis.to_dict()["tracks"][0]["spans"] == [[0.0, 5.0], [8.0, 15.0]]

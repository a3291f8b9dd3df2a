"""Timeline plot: fake probability over time, the threshold, suspicious segments shaded, frames
that failed or (face-crop archives) had no face marked on the time axis."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from deepfake_client._aggregate import (
    MANIPULATED_SEGMENTS,
    MANIPULATED_THROUGHOUT,
    NO_MANIPULATION,
    AggregationConfig,
)
from deepfake_client._exceptions import DeepfakeError
from deepfake_client._results import VideoAnalysis

# red / amber / green, as on the web page
VERDICT_COLOURS = {MANIPULATED_THROUGHOUT: "#b3261e", MANIPULATED_SEGMENTS: "#b36b00", NO_MANIPULATION: "#1e7b34"}


def plot_timeline(analysis: VideoAnalysis, path: str | Path, threshold: float | None = None) -> Path:
    """Write ``timeline_figure(analysis)`` to ``path`` (PNG, or what its suffix names)."""
    figure = timeline_figure(analysis, threshold)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def timeline_figure(analysis: VideoAnalysis, threshold: float | None = None) -> Any:
    """The timeline as a matplotlib Figure (object API: no pyplot state, safe in threads and servers)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DeepfakeError("--plot needs matplotlib: pip install 'deepfake-client[plot]'") from None
    if threshold is None:
        threshold = analysis.thresholds.get("segment_threshold", AggregationConfig().segment_threshold)
    answered = [f for f in analysis.frames if f.prediction is not None]
    failed = [f for f in analysis.frames if f.prediction is None and not f.no_face]
    no_face = [f for f in analysis.frames if f.no_face]
    figure = Figure(figsize=(10, 3.2), dpi=110)
    axes = figure.subplots()
    for index, segment in enumerate(analysis.segments):
        axes.axvspan(
            segment.start, segment.end, color="tab:red", alpha=0.15, label="manipulated segment" if index == 0 else None
        )
    if analysis.tracks:  # face-crop archives: one line per person, broken where the person is out of view
        for track in analysis.tracks:
            times: list[float] = []
            values: list[float] = []
            for before, point in zip([None, *track.points], track.points, strict=False):
                if before is not None and point.index - before.index > 1:  # out of view in between: a gap
                    times.append(float("nan"))
                    values.append(float("nan"))
                times.append(point.time)
                values.append(point.prediction.fake_probability)
            axes.plot(times, values, marker="o", markersize=3, linewidth=1.2, label=track.name)
    else:
        axes.plot(
            [f.time for f in answered],
            [f.prediction.fake_probability for f in answered],  # type: ignore[union-attr]
            marker="o",
            markersize=3,
            linewidth=1.2,
            color="tab:blue",
            label="fake probability",
        )
    if failed:
        axes.plot([f.time for f in failed], [0.0] * len(failed), "x", color="black", label="frame failed")
    if no_face:
        axes.plot([f.time for f in no_face], [0.0] * len(no_face), "|", color="tab:gray", markersize=9, label="no face")
    axes.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    axes.set_ylim(-0.02, 1.02)
    end = max([s.end for s in analysis.segments] + [f.time + 1 / analysis.fps for f in analysis.frames] + [1.0])
    axes.set_xlim(0, end)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("P(fake)")
    summary = analysis.summary
    axes.set_title(
        f"{Path(analysis.source).name}: {summary.verdict}\n" + textwrap.fill(summary.reason, 110),
        color=VERDICT_COLOURS.get(summary.verdict, "black"),
    )
    axes.legend(loc="upper right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure

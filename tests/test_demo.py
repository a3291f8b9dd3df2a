"""The demo model, built from scratch exactly as `make run` builds it (several minutes of CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built in its own process, as `make run` does: training forks DataLoader and generator workers,
    and forking this test process, where OpenVINO's thread pools already run, crashed it (SIGSEGV)."""
    out = tmp_path_factory.mktemp("demo")
    command = [sys.executable, "-m", "scripts.build_demo", "--out", str(out)]
    assert subprocess.run(command, cwd=REPO_ROOT, timeout=1800).returncode == 0
    return out


def test_demo_model_held_out_accuracy(demo: Path):
    report = json.loads((demo / "evaluation.json").read_text())
    assert report["images"]["samples"] == 400  # the test split, never seen in training or calibration
    assert report["images"]["accuracy"] >= 0.95
    assert report["videos"]["auc"] >= 0.9


def test_demo_video_flags_the_manipulated_segment(demo: Path):
    timeline = json.loads((demo / "timeline.json").read_text())
    start, end = timeline["manipulated"]["start"], timeline["manipulated"]["end"]
    flagged = [s for s in timeline["segments"] if s["start"] < end and s["end"] > start]
    assert flagged, f"no flagged segment overlaps {start}-{end} s: {timeline['segments']}"
    inside = [p for i, p in enumerate(timeline["fake_probability"]) if start <= i / timeline["fps"] < end]
    outside = [p for i, p in enumerate(timeline["fake_probability"]) if not start <= i / timeline["fps"] < end]
    assert sum(inside) / len(inside) > sum(outside) / len(outside) + 0.3


def test_demo_calibration_was_fitted(demo: Path):
    calibration = json.loads((demo / "model" / "best_ResNet18.calibration.json").read_text())
    assert calibration["after"]["nll"] <= calibration["before"]["nll"]
    assert calibration["settings"]["alpha"] == calibration["settings"]["temperature"]

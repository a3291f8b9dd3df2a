"""Real photos with faces for the face-crop tests (scripts.synthetic.faces), and a video made from them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from PIL import Image

from scripts.synthetic.clips import write_h264
from scripts.synthetic.faces import FACE_BOXES, pasted, photo, png_bytes, shifted  # noqa: F401  (re-exported)

ASTRONAUT_FACE = FACE_BOXES["astronaut"]
CAMERA_FACE = FACE_BOXES["camera"]


def write_frames(path: Path, frames: list[Image.Image], rate: Fraction) -> Path:
    """An H.264 .mp4 showing ``frames`` one after another at ``rate`` frames per second."""
    return write_h264(path, frames, rate)


def face_video(path: Path) -> tuple[Path, list[bool]]:
    """6 s at 5 fps, 960x540: 2 s of background, the astronaut panning across for 2 s, 2 s of background
    again. Returns the video and, per 2 fps sample, whether a face is on screen."""
    face = photo("astronaut").resize((300, 300))
    frames = [pasted((960, 540)) for _ in range(10)]
    frames += [pasted((960, 540), (face, (60 + 50 * i, 120))) for i in range(10)]
    frames += [pasted((960, 540)) for _ in range(10)]
    return write_frames(path, frames, Fraction(5)), [2.0 <= t / 2 < 4.0 for t in range(12)]

"""Real faces for face-crop mode's tests and benchmark: scikit-image's wheel carries three photos.

``astronaut`` and ``camera`` hold one face each, ``coffee`` none. Pasted into larger backgrounds at
known places and scales they make frames whose faces are where we put them.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

from PIL import Image

PHOTOS_WITH_A_FACE = ("astronaut", "camera")
# Where MTCNN finds the face in each photo ([x1, y1, x2, y2], checked by eye once).
FACE_BOXES = {"astronaut": (181, 62, 268, 172), "camera": (199, 119, 254, 192)}
BACKGROUND = (96, 120, 72)


def photo(name: str) -> Image.Image:
    """astronaut (a face), camera (a face), coffee (no face): 512x512 and 600x400 RGB."""
    return Image.open(resources.files("skimage") / "data" / f"{name}.png").convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pasted(size: tuple[int, int], *placements: tuple[Image.Image, tuple[int, int]]) -> Image.Image:
    """A plain background of ``size`` with each image pasted at its top-left corner."""
    canvas = Image.new("RGB", size, BACKGROUND)
    for image, corner in placements:
        canvas.paste(image, corner)
    return canvas


def shifted(box: tuple[float, ...], corner: tuple[int, int], scale: float = 1.0) -> tuple[float, ...]:
    """``box`` of a photo pasted at ``corner`` after resizing by ``scale``."""
    x, y = corner
    return (box[0] * scale + x, box[1] * scale + y, box[2] * scale + x, box[3] * scale + y)


def face_frames(count: int, size: tuple[int, int] = (1280, 720)) -> list[tuple[Image.Image, tuple[float, ...] | None]]:
    """``count`` frames of ``size``: a face photo at a different place and scale in each, and every
    fourth frame the no-face photo instead. Each with where its face is (None: no face)."""
    frames = []
    for i in range(count):
        scale = (0.5, 0.75, 1.0)[i % 3]
        if i % 4 == 3:
            image = photo("coffee").resize((round(600 * scale), round(400 * scale)))
            frames.append((pasted(size, (image, (40 + 37 * i % 600, 30 + 23 * i % 200))), None))
            continue
        name = PHOTOS_WITH_A_FACE[i % 2]
        side = round(512 * scale)
        corner = ((53 * i) % (size[0] - side), (31 * i) % (size[1] - side))
        frames.append(
            (pasted(size, (photo(name).resize((side, side)), corner)), shifted(FACE_BOXES[name], corner, scale))
        )
    return frames


# --- a clip with two people -------------------------------------------------------------------------
TWO_PEOPLE_SIZE = (1280, 720)
TWO_PEOPLE_SECONDS = 12.0
PHOTO_SIDE = 400  # both photos are pasted at this size: faces of ~68x86 (astronaut) and ~43x57 (camera) px
ASTRONAUT_AWAY = (4.0, 6.5)  # the astronaut leaves the frame for these seconds


def two_people_corners(t: float) -> dict[str, tuple[int, int] | None]:
    """Where each photo's top-left corner is at ``t`` seconds (None: out of the frame). The astronaut
    walks right, leaves at 4 s, comes back at 6.5 s walking left; the cameraman walks left, crossing the
    astronaut at ~2.3 s (his photo pasted over the astronaut's, faces 120 px apart), then turns back."""
    away_from, back_at = ASTRONAUT_AWAY
    if t < away_from:
        astronaut: tuple[int, int] | None = (round(50 + 200 * t), 0)
    elif t < back_at:
        astronaut = None
    else:
        astronaut = (round(850 - 100 * (t - back_at)), 0)
    camera = (round(850 - 150 * t), 120) if t < 5 else (round(100 + 60 * (t - 5)), 120)
    return {"astronaut": astronaut, "camera": camera}


def two_people_frame(t: float) -> tuple[Image.Image, dict[str, tuple[float, ...] | None]]:
    """The frame at ``t`` and each person's face box in it (None: not in the frame)."""
    corners = two_people_corners(t)
    scale = PHOTO_SIDE / 512
    placements = [
        (photo(name).resize((PHOTO_SIDE, PHOTO_SIDE)), corner) for name, corner in corners.items() if corner is not None
    ]
    boxes = {
        name: None if corner is None else shifted(FACE_BOXES[name], corner, scale) for name, corner in corners.items()
    }
    return pasted(TWO_PEOPLE_SIZE, *placements), boxes


def write_two_people_clip(path: Path, fps: int = 10, seconds: float = TWO_PEOPLE_SECONDS) -> Path:
    """An H.264 .mp4 of two_people_frame at ``fps``."""
    from scripts.synthetic.clips import write_h264

    return write_h264(path, (two_people_frame(i / fps)[0] for i in range(round(seconds * fps))), fps)

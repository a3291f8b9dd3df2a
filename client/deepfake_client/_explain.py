"""Explanation overlays: the server's heatmaps (handler.explain) drawn over the image they explain.

A heatmap is a small grid (14x14 for a ResNet at 224 px) spread over the region the classifier saw
(the whole image, or one face's crop): it is resized bilinearly to the region's pixels and blended
in, hot (red, opaque) where the map is high and transparent where it is zero, so the picture stays
readable. Pillow only: no plotting library needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deepfake_contract import FAKE_THRESHOLD, Explanation, Heatmap, reaches

# A perceptual ramp from dark blue through yellow to red, as (position, (r, g, b)).
_RAMP = (
    (0.0, (48, 18, 59)),
    (0.35, (40, 150, 240)),
    (0.6, (160, 230, 60)),
    (0.8, (250, 190, 40)),
    (1.0, (200, 20, 10)),
)
MAX_OPACITY = 0.6  # of the hottest cell: the image stays visible under it


def heatmap_pixels(heatmap: Heatmap, width: int, height: int) -> np.ndarray:
    """The map as a (height, width) float array in [0, 1], bilinearly resized (pixel centres aligned)."""
    grid = np.asarray(heatmap.values, dtype=np.float32)
    dense = Image.fromarray(grid, mode="F").resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(dense, dtype=np.float32), 0.0, 1.0)


def _region_size(heatmap: Heatmap) -> tuple[int, int, int, int]:
    left, top, right, bottom = (round(v) for v in heatmap.region)
    return left, top, max(left + 1, right), max(top + 1, bottom)


def peak_point(heatmap: Heatmap) -> tuple[float, float]:
    """Where in the image (x, y) the map is highest: the point the pointing game checks."""
    left, top, right, bottom = _region_size(heatmap)
    dense = heatmap_pixels(heatmap, right - left, bottom - top)
    y, x = np.unravel_index(int(np.argmax(dense)), dense.shape)
    return left + x + 0.5, top + y + 0.5


def _colours(values: np.ndarray) -> np.ndarray:
    positions = np.array([p for p, _ in _RAMP], dtype=np.float32)
    table = np.array([c for _, c in _RAMP], dtype=np.float32)
    return np.stack([np.interp(values, positions, table[:, i]) for i in range(3)], axis=-1)


def overlay(image: Image.Image, explanation: Explanation | Sequence[Heatmap]) -> Image.Image:
    """``image`` with every heatmap blended over its region, and each face's box outlined."""
    heatmaps = explanation.heatmaps if isinstance(explanation, Explanation) else list(explanation)
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    height, width = base.shape[:2]
    for heatmap in heatmaps:
        left, top, right, bottom = _region_size(heatmap)
        values = heatmap_pixels(heatmap, right - left, bottom - top)
        # the part of the region inside the image (a face's crop may be cut at the border)
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        if x0 >= x1 or y0 >= y1:
            continue
        values = values[y0 - top : y1 - top, x0 - left : x1 - left]
        alpha = (values * MAX_OPACITY)[..., None]
        base[y0:y1, x0:x1] = base[y0:y1, x0:x1] * (1 - alpha) + _colours(values) * alpha
    result = Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8))
    return draw_boxes(result, [(h.box, h.fake_probability) for h in heatmaps if h.box is not None])


def draw_boxes(
    image: Image.Image, boxes: Sequence[tuple[Sequence[float], float]], labels: Sequence[str] | None = None
) -> Image.Image:
    """A copy of ``image`` with each (box, fake probability) outlined, red when fake and green when real,
    and its label (e.g. "person 2") written above it."""
    result = image.convert("RGB").copy()
    draw = ImageDraw.Draw(result)
    line = max(1, round(min(result.size) / 200))
    for i, (box, fake_probability) in enumerate(boxes):
        colour = (200, 20, 10) if reaches(fake_probability, FAKE_THRESHOLD) else (30, 160, 60)
        corners = [round(v) for v in box]
        draw.rectangle(corners, outline=colour, width=line)
        if labels and labels[i]:
            draw.text((corners[0], max(0, corners[1] - 11)), labels[i], fill=colour)
    return result


def fitted(image: Image.Image, side: int) -> tuple[Image.Image, float]:
    """``image`` as RGB shrunk to fit ``side`` pixels (never enlarged), and the scale applied."""
    scale = min(1.0, side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size) if scale < 1.0 else image.convert("RGB"), scale


def scaled(values: Sequence[float] | None, scale: float) -> list[float] | None:
    return None if values is None else [v * scale for v in values]


def fitted_overlay(image: Image.Image, explanation: Explanation, side: int) -> Image.Image:
    """``overlay`` drawn on ``image`` shrunk to fit ``side`` pixels (regions and boxes scaled with it): a
    preview costs the preview's pixels, whatever the image's size."""
    small, scale = fitted(image, side)
    heatmaps = [
        Heatmap(scaled(h.region, scale) or [], h.values, h.fake_probability, scaled(h.box, scale))
        for h in explanation.heatmaps
    ]
    return overlay(small, heatmaps)


def save_overlay(image: Image.Image, explanation: Explanation, path: str | Path) -> Path:
    """Write ``overlay(image, explanation)`` to ``path`` (PNG unless the suffix says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, explanation).save(path)
    return path

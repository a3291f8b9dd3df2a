"""Synthetic scenes: procedural "real" images and "fake" ones whose subject is re-synthesised the way
generators leave traces, with the mask of what was replaced, and clips of them. The demo data set, the
int8 fallback calibration set, the benchmark and the tests all draw from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scripts.synthetic.clips import write_h264

GRID = 224  # the model's input size: traces live on this grid


# --- procedural scenes --------------------------------------------------------------------------
def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise: a coarse random grid, bicubically up-sampled to (height, width)."""
    grid = rng.random((cells[0] + 1, cells[1] + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))


def fractal_noise(rng: np.random.Generator, height: int, width: int, base: int = 3, octaves: int = 4) -> np.ndarray:
    total = np.zeros((height, width), np.float32)
    amplitude, norm = 1.0, 0.0
    aspect = width / height
    for octave in range(octaves):
        cells = base * 2**octave
        total += amplitude * smooth_noise(rng, height, width, (cells, max(1, round(cells * aspect))))
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


@dataclass
class Scene:
    """A rendered scene before camera grain, plus where its subject is (for manipulations)."""

    pixels: np.ndarray  # float32 HxWx3 in [0, 1]
    subject: tuple[float, float, float, float]  # centre x, centre y, radius x, radius y (pixels)


def render_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Sky, clouds, sun, hill ridges, textured ground and a few rounded objects."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    top = np.array([0.15, 0.35, 0.75]) + rng.uniform(-0.1, 0.1, 3)
    horizon_colour = np.array([0.85, 0.75, 0.65]) + rng.uniform(-0.15, 0.1, 3)
    image = _mix(
        np.broadcast_to(top, (height, width, 3)),
        np.broadcast_to(horizon_colour, (height, width, 3)),
        np.broadcast_to(y**0.8, (height, width)),
    )
    clouds = np.clip((fractal_noise(rng, height, width, 2, 5) - 0.5) * 3, 0, 1) * rng.uniform(0.3, 0.9)
    image = _mix(image, np.ones_like(image) * 0.97, clouds * (1 - y) ** 1.5)
    if rng.random() < 0.6:  # a soft sun
        cx, cy, r = rng.uniform(0.1, 0.9) * width, rng.uniform(0.05, 0.3) * height, rng.uniform(0.04, 0.08) * height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        glow = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)))
        image = _mix(image, np.ones_like(image) * np.array([1.0, 0.95, 0.8]), glow * 0.9)
    horizon = rng.uniform(0.45, 0.65)
    xs = np.arange(width)
    for layer in range(3):  # far to near ridges, darker and greener as they come closer
        ridge = fractal_noise(rng, 1, width, 2 + layer, 5)[0]
        line = (horizon - 0.25 + 0.1 * layer + 0.18 * (ridge - 0.5)) * height
        mask = (np.arange(height)[:, None] > line[None, xs]).astype(np.float32)
        base = np.array([0.35, 0.4, 0.5]) * (1 - 0.25 * layer) + np.array([0.0, 0.08, 0.0]) * layer
        texture = fractal_noise(rng, height, width, 6, 4)[..., None] * 0.25 - 0.12
        image = _mix(image, np.clip(base + rng.uniform(-0.06, 0.06, 3) + texture, 0, 1), mask)
    ground_top = int(horizon * height + 0.1 * height)
    grass = np.array([0.25, 0.45, 0.15]) + rng.uniform(-0.08, 0.08, 3)
    texture = fractal_noise(rng, height, width, 10, 4)[..., None] * 0.35 - 0.17
    ground = (np.arange(height)[:, None] >= ground_top).astype(np.float32) * np.ones((1, width), np.float32)
    image = _mix(image, np.clip(grass + texture, 0, 1), ground)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(rng.integers(2, 6)):  # bushes and rocks
        cx, cy = rng.uniform(0, width), rng.uniform(ground_top, height)
        rx, ry = rng.uniform(0.04, 0.12) * height, rng.uniform(0.03, 0.08) * height
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        shade = np.clip(1.2 - 0.5 * ((yy - cy) / ry + 1), 0.5, 1.2)[..., None]
        colour = rng.choice([np.array([0.2, 0.35, 0.12]), np.array([0.5, 0.48, 0.45]), np.array([0.4, 0.3, 0.2])])
        image = _mix(image, np.clip(colour * shade, 0, 1), np.clip((1 - d) * 4, 0, 1))
    # the subject: a large rounded object, where a face would be in a portrait
    sx, sy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.35, 0.65) * height
    srx, sry = rng.uniform(0.12, 0.2) * height, rng.uniform(0.16, 0.26) * height
    d = ((xx - sx) / srx) ** 2 + ((yy - sy) / sry) ** 2
    skin = np.array([0.8, 0.6, 0.5]) + rng.uniform(-0.2, 0.1, 3)
    shade = np.clip(1.15 - 0.35 * ((xx - sx) / srx + (yy - sy) / sry), 0.55, 1.2)[..., None]
    detail = fractal_noise(rng, height, width, 12, 3)[..., None] * 0.16 - 0.08
    image = _mix(image, np.clip(skin * shade + detail, 0, 1), np.clip((1 - d) * 6, 0, 1))
    return Scene(image.astype(np.float32), (sx, sy, srx * 1.15, sry * 1.15))


def camera_grain(rng: np.random.Generator, height: int, width: int, strength: float = 0.045) -> np.ndarray:
    """Sensor-like grain on the model's grid (so it survives down-scaling), plus fine noise."""
    coarse = rng.normal(0, 1, (GRID, GRID, 3)).astype(np.float32)
    up = np.stack(
        [
            np.asarray(Image.fromarray(coarse[..., c], mode="F").resize((width, height), Image.BILINEAR))
            for c in range(3)
        ],
        axis=-1,
    )
    return strength * up + rng.normal(0, 0.01, (height, width, 3)).astype(np.float32)


def resynthesise(
    rng: np.random.Generator, clean: np.ndarray, grained: np.ndarray, ellipse: tuple[float, float, float, float]
) -> np.ndarray:
    """Replace an elliptical region the way a generator would: coarse content, checkerboard, seam.

    Only the ellipse's bounding box is touched; grid cells are computed from whole-image
    coordinates, so the traces stay aligned with the 224x224 grid the model sees.
    """
    height, width, _ = clean.shape
    cx, cy, rx, ry = ellipse
    top, bottom = max(0, int(cy - 1.1 * ry)), min(height, int(cy + 1.1 * ry) + 1)
    left, right = max(0, int(cx - 1.1 * rx)), min(width, int(cx + 1.1 * rx) + 1)
    if top >= bottom or left >= right:
        return grained
    gy = (np.arange(top, bottom) * GRID // height)[:, None]  # each pixel's cell on the model grid
    gx = (np.arange(left, right) * GRID // width)[None, :]
    block = int(rng.choice([4, 8]))  # the generator worked on a grid 4-8x coarser than the model's
    keys = np.broadcast_to((gy // block) * (GRID // block + 1) + gx // block, (bottom - top, right - left))
    _, flat = np.unique(keys.ravel(), return_inverse=True)
    counts = np.bincount(flat)
    box = clean[top:bottom, left:right]
    synthetic = np.empty_like(box)
    for c in range(3):  # average each coarse cell, paint it back blockily (nearest up-sampling)
        synthetic[..., c] = (np.bincount(flat, weights=box[..., c].ravel()) / counts)[flat].reshape(keys.shape)
    checker = (((gy + gx) % 2) * 2 - 1).astype(np.float32)  # transposed-convolution checkerboard
    synthetic = synthetic * (1 + rng.uniform(0.08, 0.14) * checker[..., None])
    shift = rng.uniform(0.06, 0.14, 3) * rng.choice([-1, 1], 3)
    synthetic = synthetic * (1 + shift)  # colour mismatch with the surroundings
    yy, xx = np.arange(top, bottom, dtype=np.float32)[:, None], np.arange(left, right, dtype=np.float32)[None, :]
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    mask = np.clip((1 - d) / 0.04, 0, 1)  # narrow feather: a visible blending seam
    seam = np.exp(-(((d - 1) / 0.03) ** 2)) * rng.uniform(0.08, 0.14) * rng.choice([-1, 1])
    out = grained.copy()
    out[top:bottom, left:right] = _mix(grained[top:bottom, left:right], synthetic, mask) + seam[..., None]
    return out


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


def upscale(scene: Scene, height: int, width: int) -> Scene:
    """A scene rendered on the model's grid, bicubically enlarged (the grain comes after)."""
    h0, w0, _ = scene.pixels.shape
    if (h0, w0) == (height, width):
        return scene
    pixels = np.stack(
        [
            np.asarray(Image.fromarray(scene.pixels[..., c], mode="F").resize((width, height), Image.BICUBIC))
            for c in range(3)
        ],
        axis=-1,
    )
    sx, sy, rx, ry = scene.subject
    fx, fy = width / w0, height / h0
    return Scene(np.clip(pixels, 0, 1), (sx * fx, sy * fy, rx * fy, ry * fy))


def make_image(seed: list[int], fake: bool) -> Image.Image:
    return make_image_and_mask(seed, fake)[0]


def make_image_and_mask(seed: list[int], fake: bool) -> tuple[Image.Image, Image.Image | None]:
    """The image, and for a fake one the mask of its re-synthesised region (255 inside, 0 outside)."""
    rng = np.random.default_rng(seed)
    height = int(rng.choice([224, 256, 288, 360]))
    aspect = float(rng.choice([1.0, 4 / 3, 16 / 9]))
    width = int(height * aspect)
    scene = upscale(render_scene(rng, GRID, round(GRID * aspect)), height, width)
    grained = scene.pixels + camera_grain(rng, height, width)
    if fake:
        # the subject is re-synthesised, as a face is in a face swap; the mask only roughly follows it
        cx, cy, rx, ry = scene.subject
        cx, cy = cx + rng.uniform(-0.15, 0.15) * rx, cy + rng.uniform(-0.15, 0.15) * ry
        scale = rng.uniform(0.85, 1.15)
        grained = resynthesise(rng, scene.pixels, grained, (cx, cy, rx * scale, ry * scale))
        return Image.fromarray(to_uint8(grained)), region_mask(height, width, (cx, cy, rx * scale, ry * scale))
    return Image.fromarray(to_uint8(grained)), None


def region_mask(height: int, width: int, ellipse: tuple[float, float, float, float]) -> Image.Image:
    """The ellipse ``resynthesise`` replaced (where its blend weight passes one half), as a 1-bit image."""
    cx, cy, rx, ry = ellipse
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = np.sqrt(((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2) <= 0.98
    return Image.fromarray(inside.astype(np.uint8) * 255).convert("1")


# --- videos -------------------------------------------------------------------------------------
def write_clip(
    path: Path,
    rng: np.random.Generator,
    seconds: float,
    size: tuple[int, int],
    fps: int,
    fake_range: tuple[float, float] | None,
) -> None:
    """A slow pan across a scene with a moving subject; frames in fake_range are manipulated."""
    width, height = size
    pan = width // 4
    scene = render_scene(rng, height, width + pan)
    frames = round(seconds * fps)
    grain_bank = [camera_grain(rng, height, width) for _ in range(6)]  # grain varies frame to frame

    def rendered() -> Iterator[np.ndarray]:
        for index in range(frames):
            t = index / fps
            offset = int(pan * index / max(frames - 1, 1))
            clean = scene.pixels[:, offset : offset + width]
            grained = clean + grain_bank[int(rng.integers(len(grain_bank)))]
            cx, cy, rx, ry = scene.subject
            if fake_range and fake_range[0] <= t < fake_range[1]:
                grained = resynthesise(rng, clean, grained, (cx - offset, cy, rx, ry))
            yield to_uint8(grained)

    write_h264(path, rendered(), fps, {"crf": "18", "preset": "veryfast"})

"""MTCNN's three stages as facenet-pytorch runs them, with the pixel work done the cheap way.

facenet-pytorch's ``detect_face`` resamples the whole (C, H, W) frame once per pyramid level and every
candidate's crop separately (``interpolate(mode="area")``, adaptive average pooling), and runs its
networks in torch. On a 720p frame on one core that was most of the detector's time, so here:

* the frame's integral image is made once (one compiled pass, numba; a frame over 1080p's in bands of
  rows); every level's and crop's pixel is then the mean of a rectangle read from four of its values
  (``Pyramid``): the same averages to float rounding (< 1e-5 of a pixel value); every level is made
  before PNet runs on any;
* the pyramid starts at the first level of at most 1080p's pixel count (``pyramid_scales``), so that
  a 64 MP upload costs about what a 1080p frame does (0.3 GB; it took 10 GB at min_face_size 12 before);
* the three networks run compiled by OpenVINO in float32 (``CompiledNetwork``) in a worker of one
  thread, in torch with more threads or without OpenVINO;
* the first stage's candidates come from numpy, not ~10 small torch steps per level.

Everything else follows ``detect_face`` step for step with facenet-pytorch's own networks and helpers
(the thresholds, the NMS steps, the box regression, the crops' coordinates): tests hold the boxes to
its path within 0.01 px and the scores within 1e-4 (docs/benchmark.md, section 8: the time saved).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, pad, rerec
from torchvision.ops import nms

PNET_CELL = 12  # PNet's window: the pyramid's first scale maps min_face_size to it
PYRAMID_FACTOR = 0.709  # MTCNN's (and facenet-pytorch's) pyramid step
RNET_SIZE, ONET_SIZE = 24, 48
NMS_WITHIN_LEVEL, NMS_ACROSS, NMS_LAST = 0.5, 0.7, 0.7
MTCNN_MEAN, MTCNN_SCALE = 127.5, 0.0078125  # its input is (pixel - 127.5) / 128
NORMALISED = (MTCNN_SCALE, MTCNN_MEAN * MTCNN_SCALE)  # that scaling as _window_means' scale and offset
REUSED_FRAME_PIXELS = 1920 * 1080  # frames up to 1080p reuse the detector's arrays; larger ones get their own
MAX_LEVEL_PIXELS = REUSED_FRAME_PIXELS  # the pyramid starts at the first of MTCNN's levels this size or smaller
INTEGRAL_BAND_BYTES = 32 << 20  # the integral image is made in bands of rows of about this size (1080p: one band)
# A crafted image (a mosaic of small faces) gives the later stages thousands of candidates: their most
# likely ones only, a chunk of crops at a time, so that memory (OpenVINO's kept buffers too) and time stay
# bounded; a 720p frame has ~10-200 (docs/benchmark.md, section 8), a 1920x1920 mosaic of 48 px faces 8,000.
RNET_CANDIDATES, ONET_CANDIDATES = 2000, 500  # the highest-scoring candidates each of the later stages looks at
# The first stage's NMS costs candidates x boxes kept: a 64 MP mosaic of faces gave a level 38,545 candidates
# (1.2 s) and the levels together 28,562 (1.3 s); the NMS steps take the most likely of a level's, and of the
# levels', candidates (the clip's textured 720p frames: at most 213).
PNET_CANDIDATES = 5000
STAGE_CHUNK = 128  # crops resampled and run through RNet or ONet at a time


def pyramid_scales(
    height: int, width: int, min_face_size: int, max_level_pixels: float = MAX_LEVEL_PIXELS
) -> list[float]:
    """facenet-pytorch's scales: the first maps ``min_face_size`` to PNet's 12 px, each next x0.709,
    down to a 12 px short side; less those whose level would hold more than ``max_level_pixels``.

    That bound touches only frames larger than 1080p (at the default min_face_size 40, over ~23 MP):
    in a 64 MP upload the smallest face looked for is then ~67 px, not 40, and the detector's memory
    stays that of a 1080p frame's pyramid instead of growing with the frame (PNet's first layer alone
    holds 40 bytes per level pixel: 2.5 GB for a 64 MP level at min_face_size 12). The levels kept
    are facenet-pytorch's own."""
    scale = PNET_CELL / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= PNET_CELL:
        if height * width * scale * scale <= max_level_pixels:
            scales.append(scale)
        scale *= PYRAMID_FACTOR
        shortest *= PYRAMID_FACTOR
    return scales


def _integral_image(pixels: np.ndarray, out: np.ndarray) -> None:
    """``out[y, x, c]``: the sum of ``pixels[:y, :x, c]`` modulo 2**32 (``pixels`` (H, W, 3) RGB, ``out`` uint32,
    (H + 1, W + 1, 3)); of a band of a frame's rows, that band's own integral image. A window's sum taken
    from four corners in the same arithmetic is exact while the window holds fewer than 2**32 / 255
    (16.8 M) pixels: MTCNN's windows span at most ~1/12 of the frame each way (its levels and crops are
    12 px or more), under 0.5 M pixels for frames up to MAX_IMAGE_PIXELS (64 MP). The three channels'
    running sums side by side in registers: 1.5x faster than a channel at a time (720p: 1.8 ms, 2.7)."""
    out[0] = 0
    for y in range(pixels.shape[0]):
        above, below, row = out[y], out[y + 1], pixels[y]
        below[0] = 0
        red, green, blue = np.uint32(0), np.uint32(0), np.uint32(0)
        for x in range(pixels.shape[1]):
            red += row[x, 0]
            green += row[x, 1]
            blue += row[x, 2]
            below[x + 1, 0] = above[x + 1, 0] + red
            below[x + 1, 1] = above[x + 1, 1] + green
            below[x + 1, 2] = above[x + 1, 2] + blue


def _window_means(
    integral: np.ndarray,
    tops: np.ndarray,
    lefts: np.ndarray,
    row_starts: np.ndarray,
    row_ends: np.ndarray,
    column_starts: np.ndarray,
    column_ends: np.ndarray,
    first_rows: np.ndarray,
    last_rows: np.ndarray,
    scale: float,
    offset: float,
    out: np.ndarray,
) -> None:
    """``out[k, c, i, j]`` for rows i in [first_rows[k], last_rows[k]): the mean of region k's window (i, j)
    (rows ``tops[k]`` + [row_starts[k, i], row_ends[k, i]), columns likewise) of the frame, or band of
    rows, whose ``_integral_image`` is ``integral``, times ``scale`` minus ``offset``."""
    for k in range(out.shape[0]):
        for i in range(first_rows[k], last_rows[k]):
            top, bottom = tops[k] + row_starts[k, i], tops[k] + row_ends[k, i]
            for j in range(out.shape[3]):
                left, right = lefts[k] + column_starts[k, j], lefts[k] + column_ends[k, j]
                factor = scale / ((bottom - top) * (right - left))
                for c in range(out.shape[1]):
                    total = (
                        integral[bottom, right, c]
                        - integral[top, right, c]
                        - integral[bottom, left, c]
                        + integral[top, left, c]
                    ) & 0xFFFFFFFF  # modulo 2**32, as the integral image holds it
                    out[k, c, i, j] = total * factor - offset


class _Loops(NamedTuple):
    integral_image: Callable[..., None]
    window_means: Callable[..., None]


@functools.cache
def _loops() -> _Loops:
    """``_integral_image`` and ``_window_means`` compiled by numba on first use (a face worker's warm-up:
    ~1 s with numba's import, so that no request waits for it; only the detector imports numba), for the
    one signature every caller passes: C-contiguous arrays, read-only ones (a decoded image's) too."""
    import numba
    from numba import types

    def readable(dtype: Any, dimensions: int) -> Any:
        return types.Array(dtype, dimensions, "C", readonly=True)

    indices, bounds = readable(types.int64, 1), readable(types.int64, 2)
    window_means = types.void(
        readable(types.uint32, 3), indices, indices, bounds, bounds, bounds, bounds, indices, indices,
        types.float64, types.float64, types.float32[:, :, :, ::1],
    )  # fmt: skip
    return _Loops(
        numba.njit([types.void(readable(types.uint8, 3), types.uint32[:, :, ::1])], nogil=True)(_integral_image),
        numba.njit([window_means], nogil=True)(_window_means),
    )


class Scratch:
    """Arrays reused from one frame to the next: fresh multi-MB arrays cost page faults (a 720p frame's
    pyramid took 3.2-3.8 ms with them against 2.8-3.1 ms reusing them, measured here)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array


class _Target(NamedTuple):
    """Regions of the frame to resample into ``out`` (K, C, h, w): their top rows and left columns (K,),
    and their windows' (starts, ends) along each axis ((K, h) and (K, w), as ``windows`` gives them)."""

    tops: np.ndarray
    lefts: np.ndarray
    rows: tuple[np.ndarray, np.ndarray]
    columns: tuple[np.ndarray, np.ndarray]
    out: np.ndarray

    @property
    def windows(self) -> tuple[np.ndarray, ...]:
        """``_window_means``' arguments from ``tops`` to the column windows."""
        return self.tops, self.lefts, *self.rows, *self.columns


class Pyramid:
    """MTCNN's image pyramid of one (H, W, 3) uint8 RGB frame: each level is ``interpolate(mode="area")`` of
    the whole frame, as facenet-pytorch makes it, normalised as MTCNN's networks expect; and the later
    stages' crops, resampled the same way.

    Adaptive average pooling averages a rectangle of the frame per output pixel. The frame's integral
    image (one pass) gives any rectangle's sum from four of its values, so a level or a crop costs
    four reads per output value, whatever its windows' size, in one compiled loop (numba):
    facenet-pytorch's path pooled the whole (C, H, W) frame once per level and once per crop. The
    levels and crops agree with it to float rounding (< 1e-5 of a pixel value).

    The integral image takes 12 bytes per pixel: a frame up to ``band_bytes`` of it (1080p) has it
    whole, made once; a larger one in bands of rows, each band's own integral image, made anew for
    the levels and for each stage's crops, every output row from the first band that holds its
    windows: two bands' worth of the tallest window at most, ~2 bytes per pixel (a 64 MP frame: 128 MB,
    not 768) for ~2 passes per sweep instead of one.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        scales: list[float],
        scratch: Scratch | None = None,
        band_bytes: int = INTEGRAL_BAND_BYTES,
    ):
        self._scratch = scratch or Scratch()
        self.pixels = pixels
        height, width, channels = pixels.shape
        if channels != 3:  # the compiled integral image reads three channels without bounds checks
            raise ValueError(f"MTCNN's pyramid takes an RGB frame (H, W, 3), got {pixels.shape}")
        self.height, self.width, self.channels = height, width, channels
        self.sizes = [(int(height * scale + 1), int(width * scale + 1)) for scale in scales]
        row_bytes = (width + 1) * channels * np.dtype(np.uint32).itemsize  # one row of the integral image
        self._band_rows = max(band_bytes // row_bytes - 1, 1)
        self._whole = None  # the whole frame's integral image, where it fits in one band
        if height <= self._band_rows:
            self._whole = self._integral_band(0, height, height)
        level_sizes = [channels * level_height * level_width for level_height, level_width in self.sizes]
        offsets = np.concatenate([[0], np.cumsum(level_sizes, dtype=np.int64)]).tolist()
        storage = self._scratch.array("levels", (offsets[-1],), np.float32)
        self._levels = [
            storage[first:last].reshape(1, channels, level_height, level_width)
            for first, last, (level_height, level_width) in zip(offsets[:-1], offsets[1:], self.sizes, strict=True)
        ]
        origin = np.zeros(1, dtype=np.int64)
        self._resample(
            [_Target(origin, origin, windows([height], level_height), windows([width], level_width), level)
             for (level_height, level_width), level in zip(self.sizes, self._levels, strict=True)],
            NORMALISED,
        )  # fmt: skip

    def levels(self) -> Iterator[torch.Tensor]:
        """Every level, in order. All are made before PNet runs on any: made between PNet's runs, each
        evicted the other's data from the caches (a 720p frame's detection ~10% faster)."""
        return (torch.from_numpy(level) for level in self._levels)

    def level(self, index: int) -> torch.Tensor:
        """Level ``index`` normalised, as a contiguous (1, C, h, w) tensor (part of the scratch arrays when
        the detector's: valid until the next frame's pyramid reuses them)."""
        return torch.from_numpy(self._levels[index])

    def regions(self, boxes: list[tuple[int, int, int, int]], size: int, normalised: bool = False) -> np.ndarray:
        """Each (top, bottom, left, right) region of the frame (rows [top, bottom), columns [left, right))
        ``interpolate(mode="area")``-resized to (size, size): a (K, C, size, size) float32 batch, scaled as
        MTCNN's networks expect if ``normalised``."""
        top, bottom, left, right = np.ascontiguousarray(np.asarray(boxes, dtype=np.int64).reshape(-1, 4).T)
        inside = (top >= 0) & (top < bottom) & (bottom <= self.height) & (left >= 0) & (left < right)
        if not (inside & (right <= self.width)).all():  # the compiled loop reads without bounds checks
            raise ValueError(f"regions must be non-empty and inside the {self.width}x{self.height} frame")
        crops = np.empty((len(top), self.channels, size, size), dtype=np.float32)
        self._resample(
            [_Target(top, left, windows(bottom - top, size), windows(right - left, size), crops)],
            NORMALISED if normalised else (1.0, 0.0),
        )
        return crops

    def _integral_band(self, first: int, last: int, rows: int) -> np.ndarray:
        """The integral image of the frame's rows [first, last) (at most ``rows``), in the scratch arrays."""
        band = self._scratch.array("integral", (rows + 1, self.width + 1, self.channels), np.uint32)
        _loops().integral_image(self.pixels[first:last], band[: last - first + 1])
        return band

    def _resample(self, targets: list[_Target], scaling: tuple[float, float]) -> None:
        """Fill each target's ``out`` with ``_window_means``: from the whole frame's integral image, or band
        by band, each band starting at the first frame row that an unfilled output row needs and reaching
        as far as the budget, and twice the tallest window, allow, and no further than the regions need
        (a chunk of crops in a band of the frame: that band only); each output row is filled from the
        first band that holds all of its windows."""
        if self._whole is not None:
            for target in targets:
                regions = len(target.tops)
                every_row = np.zeros(regions, dtype=np.int64), np.full(regions, target.out.shape[2], dtype=np.int64)
                _loops().window_means(self._whole, *target.windows, *every_row, *scaling, target.out)
            return
        starts = [target.tops[:, None] + target.rows[0] for target in targets]  # frame rows of each output row
        ends = [target.tops[:, None] + target.rows[1] for target in targets]
        tallest = max(int((end - start).max()) for start, end in zip(starts, ends, strict=True))
        band_rows = max(self._band_rows, 2 * tallest)
        needed = max(int(end.max()) for end in ends)  # the frame's rows below are no region's
        filled = [np.zeros(len(target.tops), dtype=np.int64) for target in targets]  # each region's rows so far
        while True:
            first_needed = [  # by each region still to fill: the frame row its next output row starts at
                start[waiting, done[waiting]]
                for start, done in zip(starts, filled, strict=True)
                if (waiting := done < start.shape[1]).any()
            ]
            if not first_needed:
                return
            first = int(min(rows.min() for rows in first_needed))
            last = min(first + band_rows, needed)
            integral = self._integral_band(first, last, band_rows)
            for target, end, done in zip(targets, ends, filled, strict=True):
                reach = np.maximum((end <= last).sum(axis=1), done)  # each region's rows ending within the band
                tops, *lefts_and_windows = target.windows
                _loops().window_means(integral, tops - first, *lefts_and_windows, done, reach, *scaling, target.out)
                done[:] = reach


def windows(sizes: np.ndarray | list[int], pooled: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's windows along one axis of each of ``sizes``, as torch computes them:
    output i averages inputs [floor(i * size / pooled), ceil((i + 1) * size / pooled)); (len(sizes),
    pooled) starts and ends."""
    index = np.arange(pooled, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)[:, None]
    return index * sizes // pooled, ((index + 1) * sizes + pooled - 1) // pooled


def _stage(
    network: Network, pyramid: Pyramid, boxes: torch.Tensor, size: int
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """``network``'s outputs on the crops of ``boxes`` (``_stage_input``), and which boxes had any pixels
    (ascending, the outputs in that order). STAGE_CHUNK crops at a time, taken in the order of their top
    rows: a frame whose integral image is made in bands of rows (over 1080p) then makes, for each chunk,
    the bands of the rows its crops span, not the whole frame's (a 64 MP mosaic of faces: bands of 3.3
    times the frame's rows made in all, pyramid included, against 17.6 times before)."""
    order = torch.argsort(boxes[:, 1], stable=True)
    outputs, kept = [], []
    for first in range(0, len(boxes), STAGE_CHUNK):
        chunk = order[first : first + STAGE_CHUNK]
        crops, chunk_kept = _stage_input(pyramid, boxes[chunk], size)
        outputs.append(network(crops))
        kept.append(chunk[chunk_kept])
    kept_boxes, restored = torch.sort(torch.cat(kept))
    return tuple(torch.cat(parts)[restored] for parts in zip(*outputs, strict=True)), kept_boxes


def _stage_input(pyramid: Pyramid, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next stage's inputs for ``boxes``: facenet-pytorch's crops (its ``pad``, then rows [y - 1, ey)
    and columns [x - 1, ex) of the frame resized to ``size``), and which boxes had any pixels."""
    y, ey, x, ex = pad(boxes, pyramid.width, pyramid.height)
    kept = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    if not kept:
        return torch.zeros((0, pyramid.channels, size, size)), torch.zeros(0, dtype=torch.int64)
    crops = pyramid.regions([(y[k] - 1, ey[k], x[k] - 1, ex[k]) for k in kept], size, normalised=True)
    return torch.from_numpy(crops), torch.as_tensor(kept, dtype=torch.int64)


def _candidates(regression: np.ndarray, probabilities: np.ndarray, scale: float, threshold: float) -> torch.Tensor:
    """facenet-pytorch's ``generateBoundingBox`` for one image, in numpy (its ~10 small torch steps per
    level cost more than the work): PNet's cells scoring ``threshold`` or more, as rows [x1, y1, x2, y2,
    score, 4 x regression] in the frame's pixels, in row-major order of the cells."""
    face = probabilities[0, 1]
    rows, columns = np.nonzero(face >= np.float32(threshold))
    cells = np.stack([columns, rows], axis=1).astype(np.float32)
    first = np.floor((2 * cells + 1) / np.float32(scale))  # PNet's stride 2 and 12 px cell
    last = np.floor((2 * cells + PNET_CELL) / np.float32(scale))
    found = [first, last, face[rows, columns][:, None], regression[0][:, rows, columns].T]
    return torch.from_numpy(np.concatenate(found, axis=1, dtype=np.float32))


def _most_likely(boxes: torch.Tensor, count: int = PNET_CANDIDATES) -> torch.Tensor:
    """The ``count`` highest-scoring of the first stage's candidates (rows [x1, y1, x2, y2, score, ...]), all
    where there are no more. NMS keeps a box unless a higher-scoring one overlaps it, so NMS of these keeps
    the very boxes NMS of all of them keeps down to the lowest score taken: the later stages, which look at
    the most likely candidates only, see the same ones while they are fewer than ``count``."""
    if len(boxes) <= count:
        return boxes
    return boxes[torch.topk(boxes[:, 4], count, sorted=False).indices]


def _one_image(boxes: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(boxes), dtype=torch.int64)  # batched_nms's image index: one image


Network = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # a batch in, the network's outputs out


class CompiledNetwork:
    """One of MTCNN's networks compiled by OpenVINO's CPU plugin in float32, its spatial size (PNet) or
    batch (RNet, ONet) dynamic: called as facenet-pytorch's module is, with the same outputs (to
    ~1e-6). Its small convolutions (3 to 128 channels) run ~1.4x faster than torch's channels-last
    kernels on one core (PNet over a 720p pyramid: 10.5 ms against 15 ms). One thread, not pinned:
    MTCNN's many small steps gain little from a second thread (two cost ~1.3x the CPU time of one),
    and pinned threads of a face archive's workers would all run on the first core."""

    def __init__(self, network: torch.nn.Module, example: torch.Tensor, dynamic: tuple[int, ...], core: Any):
        import openvino as ov

        shape = [-1 if axis in dynamic else size for axis, size in enumerate(example.shape)]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)  # OpenVINO traces
            model = ov.convert_model(network.eval(), example_input=example, input=[shape])
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False}
        self.request = core.compile_model(model, "CPU", config).create_infer_request()
        self.network = network.to(memory_format=torch.channels_last)  # for frames OpenVINO should not keep memory for
        self.empty = tuple(  # an empty batch's outputs (no candidate left), as torch gives them (PNet: 0 x 0 maps)
            torch.zeros([0] + [dim.get_length() if dim.is_static else 0 for dim in output.get_partial_shape()[1:]])
            for output in model.outputs
        )

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not len(batch):
            return self.empty
        # share_inputs: OpenVINO reads the batch where it is instead of copying it first (a 720p frame's
        # detection 0.5-1 ms faster of ~27 here, same boxes); always: a request once given a shared input
        # cannot take a copied one of another shape
        result = self.request.infer({0: np.ascontiguousarray(batch.numpy(), dtype=np.float32)}, share_inputs=True)
        return tuple(
            torch.from_numpy(np.array(result[i])) for i in range(len(self.empty))
        )  # copies: buffers are reused


def compiled_networks(
    pnet: torch.nn.Module, rnet: torch.nn.Module, onet: torch.nn.Module
) -> tuple[Network, Network, Network]:
    """MTCNN's three networks for a process whose share of the cores is torch's thread count: compiled
    by OpenVINO (one Core per process: runtimes.openvino_core) where that share is one core (each of a
    face archive's default two workers: detection ~1.1x faster than on torch's networks there), else
    the torch modules channels-last, whose kernels use the other threads (on 2 threads detection was
    1.25x faster than with OpenVINO's one; both measured on 720p frames). Without OpenVINO, the torch
    modules."""
    modules = (pnet.to(memory_format=torch.channels_last), rnet.to(memory_format=torch.channels_last),
               onet.to(memory_format=torch.channels_last))  # fmt: skip
    if torch.get_num_threads() > 1:
        return modules
    try:
        from handler.runtimes import openvino_core

        core = openvino_core()
    except ImportError:
        return modules
    return (
        CompiledNetwork(pnet, torch.zeros(1, 3, 2 * PNET_CELL, 2 * PNET_CELL), (2, 3), core),
        CompiledNetwork(rnet, torch.zeros(1, 3, RNET_SIZE, RNET_SIZE), (0,), core),
        CompiledNetwork(onet, torch.zeros(1, 3, ONET_SIZE, ONET_SIZE), (0,), core),
    )


class Mtcnn:
    """facenet-pytorch's three MTCNN networks and thresholds, run by ``detect``; not for concurrent
    calls. Frames up to REUSED_FRAME_PIXELS reuse its arrays (a fresh 11 MB one per 720p frame cost
    page faults) and run on the networks as given; a larger one gets arrays of its own and runs on the
    torch modules (OpenVINO keeps memory sized for the largest input it ran), so that one huge upload
    leaves no huge buffer behind."""

    def __init__(self, pnet: Any, rnet: Any, onet: Any, min_face_size: int, thresholds: tuple[float, float, float]):
        self.networks = (pnet, rnet, onet)
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.scratch = Scratch()

    def _pyramid(self, pixels: np.ndarray, scales: list[float]) -> tuple[Pyramid, tuple[Network, ...]]:
        if pixels.shape[0] * pixels.shape[1] > REUSED_FRAME_PIXELS:
            return Pyramid(pixels, scales), tuple(getattr(net, "network", net) for net in self.networks)
        return Pyramid(pixels, scales, self.scratch), self.networks

    @torch.inference_mode()  # never autograd: torch's modules would record a graph for every frame
    def detect(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [x1, y1, x2, y2] (N, 4) and scores (N,) of the faces in one (H, W, 3) uint8 frame, as
        facenet-pytorch's ``detect_face`` finds them."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        height, width = pixels.shape[:2]
        thresholds = self.thresholds

        # first stage: PNet over the pyramid, NMS within each level, then across the levels
        candidates = []
        scales = pyramid_scales(height, width, self.min_face_size)
        if not scales:  # smaller than min_face_size: no level to look at
            return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)
        pyramid, (pnet, rnet, onet) = self._pyramid(pixels, scales)
        for level, scale in zip(pyramid.levels(), scales, strict=True):
            regression, probabilities = pnet(level)
            found = _most_likely(_candidates(regression.numpy(), probabilities.numpy(), scale, thresholds[0]))
            candidates.append(found[nms(found[:, :4], found[:, 4], NMS_WITHIN_LEVEL)])
        boxes = _most_likely(torch.cat(candidates))
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], NMS_ACROSS)]
        box_width, box_height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        corrected = [
            boxes[:, 0] + boxes[:, 5] * box_width,
            boxes[:, 1] + boxes[:, 6] * box_height,
            boxes[:, 2] + boxes[:, 7] * box_width,
            boxes[:, 3] + boxes[:, 8] * box_height,
            boxes[:, 4],
        ]
        boxes = rerec(torch.stack(corrected).permute(1, 0))

        # second stage: RNet on 24 px crops of the most likely candidates (NMS leaves them by score, highest first)
        boxes = boxes[:RNET_CANDIDATES]
        if len(boxes):
            (regression, probabilities), kept = _stage(rnet, pyramid, boxes, RNET_SIZE)
            score = probabilities[:, 1]
            passed = score > thresholds[1]
            boxes = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            regression = regression[passed]
            pick = nms(boxes[:, :4], boxes[:, 4], NMS_ACROSS)
            boxes = rerec(bbreg(boxes[pick], regression[pick]))

        # third stage: ONet on 48 px crops of the most likely, then NMS by the smaller box's area ("Min")
        boxes = boxes[:ONET_CANDIDATES]
        if len(boxes):
            (regression, _landmarks, probabilities), kept = _stage(onet, pyramid, boxes, ONET_SIZE)
            score = probabilities[:, 1]
            passed = score > thresholds[2]
            found = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            boxes = bbreg(found, regression[passed])
            boxes = boxes[batched_nms_numpy(boxes[:, :4], boxes[:, 4], _one_image(boxes), NMS_LAST, "Min")]

        found = boxes.numpy()
        return found[:, :4], found[:, 4]

"""MTCNN's three stages as facenet-pytorch runs them, with the pixel work done the cheap way.

facenet-pytorch's ``detect_face`` resamples the whole (C, H, W) frame once per pyramid level and every
candidate's crop separately (``interpolate(mode="area")``, adaptive average pooling), and runs its
networks in torch. On a 720p frame on one core that was most of the detector's time, so here:

* the frame's rows are summed once into running sums; a level's or a crop's row windows then cost two
  rows each (``Pyramid``), its column windows a pooling along a leading axis (levels) or one sparse
  matrix product over all of a stage's crops side by side (``Pyramid.regions``): the same averages to
  float rounding (< 1e-4 of a pixel value); every level is made before PNet runs on any;
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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, pad, rerec
from torchvision.ops import nms

PNET_CELL = 12  # PNet's window: the pyramid's first scale maps min_face_size to it
PYRAMID_FACTOR = 0.709  # MTCNN's (and facenet-pytorch's) pyramid step
RNET_SIZE, ONET_SIZE = 24, 48
NMS_WITHIN_LEVEL, NMS_ACROSS, NMS_LAST = 0.5, 0.7, 0.7
MTCNN_MEAN, MTCNN_SCALE = 127.5, 0.0078125  # its input is (pixel - 127.5) / 128
REUSED_FRAME_PIXELS = 1920 * 1080  # frames up to 1080p reuse the detector's arrays; larger ones get their own
FLOAT32_INTEGERS = 2**24  # float32 holds every integer below this exactly
WORK_ELEMENTS = 2**22  # the most values a step's temporary holds (32 MB in float64), whatever the frame's size


def pyramid_scales(height: int, width: int, min_face_size: int) -> list[float]:
    """facenet-pytorch's scales: the first maps ``min_face_size`` to PNet's 12 px, each next x0.709,
    down to a 12 px short side."""
    scale = PNET_CELL / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= PNET_CELL:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
        shortest *= PYRAMID_FACTOR
    return scales


@functools.lru_cache(maxsize=4096)  # the frame's and the regions' sizes x a few outputs: a few MB at most
def pooling_windows(size: int, pooled: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive average pooling's windows along one axis, as torch computes them: output i averages
    inputs [floor(i * size / pooled), ceil((i + 1) * size / pooled)); cached, so read-only."""
    starts, ends = (bounds[0] for bounds in windows(np.array([size]), pooled))
    starts.flags.writeable = ends.flags.writeable = False
    return starts, ends


def _pool_leading_axis(values: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling of a contiguous (R, K) tensor along R to ``size``: (size, K).

    Viewed as one image of K channels, R rows and 1 column with the channels innermost, it runs on
    pooling's channels-last kernel, vectorised over the K values of each row."""
    rows, width = values.shape
    channels_last = values.view(1, rows, 1, width).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(channels_last, (size, 1))
    return pooled.permute(0, 2, 3, 1).reshape(size, width)


class Scratch:
    """Arrays reused from one frame to the next: a fresh multi-MB array costs page faults
    (~4 ms for a 720p frame's level sums, measured here), more than the work done in it."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array


class Pyramid:
    """MTCNN's image pyramid of one (H, W, C) uint8 frame: each level is ``interpolate(mode="area")`` of
    the whole frame, as facenet-pytorch makes it, normalised as MTCNN's networks expect.

    Adaptive average pooling is separable: a level's pixel is the average, over its window of columns,
    of the averages over its window of rows. The frame's rows are summed once into running sums
    (integers, exact in float32), so a level's row windows cost two rows each instead of reading the
    whole frame per level. Their differences are written transposed, columns first, and the columns
    pooled along that leading axis on vectorised rows. facenet-pytorch's path pooled the whole
    (C, H, W) frame once per level: ~2.5x slower on a 720p frame; the levels agree to float rounding
    (< 1e-4 of a pixel value).
    """

    def __init__(self, pixels: np.ndarray, scales: list[float], scratch: Scratch | None = None):
        own_arrays = scratch is None
        scratch = scratch or Scratch()
        height, width, channels = pixels.shape
        self.height, self.width, self.channels = height, width, channels
        self.sizes = [(int(height * scale + 1), int(width * scale + 1)) for scale in scales]
        dtype = np.float32 if height * 255 < FLOAT32_INTEGERS else np.float64  # integer sums stay exact
        running_sums = scratch.array("running sums", (height + 1, width * channels), dtype)
        running_sums[0] = 0
        np.copyto(running_sums[1:], pixels.reshape(height, width * channels))
        for row in range(1, height + 1):  # one vectorised add per row: faster here than cumsum along axis 0
            np.add(running_sums[row], running_sums[row - 1], out=running_sums[row])
        self._sums = torch.from_numpy(running_sums)
        largest = self.sizes[0][0] if self.sizes else 0  # the first scale is the largest
        self._rows_at_once = max(1, min(largest, WORK_ELEMENTS // (width * channels)))
        window_sums = scratch.array("window sums", (2 * self._rows_at_once, width * channels), dtype)
        self._window_sums = torch.from_numpy(window_sums)
        self._by_column = torch.from_numpy(scratch.array("by column", (width * largest * channels,), dtype))
        level_sizes = [channels * level_height * level_width for level_height, level_width in self.sizes]
        self._level_offsets = np.concatenate([[0], np.cumsum(level_sizes, dtype=np.int64)]).tolist()
        self._levels = (  # every level at once for the detector's reused arrays (up to 1080p), else one by one
            None if own_arrays else torch.from_numpy(scratch.array("levels", (self._level_offsets[-1],), np.float32))
        )

    def levels(self) -> Iterator[torch.Tensor]:
        """Every level, in order. With the detector's reused arrays all are made before PNet runs on any:
        made between PNet's runs, each evicted the other's data from the caches (a 720p frame's detection
        ~10% faster). A larger frame's levels are made one at a time, so that it holds one level's memory."""
        made = (self.level(index) for index in range(len(self.sizes)))
        return made if self._levels is None else iter(list(made))

    def level(self, index: int) -> torch.Tensor:
        """Level ``index`` normalised, as a contiguous (1, C, h, w) tensor (with reused arrays, its own
        part of them: valid until the next frame's pyramid reuses them)."""
        height, width = self.sizes[index]
        starts, ends = pooling_windows(self.height, height)
        frame_width, channels = self.width, self.channels
        by_column = self._by_column[: frame_width * height * channels].view(frame_width, height, channels)
        for first in range(0, height, self._rows_at_once):  # the rows' window sums, stored (W, h, C)
            last = min(height, first + self._rows_at_once)
            count = last - first
            window_sums = self._window_sums[: 2 * count]
            rows = torch.from_numpy(np.concatenate([ends[first:last], starts[first:last]]))
            torch.index_select(self._sums, 0, rows, out=window_sums)
            ending, starting = (
                window_sums[part].view(count, frame_width, channels) for part in (slice(0, count), slice(count, None))
            )
            torch.sub(ending, starting, out=by_column[:, first:last].transpose(0, 1))
        pooled = _pool_leading_axis(by_column.view(frame_width, height * channels), width).float()
        row_factors = torch.from_numpy((MTCNN_SCALE / (ends - starts)).astype(np.float32)).view(1, height, 1)
        level = pooled.view(width, height, channels).mul_(row_factors).sub_(MTCNN_MEAN * MTCNN_SCALE)
        first, last = self._level_offsets[index], self._level_offsets[index + 1]
        storage = torch.empty(last - first) if self._levels is None else self._levels[first:last]
        return storage.view(1, channels, height, width).copy_(level.permute(2, 1, 0).unsqueeze(0))

    def regions(self, boxes: list[tuple[int, int, int, int]], size: int) -> np.ndarray:
        """Each (top, bottom, left, right) region of the frame (rows [top, bottom), columns [left, right))
        ``interpolate(mode="area")``-resized to (size, size): a (K, C, size, size) float32 batch, made
        in groups of regions whose side-by-side rows hold at most WORK_ELEMENTS values."""
        group_width = max(1, WORK_ELEMENTS // (size * self.channels))
        groups: list[list[tuple[int, int, int, int]]] = [[]]
        width = 0
        for box in boxes:
            if groups[-1] and width + box[3] - box[2] > group_width:
                groups.append([])
                width = 0
            groups[-1].append(box)
            width += box[3] - box[2]
        return np.concatenate([self._regions(group, size) for group in groups])

    def _regions(self, boxes: list[tuple[int, int, int, int]], size: int) -> np.ndarray:
        """``regions`` of one group.

        A region's rows' sums come from the running sums (two rows per output row, whatever its
        height), written columns first, the regions one after another: (total width, size, C). Each
        output column then sums a run of those rows: one sparse (K x size, total width) matrix of ones
        times them (``column_windows``): 0.15 ms for 175 crops of a textured 720p frame, against 3.3 ms
        for ``add.reduceat`` along their columns. Integer sums, exact in float32 while a window's sum
        stays below 2**24, else in float64."""
        channels, sums = self.channels, self._sums.numpy()
        top, bottom, left, right = np.asarray(boxes, dtype=np.int64).reshape(-1, 4).T
        row_starts, row_ends = windows(bottom - top, size)  # (K, size) each
        column_starts, column_ends = windows(right - left, size)
        offsets = np.concatenate([[0], np.cumsum(right - left)]).tolist()
        row_counts, column_counts = row_ends - row_starts, column_ends - column_starts
        largest_window = int((row_counts.max(axis=1) * column_counts.max(axis=1)).max())
        exact = np.float32 if sums.dtype == np.float32 and largest_window * 255 < FLOAT32_INTEGERS else np.float64
        by_column = np.empty((offsets[-1], size, channels), dtype=exact)
        ending_rows, starting_rows = row_ends + top[:, None], row_starts + top[:, None]
        for k, (first, last) in enumerate(zip((left * channels).tolist(), (right * channels).tolist(), strict=True)):
            columns = sums[:, first:last]  # plain ints, rows indexed up front: less work per region
            np.subtract(
                columns[ending_rows[k]].reshape(size, -1, channels),
                columns[starting_rows[k]].reshape(size, -1, channels),
                out=by_column[offsets[k] : offsets[k + 1]].transpose(1, 0, 2),
            )
        sparse = column_windows(column_starts + np.array(offsets[:-1])[:, None], column_counts, offsets[-1], exact)
        window_sums = torch.sparse.mm(sparse, torch.from_numpy(by_column.reshape(offsets[-1], size * channels)))
        counts = column_counts[:, :, None] * row_counts[:, None, :]  # (K, size columns, size rows)
        means = window_sums.numpy().reshape(len(top), size, size, channels) / counts[..., None]
        return np.ascontiguousarray(means.transpose(0, 3, 2, 1), dtype=np.float32)


def windows(sizes: np.ndarray, pooled: int) -> tuple[np.ndarray, np.ndarray]:
    """``pooling_windows`` of several sizes at once: (len(sizes), pooled) starts and ends."""
    index = np.arange(pooled, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)[:, None]
    return index * sizes // pooled, ((index + 1) * sizes + pooled - 1) // pooled


def column_windows(starts: np.ndarray, counts: np.ndarray, width: int, dtype: type) -> torch.Tensor:
    """A sparse CSR (starts.size, width) matrix of ones: row i has ``counts.flat[i]`` ones from column
    ``starts.flat[i]`` on, so that multiplying by it sums each window of rows of the other operand."""
    counts, starts = counts.ravel(), starts.ravel()
    row_bounds = np.concatenate([[0], np.cumsum(counts)])
    columns = np.arange(row_bounds[-1]) - np.repeat(row_bounds[:-1] - starts, counts)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(row_bounds),
            torch.from_numpy(columns),
            torch.ones(len(columns), dtype=torch.float32 if dtype == np.float32 else torch.float64),
            size=(len(starts), width),
            check_invariants=True,  # a few microseconds: an index out of bounds raises instead of reading past
        )


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - MTCNN_MEAN) * MTCNN_SCALE  # MTCNN's input scaling, as facenet-pytorch applies it


def _stage_input(pyramid: Pyramid, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next stage's inputs for ``boxes``: facenet-pytorch's crops (its ``pad``, then rows [y - 1, ey)
    and columns [x - 1, ex) of the frame resized to ``size``), and which boxes had any pixels."""
    y, ey, x, ex = pad(boxes, pyramid.width, pyramid.height)
    kept = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    if not kept:
        return torch.zeros((0, pyramid.channels, size, size)), torch.zeros(0, dtype=torch.int64)
    crops = pyramid.regions([(y[k] - 1, ey[k], x[k] - 1, ex[k]) for k in kept], size)
    return _normalised(torch.from_numpy(crops)), torch.as_tensor(kept, dtype=torch.int64)


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
            found = _candidates(regression.numpy(), probabilities.numpy(), scale, thresholds[0])
            candidates.append(found[nms(found[:, :4], found[:, 4], NMS_WITHIN_LEVEL)])
        boxes = torch.cat(candidates)
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

        # second stage: RNet on 24 px crops
        if len(boxes):
            crops, kept = _stage_input(pyramid, boxes, RNET_SIZE)
            regression, probabilities = rnet(crops)
            score = probabilities[:, 1]
            passed = score > thresholds[1]
            boxes = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            regression = regression[passed]
            pick = nms(boxes[:, :4], boxes[:, 4], NMS_ACROSS)
            boxes = rerec(bbreg(boxes[pick], regression[pick]))

        # third stage: ONet on 48 px crops, then NMS by the smaller box's area ("Min")
        if len(boxes):
            crops, kept = _stage_input(pyramid, boxes, ONET_SIZE)
            regression, _landmarks, probabilities = onet(crops)
            score = probabilities[:, 1]
            passed = score > thresholds[2]
            found = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            boxes = bbreg(found, regression[passed])
            boxes = boxes[batched_nms_numpy(boxes[:, :4], boxes[:, 4], _one_image(boxes), NMS_LAST, "Min")]

        found = boxes.numpy()
        return found[:, :4], found[:, 4]

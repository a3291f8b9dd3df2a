"""MTCNN's three stages, with the image pyramid resampled along one axis at a time.

facenet-pytorch's ``detect_face`` builds each pyramid level with ``interpolate(mode="area")``
(adaptive average pooling) of the whole (C, H, W) frame: on a 720p frame on one core that was half of
the detector's time (docs/benchmark.md, section 8). An adaptive average over a window of rows x columns
is the average over its rows of the averages over its columns: pooling the rows, then the columns,
gives the same level (to float rounding, < 1e-4 of a pixel value). Each pass runs on a layout whose
innermost axis is long (a row's 3 x W values, then a level column's 3 x h values), which adaptive
pooling's channels-last kernel vectorises, where the (C, H, W) pass runs on 3 channels: 2.5x faster.
Everything else follows ``detect_face`` step for step with facenet-pytorch's own networks and helpers
(the thresholds, the NMS steps, the box regression, the crops of the second and third stages): tests
hold the boxes to its path within 0.01 px and the scores within 1e-4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch.models.utils.detect_face import (
    batched_nms,
    batched_nms_numpy,
    bbreg,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)

PNET_CELL = 12  # PNet's window: the pyramid's first scale maps min_face_size to it
PYRAMID_FACTOR = 0.709  # MTCNN's (and facenet-pytorch's) pyramid step
RNET_SIZE, ONET_SIZE = 24, 48
NMS_WITHIN_LEVEL, NMS_ACROSS, NMS_LAST = 0.5, 0.7, 0.7


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


def _pool_leading_axis(values: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive average pooling of a contiguous (R, K) tensor along R to ``size``: (size, K).

    Viewed as one image of K channels, R rows and 1 column with the channels innermost, it runs on
    pooling's channels-last kernel, vectorised over the K values of each row."""
    rows, width = values.shape
    channels_last = values.view(1, rows, 1, width).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(channels_last, (size, 1))
    return pooled.permute(0, 2, 3, 1).reshape(size, width)


def pyramid_level(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``interpolate(mode="area")`` of an (H, W, C) float frame to (height, width), as a (1, C, h, w)
    tensor stored (w, h, C): its rows pooled, then its columns."""
    rows, columns, channels = pixels.shape
    pooled_rows = _pool_leading_axis(pixels.view(rows, columns * channels), height)  # (h, W * C)
    by_column = pooled_rows.view(height, columns, channels).transpose(0, 1).reshape(columns, height * channels)
    pooled = _pool_leading_axis(by_column, width)  # (w, h * C)
    return pooled.view(width, height, channels).permute(2, 1, 0).unsqueeze(0)


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125  # MTCNN's input scaling, as facenet-pytorch applies it


def _stage_input(frame: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next stage's inputs for ``boxes``: facenet-pytorch's crops (its ``pad``, then rows [y - 1, ey)
    and columns [x - 1, ex) of the (H, W, C) float frame resized to ``size``), and which boxes had any
    pixels."""
    height, width = frame.shape[:2]
    y, ey, x, ex = pad(boxes, width, height)
    kept = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    planar = frame.permute(2, 0, 1).unsqueeze(0)  # a (1, C, H, W) view: each crop is pooled as stored
    crops = [imresample(planar[:, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]], (size, size)) for k in kept]
    batch = torch.cat(crops) if crops else frame.new_zeros((0, frame.shape[2], size, size))
    return _normalised(batch), torch.as_tensor(kept, dtype=torch.int64)


def _one_image(boxes: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(boxes), dtype=torch.int64)  # batched_nms's image index: one image


REUSED_FRAME_PIXELS = 1920 * 1080  # frames up to 1080p share one float copy; larger ones get their own


class Mtcnn:
    """facenet-pytorch's three MTCNN networks and thresholds, run by ``detect``; not for concurrent
    calls: it reuses one float copy of the frame (a fresh 11 MB one per 720p frame cost page faults),
    for frames up to REUSED_FRAME_PIXELS, so one huge upload leaves no huge buffer behind."""

    def __init__(self, pnet: Any, rnet: Any, onet: Any, min_face_size: int, thresholds: tuple[float, float, float]):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self._frame = torch.empty(0)

    def _float_frame(self, pixels: np.ndarray) -> torch.Tensor:
        if pixels.shape[0] * pixels.shape[1] > REUSED_FRAME_PIXELS:
            return torch.from_numpy(pixels.astype(np.float32))
        if self._frame.shape != pixels.shape:
            self._frame = torch.empty(pixels.shape, dtype=torch.float32)
        np.copyto(self._frame.numpy(), pixels)
        return self._frame

    def detect(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [x1, y1, x2, y2] (N, 4) and scores (N,) of the faces in one (H, W, 3) uint8 frame, as
        facenet-pytorch's ``detect_face`` finds them."""
        frame = self._float_frame(pixels)
        height, width = frame.shape[:2]
        thresholds = self.thresholds

        # first stage: PNet over the pyramid, NMS within each level, then across the levels
        candidates = []
        for scale in pyramid_scales(height, width, self.min_face_size):
            level = _normalised(pyramid_level(frame, int(height * scale + 1), int(width * scale + 1)))
            regression, probabilities = self.pnet(level)
            found, image_index = generateBoundingBox(regression, probabilities[:, 1], scale, thresholds[0])
            candidates.append(found[batched_nms(found[:, :4], found[:, 4], image_index, NMS_WITHIN_LEVEL)])
        if not candidates:  # smaller than min_face_size: no level to look at
            return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32)
        boxes = torch.cat(candidates)
        boxes = boxes[batched_nms(boxes[:, :4], boxes[:, 4], _one_image(boxes), NMS_ACROSS)]
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
            crops, kept = _stage_input(frame, boxes, RNET_SIZE)
            regression, probabilities = self.rnet(crops)
            score = probabilities[:, 1]
            passed = score > thresholds[1]
            boxes = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            regression = regression[passed]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], _one_image(boxes), NMS_ACROSS)
            boxes = rerec(bbreg(boxes[pick], regression[pick]))

        # third stage: ONet on 48 px crops, then NMS by the smaller box's area ("Min")
        if len(boxes):
            crops, kept = _stage_input(frame, boxes, ONET_SIZE)
            regression, _landmarks, probabilities = self.onet(crops)
            score = probabilities[:, 1]
            passed = score > thresholds[2]
            found = torch.cat((boxes[kept][passed, :4], score[passed].unsqueeze(1)), dim=1)
            boxes = bbreg(found, regression[passed])
            boxes = boxes[batched_nms_numpy(boxes[:, :4], boxes[:, 4], _one_image(boxes), NMS_LAST, "Min")]

        found = boxes.numpy()
        return found[:, :4], found[:, 4]

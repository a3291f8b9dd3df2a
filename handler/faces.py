"""Face-crop mode: find the faces, crop each with a margin, classify the crops.

Detectors of the field (FaceForensics++, Celeb-DF, DFDC pipelines) are trained on face crops: the
face found by MTCNN or RetinaFace, its box squared and widened by a margin, then resized. Served on
whole frames such a checkpoint sees mostly background. ``crop_images`` is the one cropping function:
the handler, training and evaluation call it, so a checkpoint sees at serving time exactly what it
was trained on. ``crop: full`` (the default, the original app's behaviour) keeps the whole image.

The detector is MTCNN from facenet-pytorch: its weights ship inside the wheel (no download), it found
every test face and no false one; ``handler.mtcnn`` runs its stages ~2x faster than facenet-pytorch's
own path with the same boxes (docs/benchmark.md, section 8).
The alternatives need model files their wheels do not carry here (checked: mediapipe 1.2.3 ships no
face detector model, opencv-python-headless 5.0 neither Haar cascades nor YuNet), and no model
can be downloaded at serving time.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from deepfake_contract import NO_FACE_STATUS, NO_FACE_TYPE
from handler.preprocessing import InvalidImageError, to_rgb
from handler.settings import DEFAULT_MIN_FACE_SIZE, ModelSettings

if TYPE_CHECKING:
    from handler.mtcnn import Mtcnn


class NoFaceError(InvalidImageError):
    """A face-crop archive found no face in the image: HTTP 422 "NoFace" (deepfake_contract), a defined
    answer, not a verdict."""

    status = NO_FACE_STATUS
    error_type = NO_FACE_TYPE


@dataclass(frozen=True)
class Face:
    """One detected face: its box [x1, y1, x2, y2] in the image's pixels, and the detector's score."""

    box: tuple[float, float, float, float]
    score: float


def stage_thresholds(threshold: float) -> tuple[float, float, float]:
    """MTCNN's three stage thresholds for a ``face_threshold``: candidates scoring 0.7 and 0.8 pass the
    first two stages (at most ``threshold``), faces scoring ``threshold`` the last."""
    return min(0.7, threshold), min(0.8, threshold), threshold


# A decoded RGB image, or its (H, W, 3) uint8 pixels (preprocessing.decode_pixels: what a face-crop worker decodes
# a request's image to, the detector reading the array and the crops cut from it)
Frame = Image.Image | np.ndarray


_MTCNN_LOCK = threading.Lock()  # one MTCNN per process and setting, not meant for concurrent calls


class FaceDetector:
    """MTCNN (facenet-pytorch, weights in its wheel), loaded once per process on first use.

    Faces smaller than ``min_face_size`` pixels are not looked for: MTCNN's image pyramid then starts
    at a smaller scale, ~2x faster on a 720p frame at 40 px than at MTCNN's default 20 (and a 40 px
    face blown up to 224 px shows the classifier little anyway). Its first two stages keep candidates
    scoring 0.7 and 0.8 (MTCNN's defaults: 0.6, 0.7), the last ``threshold``: on a textured 720p frame
    a third faster, with every test face still found (measured in docs/benchmark.md).

    The same boxes as facenet-pytorch's own ``MTCNN.detect`` (to 1e-3 px), faster on a 720p frame:
    ``handler.mtcnn`` resamples the pyramid and the crops from the frame's integral image (compiled by
    numba) and runs the three networks compiled by OpenVINO (measured in docs/benchmark.md, section 8).
    """

    def __init__(self, threshold: float, max_faces: int, min_face_size: int = DEFAULT_MIN_FACE_SIZE):
        self.threshold = threshold
        self.max_faces = max_faces
        self.min_face_size = min_face_size

    @staticmethod
    @functools.cache
    def _mtcnn(min_face_size: int, threshold: float) -> Mtcnn:  # facenet_pytorch is imported only in face mode
        from facenet_pytorch import MTCNN

        from handler.mtcnn import Mtcnn, compiled_networks

        nets = MTCNN(device="cpu")
        return Mtcnn(*compiled_networks(nets.pnet, nets.rnet, nets.onet), min_face_size, stage_thresholds(threshold))

    def detect(self, image: Frame) -> list[Face]:
        """The faces scoring at least ``threshold``, most certain first, at most ``max_faces``."""
        pixels = image if isinstance(image, np.ndarray) else np.asarray(to_rgb(image))  # not convert("RGB"): a copy
        with _MTCNN_LOCK:  # Mtcnn.detect runs in inference mode
            boxes, scores = self._mtcnn(self.min_face_size, self.threshold).detect(pixels)
        return self._keep(boxes, scores)

    def _keep(self, boxes: np.ndarray, scores: np.ndarray) -> list[Face]:
        faces = [
            Face(_box4(round(float(v), 2) for v in box), float(score))  # the box the answer reports
            for box, score in zip(boxes, scores, strict=True)
            if score >= self.threshold
        ]
        return sorted(faces, key=lambda face: -face.score)[: self.max_faces]


Region = tuple[int, int, int, int]  # [left, top, right, bottom] in the image's pixels


def frame_size(frame: Frame) -> tuple[int, int]:
    """(width, height), as PIL's ``size``."""
    return (frame.shape[1], frame.shape[0]) if isinstance(frame, np.ndarray) else frame.size


def crop(frame: Frame, region: Region) -> Image.Image:
    """``region`` of the frame as an image: ``image.crop(region)``'s pixels, for a region inside the frame."""
    if isinstance(frame, np.ndarray):
        left, top, right, bottom = region
        return Image.fromarray(frame[top:bottom, left:right])
    return frame.crop(region)


def _box4(values: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = values
    return x1, y1, x2, y2


def crop_box(box: tuple[float, float, float, float], margin: float, width: int, height: int) -> Region:
    """The square around ``box``, its side ``margin`` x the box's longer side, moved inside the image
    where it fits, and cut at the image's border where it does not."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * margin
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = cx - side / 2, cy - side / 2
    left = min(max(left, 0.0), max(width - side, 0.0))
    top = min(max(top, 0.0), max(height - side, 0.0))
    right, bottom = min(left + side, width), min(top + side, height)
    return round(left), round(top), max(round(right), round(left) + 1), max(round(bottom), round(top) + 1)


def crop_regions(
    image: Frame, settings: ModelSettings, detector: FaceDetector | None = None
) -> list[tuple[Face | None, Region]]:
    """The regions of ``image`` the classifier sees, as [left, top, right, bottom]: the whole image
    (``crop: full``), or one square per face (``crop: face``; none when there is no face)."""
    size = frame_size(image)
    if settings.crop == "full":
        return [(None, (0, 0, *size))]
    detector = detector or detector_for(settings)
    return [(face, crop_box(face.box, settings.face_margin, *size)) for face in detector.detect(image)]


def crop_images(
    image: Frame, settings: ModelSettings, detector: FaceDetector | None = None
) -> list[tuple[Face | None, Image.Image]]:
    """What the classifier sees of ``image``: the image itself (``crop: full``), or one crop per face
    (``crop: face``; an empty list when there is none)."""
    if settings.crop == "full":
        return [(None, image if isinstance(image, Image.Image) else Image.fromarray(image))]
    return [(face, crop(image, region)) for face, region in crop_regions(image, settings, detector)]


def detector_for(settings: ModelSettings) -> FaceDetector:
    return FaceDetector(settings.face_threshold, settings.max_faces, settings.min_face_size)


def no_face_error(settings: ModelSettings, image: Frame) -> NoFaceError:
    width, height = frame_size(image)
    return NoFaceError(
        f"no face found in the {width}x{height} image (detection threshold {settings.face_threshold:g}); "
        "this archive classifies faces (crop: face)"
    )

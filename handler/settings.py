"""Per-archive model settings: normalisation, labels, calibration.

One handler serves checkpoints trained with different conventions, so everything that differs
between them lives here and is packed into the archive's ``model-config.yaml`` (``handler:``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from deepfake_contract import DEFAULT_INPUT_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
DEFAULT_LABELS = ("Real", "Fake")
DEFAULT_ALPHA = 6.0  # the original app's hand-picked logit-margin scale
IMAGE_SIZE = DEFAULT_INPUT_SIZE
PRECISIONS = ("fp32", "bf16", "int8")  # what handler.runtimes can run, most exact first
CROPS = ("full", "face")  # what the classifier sees: the whole image (the original app), or each face
DEFAULT_FACE_MARGIN = 1.3  # the crop is the detector's box, squared and scaled by this (DFDC-style)
DEFAULT_FACE_THRESHOLD = 0.9  # faces the detector is less sure of are ignored
DEFAULT_MAX_FACES = 4  # the most likely faces of an image that are classified
DEFAULT_MIN_FACE_SIZE = 40  # pixels: smaller faces are not looked for (detection ~2x faster on 720p than at 20)


class SettingsError(ValueError):
    """A model setting is missing, malformed or inconsistent."""


def _floats(name: str, values: Any, length: int) -> tuple[float, ...]:
    if isinstance(values, str):
        values = [v for v in values.replace(" ", "").split(",") if v]
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be {length} numbers, got {values!r}") from None
    if len(result) != length:
        raise SettingsError(f"{name} must be {length} numbers, got {len(result)}: {values!r}")
    return result


def _labels(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        values = values.split(",")
    labels = tuple(str(v).strip() for v in values)
    if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
        raise SettingsError(f"labels must be two distinct names (index 0, index 1), got {values!r}")
    return labels


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"{name} must be a positive number, got {value!r}")
    return number


@dataclass(frozen=True)
class ModelSettings:
    """How to feed a checkpoint and read its two logits."""

    arch: str = "auto"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    labels: tuple[str, str] = DEFAULT_LABELS
    fake_label: str = "Fake"
    temperature: float = 1.0
    alpha: float = DEFAULT_ALPHA
    image_size: int = IMAGE_SIZE
    precision: str = "fp32"  # the runtime mode the archive was built for (scripts/operations/archive.py)
    jpeg_draft: bool = False  # decode large JPEGs at a reduced scale (faster, not pixel-exact)
    crop: str = "full"  # "face": detect faces and classify each crop (checkpoints trained on face crops)
    face_margin: float = DEFAULT_FACE_MARGIN
    face_threshold: float = DEFAULT_FACE_THRESHOLD
    max_faces: int = DEFAULT_MAX_FACES
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    # What every answer's reader must know about the model, e.g. that it is the demo (scripts/operations/archive.py)
    notice: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats("mean", self.mean, 3))
        std = _floats("std", self.std, 3)
        if any(s <= 0 for s in std):
            raise SettingsError(f"std values must be positive, got {std}")
        object.__setattr__(self, "std", std)
        labels = _labels(self.labels)
        object.__setattr__(self, "labels", labels)
        fake = [label for label in labels if label.lower() == str(self.fake_label).strip().lower()]
        if not fake:
            raise SettingsError(f"fake_label {self.fake_label!r} is not one of labels {labels}")
        object.__setattr__(self, "fake_label", fake[0])
        object.__setattr__(self, "temperature", _positive("temperature", self.temperature))
        object.__setattr__(self, "alpha", _positive("alpha", self.alpha))
        object.__setattr__(self, "arch", str(self.arch).lower())
        if int(self.image_size) < 32:
            raise SettingsError(f"image_size must be at least 32, got {self.image_size}")
        object.__setattr__(self, "image_size", int(self.image_size))
        precision = str(self.precision).lower()
        if precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "jpeg_draft", str(self.jpeg_draft).lower() in ("true", "1", "yes"))
        crop = str(self.crop).lower()
        if crop not in CROPS:
            raise SettingsError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        object.__setattr__(self, "crop", crop)
        margin = _positive("face_margin", self.face_margin)
        if margin < 1:
            raise SettingsError(f"face_margin must be at least 1 (the detector's box itself), got {margin}")
        object.__setattr__(self, "face_margin", margin)
        threshold = _positive("face_threshold", self.face_threshold)
        if threshold >= 1:
            raise SettingsError(f"face_threshold must lie between 0 and 1, got {threshold}")
        object.__setattr__(self, "face_threshold", threshold)
        if int(self.max_faces) < 1:
            raise SettingsError(f"max_faces must be at least 1, got {self.max_faces}")
        object.__setattr__(self, "max_faces", int(self.max_faces))
        if int(self.min_face_size) < 12:  # MTCNN's smallest window
            raise SettingsError(f"min_face_size must be at least 12 pixels, got {self.min_face_size}")
        object.__setattr__(self, "min_face_size", int(self.min_face_size))
        object.__setattr__(self, "notice", str(self.notice or "").strip())

    @property
    def fake_index(self) -> int:
        return self.labels.index(self.fake_label)

    @classmethod
    def setting_names(cls) -> set[str]:
        """The setting names an archive or settings file may carry."""
        return set(cls.__dataclass_fields__) - {"extra"}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ModelSettings:
        """Build from the archive's ``handler:`` section; unknown keys are kept in ``extra``."""
        values = dict(values or {})
        kwargs = {k: values.pop(k) for k in list(values) if k in cls.setting_names()}
        if "fake_label" not in kwargs and "labels" in kwargs:
            labels = _labels(kwargs["labels"])  # no "Fake" among them: index 1 means fake
            kwargs["fake_label"] = next((x for x in labels if x.lower() == "fake"), labels[1])
        return cls(**kwargs, extra=values)

    def to_mapping(self) -> dict[str, Any]:
        """Plain, YAML/JSON-friendly form (what the archive records)."""
        data = asdict(self)
        extra = data.pop("extra")
        for key in ("mean", "std", "labels"):
            data[key] = list(data[key])
        return {**data, **extra}

"""Archive-time runtime artefacts: the OpenVINO IR for a precision mode, checked against fp32.

``scripts/operations/archive.py`` calls ``build_runtime`` with the checkpoint's torch model. fp32 and bf16
share the float32 IR (bf16 is an execution precision); int8 is that IR quantized by NNCF on
calibration images. Every mode other than fp32 is compared with fp32 on held-out images the
calibration never saw: the default mode must agree on >= 99% of labels with a mean |fake
probability difference| <= 0.02, or the next more exact mode is tried, saying why. A mode the
user names is honoured, with a warning when it misses that bar.
"""

from __future__ import annotations

import io
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handler.calibration import CHECK_FOLDER, CHECK_IMAGES, MAX_MEAN_FAKE_PROBABILITY_DIFF, MIN_LABEL_AGREEMENT
from handler.calibration import agreement as measure_agreement
from handler.runtimes import (
    IR_FILES,
    MORE_EXACT,
    OpenVINORuntime,
    RuntimeInfo,
    cpu_capabilities,
    plan_precision,
    save_openvino,
    to_openvino,
)
from handler.service import DetectorService
from handler.settings import PRECISIONS, ModelSettings
from scripts import IMAGE_SUFFIXES

DEFAULT_PRECISION = "int8"  # fastest mode that agreed with fp32 on both demo models (docs/benchmark.md)
CALIBRATION_LIMIT = 300  # NNCF's default subset size
HELD_OUT_LIMIT = 200
GENERATED_PER_SPLIT = 64  # images per split when neither CALIBRATION_IMAGES nor the demo data exist


class PrecisionError(ValueError):
    """Calibration images are missing or unusable."""


@dataclass
class ImageSets:
    """Calibration and held-out images (encoded bytes), and where they came from."""

    source: str
    calibration: list[bytes]
    held_out: list[bytes]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _generated(count: int, first_seed: int) -> list[bytes]:
    from scripts.synthetic.scenes import make_image

    images = []
    for i in range(count):
        buffer = io.BytesIO()
        make_image([7, first_seed + i], fake=i % 2 == 1).save(buffer, format="JPEG", quality=92)
        images.append(buffer.getvalue())
    return images


def own_demo_images(weights: Path) -> Path | None:
    """The demo's own images when ``weights`` is a demo build (scripts/build_demo lays out <out>/model/*.pth
    beside <out>/data/images/{val,test}); None for any other checkpoint."""
    images = Path(weights).resolve().parent.parent / "data" / "images"
    return images if (images / "val").is_dir() and (images / "test").is_dir() else None


def default_precision(calibration_images: Path | None, own_images: Path | None) -> tuple[str, str | None]:
    """int8 when there are images of the model's own domain to calibrate it on (CALIBRATION_IMAGES, or a
    demo model's own data); else bf16 (fp32 on a CPU without BF16), and the line that says how to get int8."""
    if calibration_images is not None or own_images is not None:
        return DEFAULT_PRECISION, None
    fallback, _ = plan_precision("bf16", cpu_capabilities())
    return fallback, (
        f"{fallback}, not int8: int8 is calibrated on images of the model's own domain, and none were given. "
        "For int8, pass them: make mar WEIGHTS=... CALIBRATION_IMAGES=path/to/images (or --calibration-images)"
    )


def image_sets(folder: Path | None = None, demo_images: Path | None = None) -> ImageSets:
    """CALIBRATION_IMAGES split in two (a fixed shuffle), else a demo model's own val/test images, else generated
    demo-style ones (only for a mode asked for by name: they are not the model's domain)."""
    if folder is not None:
        files = _image_files(Path(folder))
        if len(files) < 20:
            raise PrecisionError(f"{folder}: {len(files)} images found; int8 calibration needs at least 20")
        random.Random(0).shuffle(files)
        held = min(HELD_OUT_LIMIT, len(files) // 3)
        held_out, calibration = files[:held], files[held : held + CALIBRATION_LIMIT]
        source = f"CALIBRATION_IMAGES={folder} ({len(calibration)} to calibrate, {held} held out, never calibrated on)"
        return ImageSets(source, [p.read_bytes() for p in calibration], [p.read_bytes() for p in held_out])
    if demo_images is not None and (demo_images / "val").is_dir() and (demo_images / "test").is_dir():
        calibration = _image_files(demo_images / "val")
        held_out = _image_files(demo_images / "test")
        random.Random(0).shuffle(calibration)
        random.Random(1).shuffle(held_out)
        calibration, held_out = calibration[:CALIBRATION_LIMIT], held_out[:HELD_OUT_LIMIT]
        source = f"demo images in {demo_images} ({len(calibration)} val to calibrate, {len(held_out)} test held out)"
        return ImageSets(source, [p.read_bytes() for p in calibration], [p.read_bytes() for p in held_out])
    source = (
        f"{2 * GENERATED_PER_SPLIT} generated demo-style images (no CALIBRATION_IMAGES given): give images of "
        "your model's domain with CALIBRATION_IMAGES=folder for a faithful int8 model"
    )
    return ImageSets(source, _generated(GENERATED_PER_SPLIT, 0), _generated(GENERATED_PER_SPLIT, 10_000))


def agreement(reference: DetectorService, candidate: DetectorService, images: list[bytes]) -> dict[str, Any]:
    """handler.calibration.agreement of two services on ``images`` (decoded the reference's way)."""
    batch = torch.stack([reference.decode(image) for image in images])
    settings = reference.settings
    return measure_agreement(reference.logits(batch), candidate.logits(batch), settings.temperature,
                             settings.fake_index)  # fmt: skip


def quantize_int8(fp32_model: Any, calibration: list[np.ndarray]) -> Any:
    """NNCF post-training quantization of the float32 OpenVINO model.

    Full bias correction instead of NNCF's fast one, and the 2-way classifier head left in float
    (the only MatMul of a ResNet; too small to matter for speed): on the benchmark's ResNet50 these
    halved the mean |fake probability difference| from fp32 (0.061 -> 0.030) and brought label
    agreement from 97.5% to 100%, for twice the quantization time (~30 s).
    """
    import nncf

    if os.environ.get("DEEPFAKE_VERBOSE", "") in ("", "0"):  # its INFO lines mean nothing to a user (scripts/__init__)
        nncf.set_log_level(logging.WARNING)
    return nncf.quantize(
        fp32_model,
        nncf.Dataset(calibration),
        subset_size=len(calibration),
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(types=["MatMul"]),
    )


@dataclass
class RuntimeBuild:
    """The chosen mode, its files (to pack in the archive), and the record of how it was chosen."""

    precision: str
    files: list[Path]
    report: dict[str, Any]


def build_runtime(
    model: torch.nn.Module,
    settings: ModelSettings,
    out_dir: Path,
    precision: str | None = None,
    calibration_images: Path | None = None,
    log: Callable[[str], None] = print,
    own_images: Path | None = None,
) -> RuntimeBuild:
    """Build the IR for ``precision`` into ``out_dir``. None: int8 when there are images of the model's own
    domain (``calibration_images``, or ``own_images``: a demo model's data), else bf16 (default_precision);
    any mode but fp32 is verified against fp32."""
    explicit = precision is not None
    notes = []
    if precision is None:
        precision, why = default_precision(calibration_images, own_images)
        if why:
            log(f"Precision: {why}")
            notes.append(why)
    requested = precision
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    fp32_model = to_openvino(model, settings.image_size)
    report: dict[str, Any] = {"requested": requested, "explicit": explicit, "agreement": {}, "notes": notes}
    candidate, chosen_model = requested, fp32_model
    if candidate != "fp32":
        images = image_sets(calibration_images, own_images)
        report["images"] = images.source
        log(f"Precision check images: {images.source}")
        reference = DetectorService(OpenVINORuntime(fp32_model, RuntimeInfo("openvino", "fp32", "fp32")), settings)
        while candidate != "fp32":
            if candidate == "int8":
                inputs = [reference.decode(image).unsqueeze(0).numpy() for image in images.calibration]
                chosen_model = quantize_int8(fp32_model, inputs)
            else:
                chosen_model = fp32_model
            runtime = OpenVINORuntime(chosen_model, RuntimeInfo("openvino", candidate, requested))
            measured = agreement(reference, DetectorService(runtime, settings), images.held_out)
            report["agreement"][candidate] = measured
            ran, lacking = plan_precision(candidate, cpu_capabilities())
            if ran != candidate:  # OpenVINO runs a bf16 hint in f32 on a CPU without BF16, silently
                measured["ran_as"] = ran
                note = (
                    f"{candidate} could not be checked on this CPU ({lacking}): the check ran in {ran}. Workers on a "
                    f"CPU without it run {ran}; on one with it, {candidate} runs unchecked: build there to check it"
                )
                report["notes"].append(note)
                log(note)
            summary = (
                f"{candidate} vs fp32 on {measured['images']} held-out images: labels agree "
                f"{measured['label_agreement']:.2%}, mean |fake probability diff| "
                f"{measured['mean_abs_fake_probability_diff']:.4f}"
            )
            if measured["passes"]:
                log(f"{summary}: within the bar")
                break
            bar = f"(bar: >= {MIN_LABEL_AGREEMENT:.0%} and <= {MAX_MEAN_FAKE_PROBABILITY_DIFF})"
            if measured["degenerate"]:
                summary += (
                    f", but fp32 gives one class to {measured['reference_one_class_share']:.0%} of these images, "
                    "so agreement shows nothing (an untrained checkpoint, or images not of its domain)"
                )
            if explicit:
                note = f"WARNING: {summary} misses the bar {bar}; keeping {candidate} because it was asked for"
                report["notes"].append(note)
                log(note)
                break
            note = f"{summary} misses the bar {bar}: falling back to {MORE_EXACT[candidate]}"
            report["notes"].append(note)
            log(note)
            candidate = MORE_EXACT[candidate]
            chosen_model = fp32_model
    report["chosen"] = candidate
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_openvino(chosen_model, out_dir / IR_FILES[candidate])
    files = [path, path.with_suffix(".bin")]
    if requested != "fp32":  # a GPU worker runs this archive in half precision: it checks it on these first
        files.append(check_folder(out_dir / CHECK_FOLDER, images.held_out[:CHECK_IMAGES]))
    return RuntimeBuild(candidate, files, report)


def check_folder(folder: Path, images: list[bytes]) -> Path:
    """Held-out images, as given (encoded), for the half-precision check of a GPU worker."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        (folder / f"{index:03d}.img").write_bytes(image)
    return folder

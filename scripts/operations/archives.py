"""Archives as a library: the sidecar files beside a checkpoint, packing and reading a TorchServe
archive (``model_store/<name>.mar``), the model card it carries. ``archive.py`` is its command line.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from deepfake_contract import DEFAULT_MODEL, ContractError, ModelCard
from handler.checkpoint import load_model, read_state_dict
from handler.service import MODEL_CARD_KEY, DetectorService, settings_from_model_config
from handler.settings import (
    ModelSettings,
    SettingsError,
)
from scripts import REPO_ROOT
from scripts.operations.precision import build_runtime, own_demo_images

HANDLER_DIR = REPO_ROOT / "handler"
CONTRACT_DIR = REPO_ROOT / "contract" / "deepfake_contract"  # packed beside the handler: it imports it
WEIGHTS_NAME = "model_weights.pth"

# Batching: 8 frames fill a batch while one video is analysed (the client keeps 16 requests in
# flight). TorchServe waits at most MAX_BATCH_DELAY_MS for a batch to fill; a lone request pays
# all of it. Measured for each value in docs/benchmark.md ("maxBatchDelay").
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_BATCH_DELAY_MS = 5
# Whole images: one worker runs a lone request on every core; on 2 cores two workers of one thread each
# served a crowd 1.04-1.12x as fast across runs, at twice the memory and with a slower lone request
# (docs/benchmark.md section 12).
DEFAULT_WORKERS = 1
# Face crop: MTCNN works one image at a time through many small steps that use one core well and two
# poorly. Two workers of one thread each (handler.runtimes.share_cores) found faces 1.5x faster than one
# worker of two threads on 2 cores, and the 60 s face clip ran ~1.4x faster end to end (docs/benchmark.md).
DEFAULT_FACE_WORKERS = 2


def training_settings_file(weights: Path) -> Path:
    """Where train.py writes a checkpoint's settings: ``<stem>.json`` next to it."""
    return weights.with_name(f"{weights.stem}.json")


def calibration_file(weights: Path) -> Path:
    """Where calibrate.py writes a checkpoint's temperature: ``<stem>.calibration.json`` next to it."""
    return weights.with_name(f"{weights.stem}.calibration.json")


def sidecar_files(weights: Path, calibration: bool = True) -> list[Path]:
    """Settings written next to the weights, those present (later files win)."""
    files = [training_settings_file(weights)] + ([calibration_file(weights)] if calibration else [])
    return [path for path in files if path.is_file()]


DEMO_NOTICE = "demo model (synthetic scenes): not a detector for real faces"


def settings_from_files(paths: list[Path]) -> dict[str, Any]:
    """Merge settings JSON files (written by train.py / calibrate.py); later files win."""
    merged: dict[str, Any] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        merged.update(data.get("settings", data))
    return {k: v for k, v in merged.items() if k in ModelSettings.setting_names()}


def model_config(settings: ModelSettings, batch_size: int, max_batch_delay: int, workers: int) -> dict:
    return {
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": batch_size,
        "maxBatchDelay": max_batch_delay,
        "responseTimeout": 120,
        "handler": settings.to_mapping(),
    }


def pack_archive(
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    model_name: str,
    export_path: Path,
    version: str = "1.0",
    runtime_files: Sequence[Path] = (),
) -> Path:
    """Write the archive as is (no validation): the state dict, model-config.yaml, the handler
    package and the runtime's files (both land at the archive's root, TorchServe's model_dir)."""
    export_path.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    if not archiver.exists():
        raise FileNotFoundError(f"torch-model-archiver not found next to {sys.executable}")
    with tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        stage = Path(tmp)
        package_root = stage / "code"  # its content (the handler package) lands in the archive root
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(HANDLER_DIR, package_root / "handler", ignore=ignore)
        shutil.copytree(CONTRACT_DIR, package_root / "deepfake_contract", ignore=ignore)
        for path in runtime_files:  # the IR, and the check images' folder
            if path.is_dir():
                shutil.copytree(path, package_root / path.name)
            else:
                shutil.copy2(path, package_root / path.name)
        torch.save(state, stage / WEIGHTS_NAME)  # the clean state dict: smaller, weights-only
        config_path = stage / "model-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        (export_path / f"{model_name}.mar").unlink(missing_ok=True)  # replaced, without the archiver's warning
        command = [
            str(archiver),
            "--model-name", model_name,
            "--version", version,
            "--serialized-file", str(stage / WEIGHTS_NAME),
            "--handler", str(HANDLER_DIR / "deepfake_handler.py"),
            "--extra-files", str(package_root),
            "--config-file", str(config_path),
            "--export-path", str(export_path),
            "--force",
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return export_path / f"{model_name}.mar"


def default_workers(settings: ModelSettings) -> int:
    return DEFAULT_FACE_WORKERS if settings.crop == "face" else DEFAULT_WORKERS


def read_card(path: Path) -> dict[str, Any]:
    """A model card file (YAML or JSON, ModelCard's fields), checked against the contract."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        ModelCard.from_json(data)
    except (OSError, yaml.YAMLError, ContractError) as exc:
        raise SettingsError(f"model card {path}: {exc}") from None
    return data


def archive_card(weights: Path, settings: ModelSettings, report: dict[str, Any], given: dict[str, Any]) -> ModelCard:
    """The card an archive carries: what ``make mar`` knows (classes, calibration, the precision check), a demo
    build's own record (data, held-out metrics, intended use, limits), then what the user's card file says."""
    known: dict[str, Any] = {"classes": list(settings.labels)}
    known["calibration"] = f"temperature {settings.temperature:.4g} (alpha {settings.alpha:.4g})" + (
        "" if settings.temperature != 1.0 else "; not calibrated (T = 1)"
    )
    chosen = report.get("chosen")
    measured = report.get("agreement", {}).get(chosen)
    known["precision_check"] = (
        f"{chosen}: labels agree with fp32 on {measured['label_agreement']:.2%} of {measured['images']} held-out "
        f"images, mean |fake probability difference| {measured['mean_abs_fake_probability_diff']:.4f}"
        if measured
        else f"{chosen}: the checkpoint's own arithmetic (fp32)"
    )
    demo = own_demo_images(weights)
    if demo is not None:
        known.update(demo_card(demo.parent.parent))
    return ModelCard.from_json({**known, **given})


def demo_card(demo: Path) -> dict[str, Any]:
    """What the demo's own build recorded (scripts/demo/build_demo.py): its data, its held-out metrics."""
    card: dict[str, Any] = {
        "trained_on": "synthetic outdoor scenes from scripts/demo/make_demo_data.py: 'fake' ones have their subject "
        "re-synthesised with planted generator traces (up-sampling, a checkerboard, a colour/noise mismatch, a seam)",
        "intended_use": "showing the pipeline end to end: training, calibration, the archive, batched serving, the "
        "video verdict",
        "limits": "it detects the synthetic traces make_demo_data plants, not real face swaps: every real photo may "
        "be called fake; never use it on real media",
    }
    manifest, evaluation = demo / "data" / "manifest.json", demo / "evaluation.json"
    if manifest.is_file():
        counts = json.loads(manifest.read_text())["images"]["train"]
        card["training_images"] = sum(counts.values())
    if evaluation.is_file():
        images = json.loads(evaluation.read_text()).get("images", {})
        card["held_out"] = {k: images[k] for k in ("accuracy", "auc", "eer", "ece") if k in images}
    return card


def build_archive(
    weights: Path,
    settings: ModelSettings,
    model_name: str = DEFAULT_MODEL,
    export_path: Path = REPO_ROOT / "model_store",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS,
    workers: int | None = None,
    precision: str | None = None,
    calibration_images: Path | None = None,
    model_card: Path | None = None,
) -> tuple[Path, ModelSettings]:
    """Validate the checkpoint with the server's own loader, build the runtime for ``precision``
    (None: the verified default), then write ``<model_name>.mar`` (``workers`` None: the crop mode's
    default)."""
    state = read_state_dict(weights)
    model, arch = load_model(state, arch=settings.arch)
    settings = dataclasses.replace(settings, arch=arch)
    with tempfile.TemporaryDirectory(prefix="runtime-") as tmp:
        own_images = own_demo_images(weights)
        if own_images is not None and not settings.notice:  # the demo model: every answer says what it is
            settings = dataclasses.replace(settings, notice=DEMO_NOTICE)
        build = build_runtime(model, settings, Path(tmp), precision, calibration_images, own_images=own_images)
        card = archive_card(weights, settings, build.report, read_card(model_card) if model_card else {})
        extra = {**settings.extra, "precision_report": build.report, MODEL_CARD_KEY: card.to_json()}
        settings = dataclasses.replace(settings, precision=build.precision, extra=extra)
        config = model_config(settings, batch_size, max_batch_delay, workers or default_workers(settings))
        return pack_archive(state, config, model_name, export_path, runtime_files=build.files), settings


def load_archive(archive: Path, into: Path | None = None) -> DetectorService:
    """The model core exactly as a TorchServe worker builds it from ``archive``: the same artefacts,
    settings and runtime. Unpacked into ``into``, or a temporary folder removed once the runtime and
    the explainer's fp32 model are loaded (they hold the model in memory from then on)."""
    if into is None:
        with tempfile.TemporaryDirectory(prefix="unpacked-") as tmp:
            service = load_archive(archive, Path(tmp))
            if service.grad_cam is not None:
                service.grad_cam.get()  # a worker loads it on its first explanation: its folder stays
            return service
    with zipfile.ZipFile(archive) as mar:
        mar.extractall(into)
    settings = settings_from_model_config(yaml.safe_load((Path(into) / "model-config.yaml").read_text()))
    return DetectorService.from_model_dir(Path(into), WEIGHTS_NAME, settings)

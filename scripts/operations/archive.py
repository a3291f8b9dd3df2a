"""Pack any compatible ResNet checkpoint into a TorchServe archive (``model_store/<name>.mar``).

    python -m scripts.operations.archive --weights best_ResNet18.pth --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5

The checkpoint is loaded here with the same code the server uses, so a checkpoint that does not
fit fails now, with one clear message, instead of crash-looping a worker later. The archive
records every setting (architecture, normalisation, labels, T, alpha, precision) in
model-config.yaml, and carries the OpenVINO IR of its precision mode (``scripts/operations/precision.py``) next
to the checkpoint, which stays the source of truth.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from deepfake_contract import DEFAULT_MODEL
from handler.checkpoint import CheckpointError
from handler.settings import (
    CROPS,
    DEFAULT_FACE_MARGIN,
    DEFAULT_FACE_THRESHOLD,
    DEFAULT_MAX_FACES,
    DEFAULT_MIN_FACE_SIZE,
    PRECISIONS,
    ModelSettings,
    SettingsError,
)
from scripts.operations.archives import (
    CONTRACT_DIR,
    DEFAULT_BATCH_SIZE,
    DEFAULT_FACE_WORKERS,
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_WORKERS,
    HANDLER_DIR,
    REPO_ROOT,
    build_archive,
    settings_from_files,
    sidecar_files,
)
from scripts.operations.precision import DEFAULT_PRECISION, PrecisionError, own_demo_images


def resolve_settings(args: argparse.Namespace) -> ModelSettings:
    files = args.settings_file if args.settings_file is not None else sidecar_files(args.weights)
    for path in files:
        print(f"Settings from {path}")
    values = settings_from_files(files)
    trained_crop = values.get("crop")
    if args.crop is not None and trained_crop is not None and str(trained_crop).lower() != args.crop:
        fed = "face crops" if args.crop == "face" else "whole images"
        print(
            f"WARNING: CROP={args.crop}, but these weights were trained with crop {trained_crop} (settings from "
            f"{', '.join(map(str, files))}): the server will feed the model {fed}, which it never saw in training"
        )
    keys = ("arch", "mean", "std", "labels", "fake_label", "temperature", "alpha", "jpeg_draft",
            "crop", "face_margin", "face_threshold", "max_faces", "min_face_size")  # fmt: skip
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    return ModelSettings.from_mapping(values)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, type=Path, help="checkpoint (.pth) to serve")
    parser.add_argument("--model-name", default=DEFAULT_MODEL, help="name in the URL /predictions/<name>")
    parser.add_argument("--export-path", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument(
        "--settings-file",
        type=Path,
        action="append",
        default=None,
        help="JSON written by train.py or calibrate.py (repeatable; flags override). Default: <weights>.json "
        "and <weights>.calibration.json next to the weights, when present",
    )
    parser.add_argument("--arch", default=None, help="auto (default: read from the weights) or resnet18..152")
    parser.add_argument("--mean", default=None, help="normalisation mean, e.g. 0.5,0.5,0.5 (default ImageNet)")
    parser.add_argument("--std", default=None, help="normalisation std, e.g. 0.5,0.5,0.5 (default ImageNet)")
    parser.add_argument("--labels", default=None, help="class names by index (default Real,Fake)")
    parser.add_argument("--fake-label", default=None, help="which label means fake (default: 'Fake')")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature T (default 1.0)")
    parser.add_argument("--alpha", type=float, default=None, help="adjusted-confidence scale (default 6.0)")
    parser.add_argument(
        "--jpeg-draft",
        action="store_const",
        const=True,
        default=None,
        help="decode large JPEG uploads at reduced scale: faster, not pixel-exact (deviation: docs/benchmark.md)",
    )
    parser.add_argument(
        "--crop",
        choices=CROPS,
        default=None,
        help="what the model classifies: full (the whole image, default) or face (each detected face, cropped "
        "with a margin: for checkpoints trained on face crops)",
    )
    face_options = (  # the face detector's settings: unset, the archive keeps the defaults shown
        ("--face-margin", float, "box x this", DEFAULT_FACE_MARGIN),
        ("--face-threshold", float, "detector score needed", DEFAULT_FACE_THRESHOLD),
        ("--max-faces", int, "faces per image", DEFAULT_MAX_FACES),
        ("--min-face-size", int, "smallest face looked for, px", DEFAULT_MIN_FACE_SIZE),
    )
    for option, kind, meaning, default in face_options:
        parser.add_argument(option, type=kind, default=None, help=f"face crop: {meaning} (default {default})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--max-batch-delay", type=int, default=DEFAULT_MAX_BATCH_DELAY_MS, help="ms")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"TorchServe workers, sharing the cores (default {DEFAULT_WORKERS}; with --crop face "
        f"{DEFAULT_FACE_WORKERS})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help=f"runtime mode; default: {DEFAULT_PRECISION} when there are images of the model's domain to calibrate "
        "it on (--calibration-images, or a demo model's own data) and it agrees with fp32 on held-out ones, else "
        "bf16; a mode that misses the bar falls back to the next more exact one. A mode named here is kept even "
        "when it misses that bar (with a warning)",
    )
    parser.add_argument(
        "--calibration-images",
        type=Path,
        default=None,
        help="images of the model's domain (any folder tree) for int8 calibration; a third is held out to check "
        "agreement with fp32. Default: none (a demo model: its own data)",
    )
    parser.add_argument(
        "--model-card",
        type=Path,
        default=None,
        help="a YAML or JSON model card (trained_on, training_images, held_out, intended_use, limits, ...) packed "
        "with the archive; make mar fills classes, calibration and the precision check itself",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="build the archive even when one built from the same inputs (weights, settings, calibration images, "
        "code) is already there",
    )
    return parser


def inputs_digest(args: argparse.Namespace, settings: ModelSettings) -> str:
    """What an archive is built from, hashed: the weights, the resolved settings and archive options, the
    calibration images (names, sizes, times) and the code that builds and serves it. The same digest means
    the same archive, so `make mar` (and a repeat `make run`) need not build it again."""
    digest = hashlib.sha256()
    digest.update(Path(args.weights).read_bytes())
    options = {
        "settings": settings.to_mapping(),
        **{key: getattr(args, key) for key in ("model_name", "batch_size", "max_batch_delay", "workers", "precision")},
    }
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    if args.model_card is not None:
        digest.update(Path(args.model_card).read_bytes())
    for folder in (args.calibration_images, own_demo_images(args.weights)):
        if folder is not None and Path(folder).is_dir():
            for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    code = sorted(HANDLER_DIR.rglob("*.py")) + sorted(HANDLER_DIR.rglob("*.yaml")) + sorted(CONTRACT_DIR.rglob("*.py"))
    scripts = REPO_ROOT / "scripts"
    tools = [*sorted((scripts / "operations").glob("*.py")), scripts / "synthetic" / "scenes.py"]
    for path in [*code, *tools]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def digest_file(export_path: Path, model_name: str) -> Path:
    return Path(export_path) / f"{model_name}.mar.inputs"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        settings = resolve_settings(args)
        digest = inputs_digest(args, settings)
        recorded = digest_file(args.export_path, args.model_name)
        existing = Path(args.export_path) / f"{args.model_name}.mar"
        if not args.force and existing.is_file() and recorded.is_file() and recorded.read_text().strip() == digest:
            print(f"{existing} is up to date: its weights, settings, calibration images and code are unchanged "
                  "(--force, or make mar FORCE=1, rebuilds it)")  # fmt: skip
            return 0
        recorded.unlink(missing_ok=True)
        path, settings = build_archive(
            args.weights, settings, args.model_name, args.export_path,
            args.batch_size, args.max_batch_delay, args.workers, args.precision, args.calibration_images,
            args.model_card,
        )  # fmt: skip
    except (CheckpointError, SettingsError, PrecisionError, FileNotFoundError, json.JSONDecodeError) as exc:
        print(f"archive: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"archive: torch-model-archiver failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    recorded.write_text(digest + "\n")
    print(
        f"Wrote {path} ({settings.arch}, mean={list(settings.mean)}, std={list(settings.std)}, "
        f"labels={list(settings.labels)}, T={settings.temperature}, alpha={settings.alpha}, "
        f"precision={settings.precision}, crop={settings.crop})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the softmax temperature T on a validation folder (temperature scaling, Guo et al. 2017).

    python -m scripts.modeling.calibrate --weights runs/r18/best_ResNet18.pth --data path/val

T minimises the negative log-likelihood of softmax(logits / T) on held-out data. For two classes
the original app's adjusted confidence sigmoid(|margin| / alpha) is that same softmax, so the
equivalent alpha is T itself. Writes ``<weights>.calibration.json`` next to the weights, where
``make mar`` / ``scripts.operations.archive`` pick it up, and prints NLL, accuracy and ECE (15 bins) before
and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from handler.calibration import calibration_metrics, fit_temperature
from handler.checkpoint import CheckpointError, load_model
from handler.settings import ModelSettings, SettingsError
from scripts.modeling.data import LabelledImages, collect_logits, labelled_files
from scripts.operations.archives import calibration_file, settings_from_files, sidecar_files

T_RANGE = (0.05, 20.0)  # beyond these a fit says more about the calibration set than the model


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Fit T by NLL; refuse the degenerate fits a separable calibration set produces."""
    notes = []
    if bool((logits.argmax(1) == labels).all()):
        # No mistake to learn from: NLL keeps falling as T -> 0 (certainty everywhere), so the
        # "optimum" would make every later mistake maximally confident.
        temperature = 1.0
        notes.append(
            "every calibration image is classified correctly, so T cannot be estimated (the NLL falls "
            "without bound as T -> 0); kept T = 1.0. Use a larger or harder validation set."
        )
    else:
        fitted = fit_temperature(logits, labels)
        temperature = min(max(fitted, T_RANGE[0]), T_RANGE[1])
        if temperature != fitted:
            notes.append(f"fitted T = {fitted:.4g} is outside {T_RANGE}; clamped to {temperature:g}")
    return {
        "settings": {"temperature": temperature, "alpha": temperature},
        "before": calibration_metrics(logits, labels, 1.0),
        "after": calibration_metrics(logits, labels, temperature),
        "samples": len(labels),
        "notes": notes,
        "method": "temperature scaling (NLL), Guo et al. 2017; alpha = T for two classes",
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="validation folder, one subfolder per label")
    parser.add_argument(
        "--settings-file",
        type=Path,
        action="append",
        default=None,
        help="settings JSON (default: train.py's <weights>.json next to the weights)",
    )
    parser.add_argument("--mean", help="override the normalisation mean")
    parser.add_argument("--std", help="override the normalisation std")
    parser.add_argument("--labels", help="override the label order, e.g. Real,Fake")
    parser.add_argument("--out", type=Path, help="default: <weights stem>.calibration.json")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(get_args_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """What the command line does, from its options (``scripts.options`` builds them for a caller)."""
    out = args.out or calibration_file(args.weights)
    try:
        files = args.settings_file if args.settings_file is not None else sidecar_files(args.weights, calibration=False)
        values = settings_from_files(files)
        values.update({k: v for k in ("mean", "std", "labels") if (v := getattr(args, k)) is not None})
        settings = ModelSettings.from_mapping(values)
        model, _ = load_model(args.weights, arch=settings.arch)
        dataset = LabelledImages(labelled_files(args.data, settings.labels), settings)
    except (CheckpointError, SettingsError, FileNotFoundError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    logits, labels = collect_logits(model, dataset, args.batch_size)  # float32, as served
    result = calibrate(logits, labels)
    out.write_text(json.dumps(result, indent=2))
    before, after = result["before"], result["after"]
    print(f"Calibrated on {result['samples']} images from {args.data}")
    print(f"{'':8}{'T':>8}{'NLL':>10}{'accuracy':>10}{'ECE':>10}")
    for name, row in (("before", before), ("after", after)):
        print(f"{name:8}{row['temperature']:8.4f}{row['nll']:10.4f}{row['accuracy']:10.4f}{row['ece']:10.4f}")
    for note in result["notes"]:
        print(f"Note: {note}")
    print(f"T = {after['temperature']:.4f}; equivalent alpha = {after['temperature']:.4f} (original app: 6.0)")
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Lay out an archive the way KServe's TorchServe runtime reads it (``make kserve-bundle``).

    python -m scripts.operations.kserve_bundle --archive model_store/deepfake.mar --out artifacts/kserve-bundle

    <out>/config/config.properties   deploy/kserve/config.properties + this archive's model_snapshot
    <out>/config/metrics.yaml        the metrics configuration the archive carries (handler/metrics.yaml)
    <out>/model-store/<model>.mar    the archive itself

Copy <out> to the storage of deploy/kserve/inferenceservice.yaml's storageUri; KServe's storage
initializer puts it at /mnt/models. The batch settings come from the archive's own
model-config.yaml, so the bundle serves exactly what ``make mar`` built.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from scripts import REPO_ROOT

DEPLOY_DIR = REPO_ROOT / "deploy" / "kserve"
CONFIG_TEMPLATE = DEPLOY_DIR / "config.properties"
MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's content
# What KServe's TorchServe runtime sets in the container for protocolVersion v2 (the bundle's
# config ignores environment overrides; the tests start TorchServe with these to prove it).
KSERVE_ENVIRONMENT = {"TS_SERVICE_ENVELOPE": "kservev2", "PROTOCOL_VERSION": "v2"}


class BundleError(ValueError):
    """The archive cannot be bundled (not a TorchServe archive, or missing its settings)."""


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(manifest model entry, model-config.yaml, metrics.yaml text) of a .mar built by scripts/operations/archive.py."""
    try:
        with zipfile.ZipFile(archive) as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]
            config = yaml.safe_load(mar.read(manifest.get("configFile", "model-config.yaml")))
            metrics = mar.read("handler/metrics.yaml").decode()
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BundleError(f"{archive}: not an archive built by scripts/operations/archive.py ({exc})") from None
    return manifest, config, metrics


def model_snapshot(manifest: dict[str, Any], config: dict[str, Any], mar_name: str) -> dict[str, Any]:
    """TorchServe's model_snapshot: what it loads at start, with the archive's own batch settings (every
    archive make mar builds sets them all; no second copy of their defaults here)."""
    entry: dict[str, Any] = {"defaultVersion": True, "marName": mar_name}
    for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout"):
        if key not in config:
            raise BundleError(f"{mar_name}: its model-config.yaml sets no {key}; build it with make mar")
        entry[key] = int(config[key])
    version = manifest.get("modelVersion", "1.0")
    return {"name": "startup.cfg", "modelCount": 1, "models": {manifest["modelName"]: {version: entry}}}


def build_bundle(archive: Path, out: Path, template: Path = CONFIG_TEMPLATE) -> Path:
    """Write the bundle for ``archive`` into ``out`` (replacing an earlier one) and return ``out``."""
    manifest, config, metrics = read_archive(archive)
    mar_name = f"{manifest['modelName']}.mar"
    shutil.rmtree(out, ignore_errors=True)
    (out / "config").mkdir(parents=True)
    (out / "model-store").mkdir()
    shutil.copy2(archive, out / "model-store" / mar_name)
    (out / "config" / "metrics.yaml").write_text(metrics)
    snapshot = json.dumps(model_snapshot(manifest, config, mar_name), separators=(",", ":"))
    text = template.read_text().rstrip("\n")
    (out / "config" / "config.properties").write_text(f"{text}\nmodel_snapshot={snapshot}\n")
    return out


def bundle_models(bundle: Path) -> dict[str, str]:
    """Model name -> archive file, from the bundle's model_snapshot."""
    text = (bundle / "config" / "config.properties").read_text()
    match = re.search(r"^model_snapshot=(.+)$", text, re.MULTILINE)
    if not match:
        raise BundleError(f"{bundle}: config.properties has no model_snapshot")
    models = json.loads(match.group(1))["models"]
    return {name: next(iter(versions.values()))["marName"] for name, versions in models.items()}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=REPO_ROOT / "model_store" / "deepfake.mar")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "artifacts" / "kserve-bundle")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        out = build_bundle(args.archive, args.out)
    except BundleError as exc:
        print(f"kserve_bundle: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {out} for {', '.join(bundle_models(out))}:")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(out)} ({os.path.getsize(path) / 1e6:.1f} MB)")
    print(
        f"Copy it to the storageUri of {DEPLOY_DIR.relative_to(REPO_ROOT)}/inferenceservice.yaml (see docs/deploy.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

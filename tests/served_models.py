"""The archives the session's TorchServe serves, and the checkpoints the tests make.

Built in a process of their own (``python -m tests.served_models ROOT``), started with the session so
that it runs while the first tests do (conftest's ``_in_background``); the fixture reads what it built
from ``ROOT/served.pickle``."""

from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from handler.checkpoint import build_model
from handler.settings import HALF_MEAN, HALF_STD, IMAGENET_MEAN, IMAGENET_STD, ModelSettings
from scripts.operations.archives import build_archive

# Archives served by the session's TorchServe: name -> (arch, normalisation, precision; None = default).
SERVED_MODELS = {
    "deepfake": ("resnet18", "half", "int8"),  # like the original app: ResNet18, mean/std 0.5; int8 as the demo
    "r18_imagenet": ("resnet18", "imagenet", "fp32"),
    "r18_bf16": ("resnet18", "imagenet", "bf16"),
    "r34_half": ("resnet34", "half", "fp32"),
    "r34_imagenet": ("resnet34", "imagenet", "fp32"),
    "r50_half": ("resnet50", "half", "fp32"),
    "r50_imagenet": ("resnet50", "imagenet", "fp32"),
    "constant": ("resnet18", "half", "fp32"),  # zero weights, fc bias = CONSTANT_LOGITS
    "faces": ("resnet18", "half", "fp32"),  # crop: face (FACE_MODEL_SETTINGS)
}
CONSTANT_LOGITS = (0.25, 1.75)
CONSTANT_SETTINGS = {"temperature": 2.0, "alpha": 3.0}
EXTRA_SETTINGS = {"constant": CONSTANT_SETTINGS, "faces": {"crop": "face"}}
NORMALISATIONS = {"half": (HALF_MEAN, HALF_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
BUILT = "served.pickle"  # what build_store leaves in its root for the fixture


def random_checkpoint(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A randomly initialised 2-class ResNet with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_model(arch, 2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def constant_checkpoint(logits: tuple[float, float] = CONSTANT_LOGITS) -> dict[str, torch.Tensor]:
    """A ResNet18 whose output is always ``logits``: exact expectations for every number."""
    state = {k: torch.zeros_like(v) for k, v in build_model("resnet18", 2).state_dict().items()}
    state["fc.bias"] = torch.tensor(logits)
    return state


@dataclass
class ServedModel:
    name: str
    weights: Path
    settings: ModelSettings
    archive: Path


def build_store(root: Path) -> dict[str, ServedModel]:
    """Every SERVED_MODELS checkpoint saved in ``root`` and archived into ``root/store``, as the
    archive tool builds it (precision, agreement check, model card)."""
    store = root / "store"
    served = {}
    for seed, (name, (arch, norm, precision)) in enumerate(SERVED_MODELS.items()):
        state = constant_checkpoint() if name == "constant" else random_checkpoint(arch, seed)
        weights = root / f"{name}.pth"
        torch.save(state, weights)
        mean, std = NORMALISATIONS[norm]
        settings = ModelSettings(mean=mean, std=std, **EXTRA_SETTINGS.get(name, {}))
        archive, settings = build_archive(weights, settings, name, store, precision=precision)
        served[name] = ServedModel(name, weights, settings, archive)
    return served


def read_store(root: Path) -> dict[str, ServedModel]:
    """What ``python -m tests.served_models root`` built."""
    with (root / BUILT).open("rb") as built:
        return pickle.load(built)  # written by this test suite's own process, just before


if __name__ == "__main__":
    from tests import served_models  # pickled under the name the tests import it by, not __main__

    out = Path(sys.argv[1])
    (out / BUILT).write_bytes(pickle.dumps(served_models.build_store(out)))

"""Load user checkpoints into a torchvision ResNet with a 2-class head.

Users bring checkpoints saved in many ways (bare state dicts, ``{"state_dict": ...}`` wrappers,
``module.`` prefixes from DataParallel) and mislabelled ones (the original app's
``best_ResNet50.pth`` was a ResNet18), so the architecture is read from the weights' shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# Blocks per stage and block type for each torchvision ResNet.
RESNET_LAYOUTS: dict[str, tuple[tuple[int, int, int, int], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}
SUPPORTED_ARCHS = tuple(RESNET_LAYOUTS)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
PREFIXES = ("module.", "model.", "_orig_mod.")


class CheckpointError(ValueError):
    """The checkpoint cannot be served as a 2-class ResNet."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (weights only) and return a clean state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zips, non-weights objects
        if pickled := re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc)):
            raise CheckpointError(
                f"{path} pickles a Python object ({pickled.group(1)}), not just weights; loading it could run "
                "arbitrary code, so it is refused. Save the weights instead: torch.save(model.state_dict(), path)"
            ) from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path} as a weights-only PyTorch checkpoint: {first_line}") from None
    return clean_state_dict(loaded, source=str(path))


def clean_state_dict(loaded: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap training wrappers and strip DataParallel/compile prefixes."""
    state = loaded
    for _ in range(3):  # nested wrappers such as {"model": {"state_dict": ...}}
        if isinstance(state, Mapping):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
                continue
        break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source} holds no state dict (found {type(loaded).__name__})")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors; keys: {sorted(state)[:8]}")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


def infer_architecture(state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """Return (torchvision ResNet name, number of classes) from the tensor shapes."""
    if "conv1.weight" not in state or "fc.weight" not in state:
        sample = ", ".join(sorted(state)[:5])
        raise CheckpointError(f"not a torchvision ResNet state dict (no conv1.weight/fc.weight; first keys: {sample})")
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        blocks.append(max(indices) + 1 if indices else 0)
    kind = "bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "basic"
    layout = (tuple(blocks), kind)
    arch = next((name for name, spec in RESNET_LAYOUTS.items() if spec == layout), None)
    if arch is None:
        raise CheckpointError(
            f"unsupported ResNet layout: {kind} blocks per stage {blocks}; supported: {', '.join(SUPPORTED_ARCHS)}"
        )
    return arch, int(state["fc.weight"].shape[0])


def build_model(arch: str, num_classes: int = 2) -> nn.Module:
    """A randomly initialised torchvision ResNet with a ``num_classes`` head."""
    if arch not in RESNET_LAYOUTS:
        raise CheckpointError(f"unknown arch {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
    # imported here: torchvision imports torch._dynamo (~1.3 s), which a worker serving OpenVINO's IR never needs
    from torchvision import models

    return getattr(models, arch)(weights=None, num_classes=num_classes)


def load_model(
    source: str | Path | Mapping[str, torch.Tensor], arch: str = "auto", num_classes: int = 2
) -> tuple[nn.Module, str]:
    """Load a checkpoint into an eval-mode ResNet; return (model, resolved arch).

    Any mismatch (architecture, head size, missing or unexpected keys) fails here with one
    message naming it, rather than at the first request.
    """
    state = source if isinstance(source, Mapping) else read_state_dict(source)
    detected, classes = infer_architecture(state)
    if arch not in ("auto", "", None) and arch != detected:
        raise CheckpointError(f"arch {arch!r} was requested but the checkpoint's weights are a {detected}")
    if classes != num_classes:
        raise CheckpointError(
            f"checkpoint has a {classes}-class fc head (fc.weight {tuple(state['fc.weight'].shape)}); "
            f"this server needs {num_classes} classes (Real/Fake)"
        )
    model = build_model(detected, num_classes)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys ({', '.join(unexpected[:4])})")
    if wrong_shape:
        problems.append(f"shape mismatch ({'; '.join(wrong_shape[:3])})")
    if problems:
        raise CheckpointError(f"checkpoint does not fit torchvision {detected}: " + ", ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval(), detected

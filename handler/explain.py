"""Explanations: where in an image the classifier sees manipulation (Grad-CAM of the fake logit).

Grad-CAM (Selvaraju et al., 2017) weighs the last convolutional block's activation maps by the mean
gradient of the fake logit over each map, and keeps the positive part. Chosen over Captum's pixel
attributions (Integrated Gradients, SmoothGrad) for three reasons measured or read here:

* cost: one forward and one backward pass per image; Integrated Gradients needs ~50 of each
  (docs/benchmark.md has the measured cost);
* it is class-discriminative and passes the model-randomisation sanity check of Adebayo et al.
  (2018), where plain gradients and guided back-propagation fail it (tests/test_demo.py runs the
  check on the demo model);
* its map is small (14x14 cells for a ResNet at 224 px): a couple of KB an answer, drawn over the
  image by the client (``deepfake_client.overlay``).

On a torchvision ResNet the map is taken on ``layer3``, the last block at 1/16 of the input, not on
``layer4`` (1/32, 7x7 cells), the usual Grad-CAM layer: on 100 held-out demo fakes with known
manipulated regions (chance 11%), the peak of layer4's map fell inside the region 11%, 68% and 69% of
the time for three demo ResNet18s trained alike (bf16 seeds 0 and 1, fp32), layer3's 78%, 94% and 97%.
A 7x7 cell spans 32 px, and the region (~1/10 of the image) is about five of them: too coarse to hold
the peak steadily. The backward pass then runs through layer4 too (docs/benchmark.md, section 9: the
cost of an explanation).

The map is computed from the archive's fp32 weights whatever precision serves predictions (an int8
OpenVINO graph has no gradients): loaded on the first explanation, so a worker that never explains
holds no second copy of the model. The prediction beside it is the served one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def target_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The layer the maps are taken on: ``layer3`` of a torchvision ResNet (the module docstring says why),
    else the last Conv2d."""
    layer3 = getattr(model, "layer3", None)
    if isinstance(layer3, nn.Module) and isinstance(getattr(model, "layer4", None), nn.Module):
        return "layer3", layer3
    convolutions = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convolutions:
        raise ValueError("the model has no convolutional layer to explain")
    return convolutions[-1]


class GradCam:
    """Grad-CAM heatmaps of one logit for batches of model inputs."""

    def __init__(self, model: nn.Module, target_index: int):
        self.model = model.float().eval()
        self.target_index = target_index
        self.layer_name, self.layer = target_layer(self.model)
        self._lock = threading.Lock()  # hooks are per model: one explanation at a time

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) model inputs -> (N, h, w) maps in [0, 1]; all zeros where nothing drives the logit."""
        captured: list[torch.Tensor] = []
        with self._lock:
            handle = self.layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    logits = self.model(batch.detach().clone().float())
                    activations = captured[-1]
                    (gradients,) = torch.autograd.grad(logits[:, self.target_index].sum(), activations)
            finally:
                handle.remove()
        with torch.no_grad():
            weights = gradients.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * activations).sum(dim=1))
            peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
            maps = torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))
        return maps.cpu().numpy().astype(np.float32)


class LazyGradCam:
    """A GradCam built on first use from ``load`` (the fp32 model): workers that never explain never load it."""

    def __init__(self, load: Callable[[], nn.Module], target_index: int):
        self._load = load
        self._target_index = target_index
        self._built: GradCam | None = None
        self._lock = threading.Lock()

    def get(self) -> GradCam:
        with self._lock:
            if self._built is None:
                self._built = GradCam(self._load(), self._target_index)
            return self._built

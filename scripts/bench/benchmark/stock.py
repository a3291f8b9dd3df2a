"""Section 3's peer: TorchServe's stock ``ImageClassifier`` (a ``topk = 2`` subclass) archived on the same
weights, inputs and batch settings.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from handler.checkpoint import RESNET_LAYOUTS, load_model
from scripts.bench.benchmark.harness import MODEL_NAME, Subject
from scripts.operations.archives import (
    DEFAULT_BATCH_SIZE,
)

STOCK_MODEL = '''"""torchvision {arch} with a 2-class head, for TorchServe's --model-file."""
from torchvision.models.resnet import {block}, ResNet


class StockResNet(ResNet):
    def __init__(self):
        super().__init__({block}, {layers}, num_classes=2)
'''


STOCK_HANDLER = '''"""TorchServe's stock image classifier, answering both classes."""
from ts.torch_handler.image_classifier import ImageClassifier


class TwoClassImageClassifier(ImageClassifier):
    topk = 2
'''


def stock_archive(subject: Subject, store: Path, max_batch_delay: int) -> Path:
    """The peer a user would try first: ImageClassifier on the same weights and batch settings."""
    layers, kind = RESNET_LAYOUTS[subject.arch]
    block = "Bottleneck" if kind == "bottleneck" else "BasicBlock"
    with tempfile.TemporaryDirectory(prefix="stock-") as tmp:
        stage = Path(tmp)
        (stage / "stock_model.py").write_text(STOCK_MODEL.format(arch=subject.arch, block=block, layers=list(layers)))
        (stage / "stock_handler.py").write_text(STOCK_HANDLER)
        torch.save(load_model(subject.weights)[0].state_dict(), stage / "weights.pth")
        config = {"minWorkers": 1, "maxWorkers": 1, "batchSize": DEFAULT_BATCH_SIZE, "maxBatchDelay": max_batch_delay}
        (stage / "model-config.yaml").write_text(yaml.safe_dump(config))
        store.mkdir(parents=True, exist_ok=True)
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        command = [
            str(archiver), "--model-name", MODEL_NAME, "--version", "1.0",
            "--model-file", str(stage / "stock_model.py"), "--serialized-file", str(stage / "weights.pth"),
            "--handler", str(stage / "stock_handler.py"), "--config-file", str(stage / "model-config.yaml"),
            "--export-path", str(store), "--force",
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return store / f"{MODEL_NAME}.mar"

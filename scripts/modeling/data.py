"""Labelled image folders and batched logits, shared by train, calibrate and evaluate.

Images go through the handler's own ``decode_image``, ``crop_regions`` (face-crop mode) and
``to_model_input``, so what a model sees here is exactly what it sees behind TorchServe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from handler.faces import crop_regions, detector_for
from handler.preprocessing import decode_image, to_model_input
from handler.settings import ModelSettings
from scripts import IMAGE_SUFFIXES


def labelled_files(root: Path, labels: Sequence[str], suffixes: set[str] = IMAGE_SUFFIXES) -> list[tuple[Path, int]]:
    """(file, label index) for ``root/<label>/**``; folder names match labels case-insensitively.

    Label order comes from ``labels`` (index 0 = Real by default), never from the alphabet:
    torchvision's ImageFolder would make "fake" index 0 and silently swap the classes.
    """
    root = Path(root)
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    missing = [label for label in labels if label.lower() not in folders]
    if missing:
        found = ", ".join(sorted(folders)) or "nothing"
        raise FileNotFoundError(
            f"{root} needs one folder per label ({', '.join(labels)}); missing {missing}, found {found}"
        )
    items = []
    for index, label in enumerate(labels):
        files = sorted(p for p in folders[label.lower()].rglob("*") if p.suffix.lower() in suffixes)
        if not files:
            raise FileNotFoundError(f"{folders[label.lower()]} holds no files ({', '.join(sorted(suffixes))})")
        items += [(p, index) for p in files]
    return items


class LabelledImages(Dataset):
    """Images with labels; ``augment`` (PIL -> PIL) runs before the shared preprocessing.

    With ``crop: face`` each image stands for its most certain face, cropped by the handler's own
    ``crop_regions`` (found once, here; images without a face are left out and counted in
    ``no_face``), so a model trains on exactly the crops the server will show it.
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        settings: ModelSettings,
        augment: Callable[[Image.Image], Image.Image] | None = None,
    ):
        self.settings = settings
        self.augment = augment
        self.items: list[tuple[Path, int, tuple[int, ...] | None]] = []
        self.no_face: list[Path] = []
        detector = detector_for(settings) if settings.crop == "face" else None
        for path, label in items:
            if detector is None:
                self.items.append((path, label, None))
                continue
            regions = crop_regions(decode_image(path.read_bytes()), settings, detector)
            if regions:
                self.items.append((path, label, regions[0][1]))
            else:
                self.no_face.append(path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label, region = self.items[index]
        image = decode_image(path.read_bytes())
        if region is not None:
            image = image.crop(region)
        if self.augment is not None:
            image = self.augment(image)
        return to_model_input(image, self.settings.mean, self.settings.std, self.settings.image_size), label


@torch.inference_mode()
def collect_logits(
    model: torch.nn.Module, dataset: Dataset, batch_size: int = 64, bf16: bool = False, workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits float32 [N, 2], labels [N]) for a whole dataset, in order."""
    model.eval()
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images.contiguous(memory_format=torch.channels_last))
        logits.append(out.float())
        labels.append(targets)
    return torch.cat(logits), torch.cat(labels)

"""Train or fine-tune a 2-class ResNet on an image folder tree (``real/``, ``fake/``).

    python -m scripts.modeling.train --data path/train --val-data path/val --arch resnet18 \\
        --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --epochs 6 --bf16 --out runs/r18

Writes ``best_<Arch>.pth`` (a plain state dict, ready for ``make mar``) with ``best_<Arch>.json``
(its settings and validation metrics, which ``scripts.operations.archive --settings-file`` reads), and
``last.pth`` for ``--resume``. Preprocessing is the handler's own ``to_model_input``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import random
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader

from handler.calibration import calibration_metrics, softmax_with_temperature
from handler.checkpoint import SUPPORTED_ARCHS, build_model, infer_architecture, read_state_dict
from handler.runtimes import cpu_capabilities, plan_precision
from handler.settings import CROPS, ModelSettings, SettingsError
from scripts.modeling.data import LabelledImages, collect_logits, labelled_files
from scripts.modeling.metrics import roc_auc

CHECKPOINT_NAMES = {arch: f"best_ResNet{arch.removeprefix('resnet')}" for arch in SUPPORTED_ARCHS}


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))  # torch RNG: seeded per DataLoader worker


def augment(image: Image.Image) -> Image.Image:
    """Trace-preserving augmentation: flip, light colour jitter, JPEG re-compression.

    No random crops: serving resizes the whole frame straight to 224x224, and a crop would shift
    generator traces that live on that pixel grid (checkerboards, block edges) off it.
    """
    if torch.rand(()) < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(_uniform(0.9, 1.1))
    image = ImageEnhance.Contrast(image).enhance(_uniform(0.9, 1.1))
    if torch.rand(()) < 0.5:  # frames reach the server as JPEG: train on re-compressed copies too
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=round(_uniform(80, 96)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def split_items(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Stratified, seeded train/validation split."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({label for _, label in items}):
        group = [item for item in items if item[1] == label]
        rng.shuffle(group)
        cut = max(1, round(len(group) * fraction))
        val += group[:cut]
        train += group[cut:]
    return train, val


def initial_model(arch: str, init: Path | None) -> tuple[torch.nn.Module, str]:
    """A fresh model, or one started from any compatible checkpoint (a 1000-class head is dropped)."""
    if init is None:
        if arch == "auto":
            raise SettingsError("--arch is needed when training from scratch (or give --init)")
        return build_model(arch, 2), arch
    state = read_state_dict(init)
    detected, classes = infer_architecture(state)
    if arch not in ("auto", detected):
        raise SettingsError(f"--arch {arch} but --init {init} holds a {detected}")
    model = build_model(detected, 2)
    if classes != 2:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise SettingsError(
            f"--init {init} does not fit {detected}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model, detected


@torch.no_grad()
def recompute_batchnorm(
    model: torch.nn.Module,
    dataset: LabelledImages,
    samples: int,
    batch_size: int,
    bf16: bool,
    generator: torch.Generator,
) -> None:
    """Re-estimate BatchNorm statistics with the final weights ("precise BN").

    Running averages lag behind weights that change quickly early in training: a model can fit
    its training set yet score at chance in eval mode. A pass over a few hundred un-augmented
    training images with a cumulative average fixes the statistics the checkpoint ships with.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average over the pass
    indices = torch.randperm(len(dataset), generator=generator)[:samples].tolist()
    model.train()
    for images, _ in DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(images.contiguous(memory_format=torch.channels_last))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def validation_metrics(
    model: torch.nn.Module, dataset: LabelledImages, fake_index: int, bf16: bool
) -> dict[str, float]:
    logits, labels = collect_logits(model, dataset, bf16=bf16)
    fake_scores = softmax_with_temperature(logits, 1.0)[:, fake_index].tolist()
    metrics = calibration_metrics(logits, labels)
    del metrics["temperature"]
    return {**metrics, "auc": roc_auc(fake_scores, (labels == fake_index).int().tolist()), "samples": len(labels)}


def bf16_training(requested: bool, capabilities: Collection[str]) -> tuple[bool, str | None]:
    """Whether to train under bfloat16 autocast, and why not when ``--bf16`` was asked for: only on a CPU with
    BF16 instructions (AVX512-BF16 or AMX: serving's rule, ``plan_precision``). Elsewhere torch emulates
    bfloat16: a ResNet18 step took 15x fp32's time on an AVX2 CPU, so the demo build would take hours."""
    if not requested or plan_precision("bf16", capabilities)[0] == "bf16":
        return requested, None
    return False, "--bf16: this CPU has no BF16 instructions (emulated bfloat16, ~15x slower): training in fp32"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with one subfolder per label")
    parser.add_argument("--val-data", type=Path, help="validation folder (default: --val-split of --data)")
    parser.add_argument("--val-split", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("runs/train"))
    parser.add_argument("--arch", default="resnet18", help=f"auto (with --init) or one of {', '.join(SUPPORTED_ARCHS)}")
    parser.add_argument("--init", type=Path, help="start from these weights (any compatible checkpoint)")
    parser.add_argument("--mean", default="0.485,0.456,0.406", help="normalisation mean (ImageNet by default)")
    parser.add_argument("--std", default="0.229,0.224,0.225", help="normalisation std")
    parser.add_argument("--labels", default="Real,Fake", help="label names by index; folders match them")
    parser.add_argument(
        "--crop",
        choices=CROPS,
        default="full",
        help="train on whole images (full, default) or on each image's most certain face, cropped as the server "
        "crops it (face); recorded in the settings the archive reads",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--bn-samples", type=int, default=512, help="images for the BatchNorm re-estimation (0: off)")
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast where the CPU has AMX/AVX512-BF16 (else fp32, said so)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from --out/last.pth if present")
    parser.add_argument("--print-freq", type=int, default=10, help="steps between progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(get_args_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """What the command line does, from its options (``scripts.options`` builds them for a caller)."""
    try:
        settings = ModelSettings.from_mapping(
            {"mean": args.mean, "std": args.std, "labels": args.labels, "crop": args.crop}
        )
        generator = seed_everything(args.seed)
        items = labelled_files(args.data, settings.labels)
        if args.val_data:
            train_items, val_items = items, labelled_files(args.val_data, settings.labels)
        else:
            train_items, val_items = split_items(items, args.val_split, args.seed)
        model, arch = initial_model(args.arch, args.init)
    except (FileNotFoundError, SettingsError, ValueError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(settings, arch=arch)
    model = model.to(memory_format=torch.channels_last)
    train_set = LabelledImages(train_items, settings, augment)
    plain_train_set = copy.copy(train_set)  # for the BatchNorm re-estimation: the same crops, not augmented
    plain_train_set.augment = None
    val_set = LabelledImages(val_items, settings)
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if dataset.no_face:
            print(f"{len(dataset.no_face)} {name} images have no face and are left out (crop: face)")
        if not len(dataset):
            print(f"train: no {name} image left to train on", file=sys.stderr)
            return 2
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs
    warmup = max(1, round(args.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        ),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    last_path, name = args.out / "last.pth", CHECKPOINT_NAMES[arch]
    start_epoch, best = 0, {"accuracy": -1.0, "nll": math.inf}
    if args.resume and last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)  # our own file: includes RNG state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        print(f"Resumed from {last_path} at epoch {start_epoch}", flush=True)
    bf16, why = bf16_training(args.bf16, cpu_capabilities())
    if why:
        print(f"train: {why}", flush=True)
    print(
        f"Training {arch} on {len(train_set)} images ({steps_per_epoch} steps/epoch), validating on {len(val_set)}; "
        f"labels {list(settings.labels)}, mean {list(settings.mean)}, std {list(settings.std)}, bf16={bf16}",
        flush=True,
    )
    history: list[dict[str, Any]] = []
    for epoch in range(start_epoch, args.epochs):
        model.train()
        started, seen, correct, loss_sum = time.monotonic(), 0, 0, 0.0
        for step, (images, targets) in enumerate(loader, start=1):
            images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            loss_sum += float(loss.detach()) * len(targets)
            if step % args.print_freq == 0 or step == steps_per_epoch:
                rate = seen / (time.monotonic() - started)
                print(
                    f"epoch {epoch + 1}/{args.epochs} step {step}/{steps_per_epoch} loss {loss_sum / seen:.4f} "
                    f"acc {correct / seen:.3f} lr {scheduler.get_last_lr()[0]:.2e} {rate:.0f} img/s",
                    flush=True,
                )
        if args.bn_samples:
            recompute_batchnorm(model, plain_train_set, args.bn_samples, args.batch_size, bf16, generator)
        metrics = validation_metrics(model, val_set, settings.fake_index, bf16)
        metrics.update(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1))
        history.append(metrics)
        improved = (metrics["accuracy"], -metrics["nll"]) > (best["accuracy"], -best["nll"])
        print(
            f"epoch {epoch + 1}: val accuracy {metrics['accuracy']:.4f} auc {metrics['auc']:.4f} "
            f"nll {metrics['nll']:.4f} ece {metrics['ece']:.4f}{'  (best)' if improved else ''}",
            flush=True,
        )
        if improved:
            best = metrics
            torch.save(model.state_dict(), args.out / f"{name}.pth")
            record = {
                "settings": settings.to_mapping(),
                "validation": metrics,
                "epoch": epoch + 1,
                "autocast_bf16": bf16,  # what ran: --bf16 asks, the CPU decides (bf16_training)
                "args": {k: str(v) for k, v in vars(args).items()},
            }
            (args.out / f"{name}.json").write_text(json.dumps(record, indent=2))
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "best": best,
            },
            last_path,
        )
    print(f"Best: {args.out / (name + '.pth')} (val accuracy {best['accuracy']:.4f}, epoch {best.get('epoch')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

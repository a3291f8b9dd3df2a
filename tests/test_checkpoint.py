"""Checkpoint loading: the ways users save weights, architecture inference, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from handler.checkpoint import CheckpointError, build_model, infer_architecture, load_model, read_state_dict
from tests.conftest import random_checkpoint

TIER = "unit"

INPUT = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    state = random_checkpoint("resnet18", seed=7)
    model = build_model("resnet18")
    model.load_state_dict(state)
    with torch.inference_mode():
        return state, model.eval()(INPUT)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model_state_dict": s, "optimizer_state_dict": {}},
        lambda s: {"module." + k: v for k, v in s.items()},
        lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}},
    ],
    ids=["bare", "state_dict", "model_state_dict", "module-prefix", "wrapped-and-prefixed"],
)
def test_saved_variants_load_to_the_same_model(tmp_path: Path, reference, wrap):
    state, expected = reference
    path = tmp_path / "best_ResNet50.pth"  # the original app's misleading name
    torch.save(wrap(state), path)
    model, arch = load_model(path)
    assert arch == "resnet18"
    with torch.inference_mode():
        torch.testing.assert_close(model(INPUT), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_architecture_is_read_from_the_shapes(arch):
    assert infer_architecture(build_model(arch, 2).state_dict()) == (arch, 2)


def test_wrong_head_is_refused_with_its_shape(tmp_path: Path):
    path = tmp_path / "imagenet.pth"
    torch.save(build_model("resnet18", 1000).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"1000-class fc head \(fc.weight \(1000, 512\)\)"):
        load_model(path)


def test_requested_arch_must_match_the_weights(reference):
    with pytest.raises(
        CheckpointError, match="arch 'resnet50' was requested but the checkpoint's weights are a resnet18"
    ):
        load_model(reference[0], arch="resnet50")


def test_missing_and_mismatched_keys_are_named(reference):
    state = dict(reference[0])
    del state["layer2.0.bn1.weight"]
    state["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    with pytest.raises(
        CheckpointError, match=r"missing 1 keys \(layer2.0.bn1.weight\).*shape mismatch \(layer3.0.conv1.weight"
    ):
        load_model(state)


def test_non_resnet_and_unreadable_files_are_refused(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not a torchvision ResNet"):
        load_model({"encoder.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="unsupported ResNet layout: basic blocks per stage \\[1, 1, 1, 1\\]"):
        infer_architecture({k: v for k, v in build_model("resnet18").state_dict().items() if ".1." not in k})
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"cannot read .*broken\.pth as a weights-only PyTorch checkpoint"):
        read_state_dict(broken)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_state_dict(tmp_path / "absent.pth")


def test_a_pickled_whole_model_is_refused_at_make_mar(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """torch.save(model) pickles code references; loading it could run anything, so it is refused
    (weights_only=True) with a message saying how to save the weights instead."""
    from scripts.operations import archive

    whole = tmp_path / "whole_model.pth"
    torch.save(build_model("resnet18"), whole)
    with pytest.raises(CheckpointError, match=r"pickles a Python object \(torchvision\.models\.resnet\.ResNet\)"):
        read_state_dict(whole)
    assert archive.main(["--weights", str(whole), "--export-path", str(tmp_path / "store")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("archive: ") and "torch.save(model.state_dict(), path)" in line
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())

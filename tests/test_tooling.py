"""Model tooling: metrics by hand, calibration, a training smoke test, evaluation end to end."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import yaml

from handler.checkpoint import build_model, load_model
from scripts.modeling import calibrate as calibrate_script
from scripts.modeling import evaluate as evaluate_script
from scripts.modeling import train as train_script
from scripts.modeling.metrics import accuracy, equal_error_rate, roc_auc
from scripts.operations.archive import get_args_parser as archive_parser
from scripts.operations.archive import resolve_settings
from scripts.operations.archives import DEFAULT_MAX_BATCH_DELAY_MS, build_archive
from scripts.synthetic.scenes import make_image
from tests.conftest import image_bytes, needs_bf16
from tests.media import constant_rate, write_video

TIER = "unit"


def test_metrics_by_hand():
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert roc_auc(scores, labels) == pytest.approx(0.75)  # 3 of 4 (real, fake) pairs ranked right
    assert equal_error_rate(scores, labels) == pytest.approx(0.5)
    assert accuracy(scores, labels) == pytest.approx(0.75)  # only the fake at 0.35 is missed
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    # ranked fake, real, fake, real: after the first real, fpr = fnr = 0.5
    assert equal_error_rate([0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0.2, 0.3], [1, 1])


def test_frame_metrics_on_fixed_predictions():
    report = evaluate_script.frame_metrics([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])
    assert report["accuracy"] == pytest.approx(0.75)  # 0.6 on a real image is the one mistake
    assert report["auc"] == pytest.approx(1.0)  # yet every fake outranks every real
    assert report["eer"] == pytest.approx(0.0)
    # ECE: confidences 0.9 (ok), 0.8 (ok), 0.7 (ok), 0.6 (wrong), each in its own bin of 1/15
    assert report["ece"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)
    assert report["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.4)) / 4)


def test_calibration_of_an_overconfident_pair():
    """Labels drawn from softmax(z / 2.5): the model's logits are 2.5x over-confident."""
    generator = torch.Generator().manual_seed(1)
    margins = torch.randn(30000, generator=generator, dtype=torch.float64) * 6
    logits = torch.stack([-margins / 2, margins / 2], dim=1)
    labels = torch.bernoulli(torch.sigmoid(margins / 2.5), generator=generator).long()
    result = calibrate_script.calibrate(logits, labels)
    assert result["settings"]["temperature"] == pytest.approx(2.5, rel=0.05)
    assert result["settings"]["alpha"] == result["settings"]["temperature"]
    assert result["after"]["ece"] < result["before"]["ece"]
    assert result["after"]["nll"] < result["before"]["nll"]
    assert result["after"]["accuracy"] == result["before"]["accuracy"]  # scaling never changes the argmax


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(6):
            make_image([7, int(label == "fake"), i], fake=label == "fake").save(root / label / f"{i}.jpg")
    return root


def run_train(folder: Path, out: Path, *extra: str) -> int:
    return train_script.main(["--data", str(folder), "--out", str(out), "--arch", "resnet18", "--epochs", "1",
                              "--batch-size", "4", "--val-split", "0.34", "--mean", "0.5,0.5,0.5",
                              "--std", "0.5,0.5,0.5", "--workers", "0", "--seed", "3", *extra])  # fmt: skip


@pytest.mark.slow  # trains or archives a model
def test_training_smoke_determinism_and_resume(tiny_folder: Path, tmp_path: Path):
    assert run_train(tiny_folder, tmp_path / "a") == 0
    assert run_train(tiny_folder, tmp_path / "b") == 0
    weights = tmp_path / "a" / "best_ResNet18.pth"
    record = json.loads((tmp_path / "a" / "best_ResNet18.json").read_text())
    assert record["settings"]["mean"] == [0.5, 0.5, 0.5] and record["settings"]["arch"] == "resnet18"
    assert set(record["validation"]) >= {"accuracy", "auc", "nll", "ece", "epoch"}
    model, arch = load_model(weights)  # a plain state dict the server can load
    assert arch == "resnet18"
    same_seed = torch.load(tmp_path / "b" / "best_ResNet18.pth", weights_only=True)
    assert all(torch.equal(v, same_seed[k]) for k, v in model.state_dict().items())  # --seed is deterministic
    # resume: a second epoch continues from last.pth instead of starting over
    assert run_train(tiny_folder, tmp_path / "a", "--epochs", "2", "--resume") == 0
    assert torch.load(tmp_path / "a" / "last.pth", weights_only=False)["epoch"] == 1


def test_bf16_training_needs_a_cpu_with_bf16():
    """Emulated bfloat16 (a CPU without AVX512-BF16 or AMX) ran a ResNet18 step 15x slower than fp32: --bf16 is a
    speed option, so there it trains in fp32 and says why."""
    assert train_script.bf16_training(True, {"FP32", "INT8", "BF16"}) == (True, None)
    assert train_script.bf16_training(False, {"FP32", "BF16"}) == (False, None)
    assert train_script.bf16_training(False, set()) == (False, None)
    enabled, why = train_script.bf16_training(True, {"FP32", "INT8"})
    assert not enabled and why is not None and "no BF16 instructions" in why and "training in fp32" in why


@pytest.mark.slow  # trains a model
def test_bf16_asked_on_a_cpu_without_it_trains_in_fp32_and_says_so(
    tiny_folder: Path, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setattr(train_script, "cpu_capabilities", lambda: {"FP32", "INT8"})  # an AVX2 CPU, as OpenVINO sees it
    assert run_train(tiny_folder, tmp_path, "--bf16") == 0
    out = capsys.readouterr().out
    assert "train: --bf16: this CPU has no BF16 instructions" in out and "bf16=False" in out
    record = json.loads((tmp_path / "best_ResNet18.json").read_text())
    assert record["autocast_bf16"] is False and record["args"]["bf16"] == "True"  # asked for, and what ran


@pytest.mark.slow  # trains or archives a model
def test_init_from_an_imagenet_head_and_bad_inputs(tiny_folder: Path, tmp_path: Path, capsys):
    init = tmp_path / "imagenet.pth"
    torch.save({"state_dict": build_model("resnet18", 1000).state_dict()}, init)
    assert run_train(tiny_folder, tmp_path / "ft", "--init", str(init), "--arch", "auto") == 0
    assert (tmp_path / "ft" / "best_ResNet18.pth").exists()
    assert run_train(tmp_path, tmp_path / "x") == 2  # no real/ and fake/ folders
    assert "needs one folder per label" in capsys.readouterr().err


@pytest.mark.slow  # trains or archives a model
def test_calibrate_archive_and_evaluate_chain(tiny_folder: Path, tmp_path: Path):
    assert run_train(tiny_folder, tmp_path) == 0
    weights = tmp_path / "best_ResNet18.pth"
    assert calibrate_script.main(["--weights", str(weights), "--data", str(tiny_folder)]) == 0
    calibration = json.loads((tmp_path / "best_ResNet18.calibration.json").read_text())
    temperature = calibration["settings"]["temperature"]
    assert temperature > 0 and set(calibration) >= {"before", "after", "samples"}
    # make mar picks up both sidecars: train.py's settings and calibrate.py's temperature
    settings = resolve_settings(archive_parser().parse_args(["--weights", str(weights)]))
    assert settings.mean == (0.5, 0.5, 0.5)
    assert settings.temperature == pytest.approx(temperature) and settings.alpha == pytest.approx(temperature)
    mar, _ = build_archive(weights, settings, "tiny", tmp_path / "store", precision="fp32")
    assert mar.exists()
    videos = tmp_path / "videos"
    for label in ("real", "fake"):
        (videos / label).mkdir(parents=True)
        write_video(videos / label / "clip.mp4", constant_rate(30, Fraction(30)))
    report_path = tmp_path / "report.json"
    code = evaluate_script.main(["--weights", str(weights), "--images", str(tiny_folder), "--videos", str(videos),
                                 "--json", str(report_path)])  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["images"]["samples"] == 12 and 0 <= report["images"]["auc"] <= 1
    assert report["video_frames"]["samples"] == 4  # 2 videos x 2 frames at 2 fps
    assert set(report["videos"]["per_video"]) == {
        str((videos / label / "clip.mp4").resolve()) for label in ("fake", "real")
    }
    assert math.isfinite(report["videos"]["auc"])


@pytest.mark.slow  # trains or archives a model
@needs_bf16
def test_archive_records_settings(tmp_path: Path):
    weights = tmp_path / "w.pth"
    torch.save(build_model("resnet18").state_dict(), weights)
    argv = ["--weights", str(weights), "--labels", "fake,real", "--alpha", "4", "--precision", "bf16"]
    args = archive_parser().parse_args(argv)
    images = tmp_path / "calibration"  # the fewest images allowed (21): the default is 128 generated
    images.mkdir()
    for i in range(21):
        (images / f"{i}.jpg").write_bytes(image_bytes(((i * 37) % 256, (i * 91) % 256, 40), (72, 56)))
    mar, settings = build_archive(weights, resolve_settings(args), "r18", tmp_path, precision=args.precision,
                                  calibration_images=images)  # fmt: skip
    import zipfile

    with zipfile.ZipFile(mar) as archive:
        config = yaml.safe_load(archive.read("model-config.yaml"))
        packed = {
            "handler/checkpoint.py",
            "deepfake_handler.py",
            "model_weights.pth",
            "model_fp32.xml",
            "model_fp32.bin",
        }
        assert packed <= set(archive.namelist())
        held_out = [name for name in archive.namelist() if name.startswith("agreement/")]
        assert len(held_out) == 7  # a third of the 21 images: a GPU worker checks half precision on them
    assert config["batchSize"] == 8 and config["maxBatchDelay"] == DEFAULT_MAX_BATCH_DELAY_MS
    assert config["minWorkers"] == 1
    assert config["handler"]["precision"] == settings.precision == "bf16"
    report = config["handler"]["precision_report"]
    assert report["explicit"] and report["agreement"]["bf16"]["images"] > 0
    assert config["handler"]["arch"] == "resnet18"
    assert config["handler"]["labels"] == ["fake", "real"] and config["handler"]["fake_label"] == "fake"
    assert config["handler"]["alpha"] == 4.0 and settings.fake_index == 0


def test_calibration_refuses_degenerate_fits():
    separable = torch.tensor([[2.0, -1.0], [-3.0, 1.0], [1.5, 0.0]], dtype=torch.float64)
    result = calibrate_script.calibrate(separable, torch.tensor([0, 1, 0]))
    assert result["settings"]["temperature"] == 1.0  # no mistakes: T -> 0 would be the "optimum"
    assert "cannot be estimated" in result["notes"][0]
    # tiny margins, one slight mistake: the NLL optimum is T ~ 0.001, far below any sane value
    logits = torch.tensor([[0.01, 0.0]] * 400 + [[0.0, 0.001]], dtype=torch.float64)
    clamped = calibrate_script.calibrate(logits, torch.zeros(401, dtype=torch.long))
    assert clamped["settings"]["temperature"] == calibrate_script.T_RANGE[0]
    assert "clamped" in clamped["notes"][0]


def test_reports_print_with_and_without_nll():
    """A demo cached before NLL was reported must still print (make run reads its evaluation.json)."""
    old = {"samples": 4, "folder": "test", "accuracy": 0.75, "auc": 1.0, "eer": 0.0, "ece": 0.3}
    assert evaluate_script.format_report({"images": old}).endswith("ECE 0.3000")
    assert evaluate_script.format_report({"images": old | {"nll": 0.4}}).endswith("ECE 0.3000  NLL 0.4000")


def test_tools_call_each_other_with_options_not_argv_lists(tmp_path: Path):
    """scripts.options gives the Namespace the command line would: build_demo calls train, calibrate,
    evaluate and make_demo_data through their ``run`` with it."""
    from scripts import options
    from scripts.demo import build_demo

    parser = train_script.get_args_parser()
    argv = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--mean", "0.5,0.5,0.5", "--epochs", "3",
            "--bf16", "--lr", "0.001"]  # fmt: skip
    built = options(parser, data=tmp_path / "d", out=tmp_path / "o", mean="0.5,0.5,0.5", epochs=3, bf16=True, lr=0.001)
    assert built == parser.parse_args(argv)
    recipe = build_demo.train_options(tmp_path / "data", tmp_path / "model")
    assert recipe.data == tmp_path / "data" / "images" / "train" and recipe.bf16 and recipe.mean == "0.5,0.5,0.5"
    with pytest.raises(TypeError, match="no option colour"):
        options(parser, data=tmp_path, colour="red")
    with pytest.raises(TypeError, match="--data required"):
        options(parser, epochs=1)


def test_explanations_are_taken_on_layer3_and_the_sanity_check_randomises_from_there_up():
    """A ResNet is explained on layer3 (handler.explain says why); the model-randomisation check re-initialises
    that layer and everything above it, and nothing below. Another model: its last convolution, and from it up."""
    from torchvision.models import mobilenet_v3_small, resnet18

    from handler.explain import GradCam, target_layer
    from scripts.modeling.evaluate import randomised_copy

    def unchanged(model: torch.nn.Module, copy: torch.nn.Module, part: str) -> bool:
        before, after = (m.get_submodule(part).state_dict().values() for m in (model, copy))
        return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    torch.manual_seed(0)
    model = resnet18(num_classes=2).eval()
    assert target_layer(model) == ("layer3", model.layer3)
    assert GradCam(model, 1)(torch.randn(1, 3, 224, 224)).shape == (1, 14, 14)
    copy = randomised_copy(model, seed=0)
    assert [unchanged(model, copy, part) for part in ("conv1", "layer2", "layer3", "layer4", "fc")] == [
        True, True, False, False, False
    ]  # fmt: skip
    other = mobilenet_v3_small(num_classes=2).eval()
    assert target_layer(other)[0] == "features.12.0"
    copy = randomised_copy(other, seed=0)
    assert [unchanged(other, copy, part) for part in ("features.11", "features.12", "classifier")] == [
        True, False, False
    ]  # fmt: skip

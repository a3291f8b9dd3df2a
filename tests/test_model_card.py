"""The model card: what an archive says its model is, filled by make mar, a card file, or "unknown"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepfake_contract import ContractError, ModelCard, ModelMetadata
from handler.settings import ModelSettings, SettingsError
from scripts.operations.archives import archive_card, read_card
from tests.conftest import Server, cli
from tests.test_first_hour import make_dry_run

TIER = "unit"

REPORT = {"chosen": "int8", "agreement": {"int8": {"images": 64, "label_agreement": 1.0,
                                                   "mean_abs_fake_probability_diff": 0.004}}}  # fmt: skip


def test_a_checkpoint_without_a_card_gets_what_make_mar_knows_and_unknown(tmp_path: Path):
    card = archive_card(tmp_path / "mine.pth", ModelSettings(temperature=1.5, alpha=1.5), REPORT, {})
    assert card.classes == ("Real", "Fake") and card.calibration.startswith("temperature 1.5")
    assert card.precision_check.startswith("int8: labels agree with fp32 on 100.00% of 64 held-out images")
    assert card.trained_on == card.intended_use == card.limits == "unknown" and card.held_out == {}


def test_a_card_file_fills_the_rest(tmp_path: Path):
    path = tmp_path / "card.yaml"
    path.write_text("trained_on: FaceForensics++ c23 face crops\ntraining_images: 120000\n"
                    "held_out: {accuracy: 0.93, auc: 0.97}\nlimits: compressed social-media video\n")  # fmt: skip
    card = archive_card(tmp_path / "mine.pth", ModelSettings(), REPORT, read_card(path))
    assert card.trained_on == "FaceForensics++ c23 face crops" and card.training_images == 120000
    assert card.held_out == {"accuracy": 0.93, "auc": 0.97} and card.intended_use == "unknown"
    path.write_text("trainde_on: typo\n")
    with pytest.raises(SettingsError, match="unknown fields trainde_on"):
        read_card(path)
    assert "--model-card" in make_dry_run("mar", "WEIGHTS=w.pth", "MODEL_CARD=card.yaml")


def test_a_demo_build_fills_everything(tmp_path: Path):
    demo = tmp_path / "demo"
    for split in ("val", "test"):
        (demo / "data" / "images" / split).mkdir(parents=True)
    (demo / "model").mkdir()
    (demo / "data" / "manifest.json").write_text(json.dumps({"images": {"train": {"real": 600, "fake": 600}}}))
    (demo / "evaluation.json").write_text(json.dumps({"images": {"accuracy": 0.975, "auc": 0.9996, "ece": 0.017}}))
    card = archive_card(demo / "model" / "best_ResNet18.pth", ModelSettings(), REPORT, {})
    assert card.training_images == 1200 and card.held_out["accuracy"] == 0.975
    assert "synthetic" in card.trained_on and "not real face swaps" in card.limits


def test_the_card_travels_in_the_metadata_and_is_checked():
    card = ModelCard(trained_on="x", classes=("Real", "Fake"), held_out={"auc": 0.9})
    metadata = ModelMetadata(224, ("Real", "Fake"), "Fake", (0.5,) * 3, (0.5,) * 3, "int8", "resnet18", 1.0, 6.0,
                             card=card)  # fmt: skip
    assert ModelMetadata.from_json(json.loads(json.dumps(metadata.to_json()))) == metadata
    with pytest.raises(ContractError):
        ModelCard.from_json({"held_out": {"auc": "high"}})


@pytest.mark.integration
def test_models_shows_the_card_of_a_served_archive(server: Server):
    result = cli(server.ts, "models")
    assert result.returncode == 0, result.stderr
    assert "model card: trained on unknown (unknown; classes Real, Fake)" in result.stdout
    assert "precision check: int8: labels agree with fp32" in result.stdout

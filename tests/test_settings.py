"""Archive settings: defaults, parsing from model-config.yaml, clear validation errors."""

from __future__ import annotations

import pytest

from handler.settings import IMAGENET_MEAN, ModelSettings, SettingsError

TIER = "unit"


def test_defaults_follow_torchvision_and_the_original_app():
    settings = ModelSettings()
    assert settings.mean == IMAGENET_MEAN
    assert settings.labels == ("Real", "Fake")
    assert settings.fake_index == 1
    assert (settings.temperature, settings.alpha, settings.image_size) == (1.0, 6.0, 224)


def test_from_mapping_parses_strings_and_finds_the_fake_label():
    settings = ModelSettings.from_mapping({"mean": "0.5,0.5,0.5", "std": [0.5, 0.5, 0.5], "labels": "fake,real"})
    assert settings.mean == (0.5, 0.5, 0.5)
    assert settings.labels == ("fake", "real")
    assert settings.fake_index == 0


def test_round_trip_keeps_unknown_keys():
    settings = ModelSettings.from_mapping({"temperature": 1.5, "note": "trained on FF++"})
    again = ModelSettings.from_mapping(settings.to_mapping())
    assert again == settings
    assert again.extra == {"note": "trained on FF++"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mean": "0.5,0.5"}, "mean must be 3 numbers"),
        ({"std": [0.5, 0, 0.5]}, "std values must be positive"),
        ({"labels": "a,b,c"}, "labels must be two distinct names"),
        ({"labels": "Real,Fake", "fake_label": "Deepfake"}, "fake_label 'Deepfake' is not one of"),
        ({"temperature": 0}, "temperature must be a positive number"),
        ({"alpha": "abc"}, "alpha must be a number"),
    ],
)
def test_invalid_settings_are_refused(values, message):
    with pytest.raises(SettingsError, match=message):
        ModelSettings.from_mapping(values)

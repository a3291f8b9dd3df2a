"""Every DEEPFAKE_* environment variable the README documents, used as a user would: the CLI run from a
folder that is not the project's, against a real TorchServe, with nothing but the variable to find it.

Precedence: option > environment > key file found in ./runtime > default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake_client import ClientConfig
from tests.conftest import Server, image_bytes

TIER = "integration"

VARIABLES = ("DEEPFAKE_URL", "DEEPFAKE_MANAGEMENT_URL", "DEEPFAKE_TOKEN", "DEEPFAKE_MANAGEMENT_TOKEN",
             "DEEPFAKE_KEY_FILE", "DEEPFAKE_PROTOCOL")  # fmt: skip


def detect(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """deepfake-detect as installed (the venv's console script), from ``folder``, with only ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    script = Path(sys.executable).with_name("deepfake-detect")
    return subprocess.run([str(script), *args], cwd=folder, env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    folder = tmp_path / "somewhere" / "else"
    folder.mkdir(parents=True)
    (folder / "face.jpg").write_bytes(image_bytes())
    return folder


def test_the_key_file_and_urls_come_from_the_environment(server: Server, elsewhere: Path):
    ts = server.ts
    env = {"DEEPFAKE_URL": ts.inference_url, "DEEPFAKE_MANAGEMENT_URL": ts.management_url,
           "DEEPFAKE_KEY_FILE": str(ts.key_file)}  # fmt: skip
    result = detect(elsewhere, "image", "face.jpg", "--json", **env)
    assert result.returncode == 0, result.stderr
    assert '"label"' in result.stdout
    models = detect(elsewhere, "models", "--json", **env)
    assert models.returncode == 0 and '"deepfake"' in models.stdout, models.stderr
    over_oip = detect(elsewhere, "image", "face.jpg", "--json", DEEPFAKE_PROTOCOL="oip", **env)
    assert over_oip.returncode == 0 and '"label"' in over_oip.stdout, over_oip.stderr


def test_tokens_come_from_the_environment(server: Server, elsewhere: Path):
    ts, keys = server.ts, server.ts.keys()
    env = {"DEEPFAKE_URL": ts.inference_url, "DEEPFAKE_MANAGEMENT_URL": ts.management_url,
           "DEEPFAKE_TOKEN": keys["inference"], "DEEPFAKE_MANAGEMENT_TOKEN": keys["management"]}  # fmt: skip
    assert detect(elsewhere, "image", "face.jpg", **env).returncode == 0
    assert detect(elsewhere, "health", **env).returncode == 0
    wrong = detect(elsewhere, "image", "face.jpg", **{**env, "DEEPFAKE_TOKEN": "wrong"})
    assert wrong.returncode == 3 and "refused the token" in wrong.stderr
    # an option wins over the environment
    assert detect(elsewhere, "image", "face.jpg", "--token", keys["inference"],
                  **{**env, "DEEPFAKE_TOKEN": "wrong"}).returncode == 0  # fmt: skip


@pytest.mark.unit
def test_an_unreachable_url_from_the_environment_is_the_one_reported(elsewhere: Path):
    result = detect(elsewhere, "image", "face.jpg", "--retries", "0", DEEPFAKE_URL="http://127.0.0.1:9",
                    DEEPFAKE_TOKEN="t")  # fmt: skip
    assert result.returncode == 4 and "127.0.0.1:9" in result.stderr


@pytest.mark.unit
def test_the_precedence_in_the_library(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEEPFAKE_URL", "http://env:1,http://replica:2")
    monkeypatch.setenv("DEEPFAKE_TOKEN", "from-env")
    config = ClientConfig.from_env(base_url=None, token=None)  # options not given: the environment's
    assert config.base_url == "http://env:1" and config.replica_urls == ("http://replica:2",)
    assert config.token == "from-env"
    assert ClientConfig.from_env(token="option").token == "option"  # an option wins


def test_the_readmes_environment_quick_start_word_for_word(server: Server, elsewhere: Path):
    """The README's block (Client library and CLI), run by bash from a folder outside the project, with only
    its placeholders replaced by this TorchServe's addresses and key file."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in readme.split("```bash\n")[1:] if "export DEEPFAKE_URL" in b).split("```", 1)[0]
    ts = server.ts
    script = (block.replace("http://127.0.0.1:8080", ts.inference_url)
              .replace("http://127.0.0.1:8081", ts.management_url)
              .replace("/path/to/deepfake-serve/runtime/key_file.json", str(ts.key_file)))  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    clean["PATH"] = f"{Path(sys.executable).parent}:{clean.get('PATH', '')}"
    result = subprocess.run(["bash", "-euc", script], cwd=elsewhere, env=clean, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Image: face.jpg" in result.stdout and "Predicted class:" in result.stdout

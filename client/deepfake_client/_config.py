"""Client configuration and token discovery."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from deepfake_client._exceptions import AuthenticationError

TOKEN_ENV = "DEEPFAKE_TOKEN"
MANAGEMENT_TOKEN_ENV = "DEEPFAKE_MANAGEMENT_TOKEN"
KEY_FILE_ENV = "DEEPFAKE_KEY_FILE"
URL_ENV = "DEEPFAKE_URL"
MANAGEMENT_URL_ENV = "DEEPFAKE_MANAGEMENT_URL"
RUNTIME_KEY_FILE = Path("runtime") / "key_file.json"  # where `make start` keeps TorchServe's keys


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 120.0  # a cold worker or a long queue can take a while

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how to talk to it; every field has a working default."""

    base_url: str = "http://127.0.0.1:8080"
    management_url: str = "http://127.0.0.1:8081"
    model: str = "deepfake"
    token: str | None = None  # inference key
    management_token: str | None = None
    key_file: Path | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 3  # for connection errors and HTTP 503 only; never for 4xx
    backoff: float = 0.5  # seconds, doubled after each retry
    max_in_flight: int = 16  # two TorchServe batches of 8: the next one fills while one runs

    @classmethod
    def from_env(cls, **overrides) -> ClientConfig:
        """Defaults, then environment variables, then explicit (non-None) overrides."""
        values = {
            "base_url": os.environ.get(URL_ENV),
            "management_url": os.environ.get(MANAGEMENT_URL_ENV),
            "token": os.environ.get(TOKEN_ENV),
            "management_token": os.environ.get(MANAGEMENT_TOKEN_ENV),
            "key_file": os.environ.get(KEY_FILE_ENV),
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        if "key_file" in values:
            values["key_file"] = Path(values["key_file"])
        return cls(**values)


def find_key_file(start: Path | None = None) -> Path | None:
    """TorchServe's key_file.json in ./runtime of this folder or a parent (the project layout)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / RUNTIME_KEY_FILE
        if candidate.is_file():
            return candidate
    return None


def read_key_file(path: Path) -> dict[str, str]:
    """{"inference": ..., "management": ..., "api": ...} from TorchServe's key_file.json."""
    try:
        data = json.loads(Path(path).read_text())
        return {name.lower(): entry["key"] for name, entry in data.items()}
    except FileNotFoundError:
        raise AuthenticationError(f"key file not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AuthenticationError(f"{path} is not a TorchServe key_file.json") from None


def resolve_token(config: ClientConfig, kind: str) -> str | None:
    """The token for ``kind`` ("inference" or "management"): option, env, key file, ./runtime."""
    explicit = config.token if kind == "inference" else config.management_token
    if explicit:
        return explicit
    key_file = config.key_file or find_key_file()
    if key_file is None:
        return None
    return read_key_file(key_file).get(kind)

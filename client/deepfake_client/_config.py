"""Client configuration and token discovery."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfake_client._exceptions import AuthenticationError, InputError
from deepfake_contract import (
    DEFAULT_INFERENCE_PORT,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_MODEL,
    NATIVE,
    PROTOCOLS,
    read_keys,
)

TOKEN_ENV = "DEEPFAKE_TOKEN"
MANAGEMENT_TOKEN_ENV = "DEEPFAKE_MANAGEMENT_TOKEN"
KEY_FILE_ENV = "DEEPFAKE_KEY_FILE"
URL_ENV = "DEEPFAKE_URL"  # one URL, or several replicas' URLs separated by commas
PROTOCOL_ENV = "DEEPFAKE_PROTOCOL"
MANAGEMENT_URL_ENV = "DEEPFAKE_MANAGEMENT_URL"
RUNTIME_KEY_FILE = Path("runtime") / "key_file.json"  # where `make start` keeps TorchServe's keys

# Defaults, defined once: the dataclasses below and the CLI's options use these.
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_INFERENCE_PORT}"
DEFAULT_MANAGEMENT_URL = f"http://127.0.0.1:{DEFAULT_MANAGEMENT_PORT}"
DEFAULT_PROTOCOL = NATIVE  # or "oip": the Open Inference Protocol (KServe v2), see deepfake_contract
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 120.0  # a cold worker or a long queue can take a while
DEFAULT_RETRIES = 8
DEFAULT_BACKOFF = 0.25  # seconds before the first retry, doubled after each one ...
DEFAULT_MAX_BACKOFF = 4.0  # ... up to this
DEFAULT_RETRY_DEADLINE = 60.0  # no retry starts later than this many seconds after the first try
DEFAULT_JITTER = 0.5  # each backoff is drawn from [(1 - jitter) x, x]: clients that failed together retry apart
DEFAULT_FPS = 2.0  # frames sampled per second of video: the original app's rate, everywhere it is a default
DEFAULT_FRAMES_PER_REQUEST = 8  # video frames per request: 8 measured fastest (docs/benchmark.md section 10)
DEFAULT_MAX_IN_FLIGHT = 16  # per replica: two TorchServe batches of 8, the next one fills while one runs
DEFAULT_REPLICA_COOLDOWN = 5.0  # seconds a replica that failed gets no requests (with other replicas up)
# Answers worth retrying: the request never reached a working model. 502/504 come from proxies in
# front of TorchServe, 503 from a full queue or no worker, 507 from a worker that died mid-batch.
RETRY_STATUSES = frozenset({502, 503, 504, 507})
# TorchServe answers the requests of a batch whose worker was killed with 507 or, depending on the
# moment of the crash, 500; both carry this message, and only that 500 is retried.
WORKER_DIED_MESSAGE = "Worker died"


@dataclass(frozen=True)
class Timeouts:
    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT

    def as_tuple(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how to talk to it; every field has a working default."""

    base_url: str = DEFAULT_URL
    management_url: str = DEFAULT_MANAGEMENT_URL
    model: str = DEFAULT_MODEL
    protocol: str = DEFAULT_PROTOCOL
    # More inference URLs serving the same model (replicas): inference requests are spread over
    # base_url and these, and steered away from one that fails. Management calls use management_url.
    replica_urls: tuple[str, ...] = ()
    replica_cooldown: float = DEFAULT_REPLICA_COOLDOWN
    token: str | None = None  # inference key
    management_token: str | None = None
    key_file: Path | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Retries of connection errors and RETRY_STATUSES (every call the client makes is idempotent),
    # with capped exponential backoff and a total deadline; never of 4xx or read timeouts.
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    retry_deadline: float = DEFAULT_RETRY_DEADLINE
    jitter: float = DEFAULT_JITTER
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    frames_per_request: int = DEFAULT_FRAMES_PER_REQUEST

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        object.__setattr__(self, "replica_urls", tuple(self.replica_urls))

    @property
    def inference_urls(self) -> tuple[str, ...]:
        """Every replica's inference URL, base_url first, without repeats."""
        return tuple(dict.fromkeys(url.rstrip("/") for url in (self.base_url, *self.replica_urls)))

    def backoff_delay(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0-based): capped exponential."""
        return min(self.max_backoff, self.backoff * 2**retry)

    def retry_delay(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``retry``: the backoff less a random share of up to ``jitter`` of it,
        and never less than what the server asked for (``Retry-After``), itself capped by ``max_backoff``."""
        longest = self.backoff_delay(retry)
        delay = longest * (1 - min(max(self.jitter, 0.0), 1.0) * random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    @classmethod
    def from_env(cls, **overrides) -> ClientConfig:
        """Defaults, then environment variables, then explicit (non-None) overrides."""
        urls = split_urls(os.environ.get(URL_ENV))
        values: dict[str, Any] = {
            "base_url": urls[0] if urls else None,
            "replica_urls": tuple(urls[1:]) if len(urls) > 1 else None,
            "protocol": os.environ.get(PROTOCOL_ENV),
            "management_url": os.environ.get(MANAGEMENT_URL_ENV),
            "token": os.environ.get(TOKEN_ENV),
            "management_token": os.environ.get(MANAGEMENT_TOKEN_ENV),
            "key_file": os.environ.get(KEY_FILE_ENV),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})  # an unset option keeps the env's
        values = {k: v for k, v in values.items() if v is not None}
        if "key_file" in values:
            values["key_file"] = Path(values["key_file"])
        return cls(**values)


def split_urls(*values: str | None) -> list[str]:
    """URLs from options or environment values that may each hold several, separated by commas."""
    return [url.strip() for value in values if value for url in value.split(",") if url.strip()]


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
        return read_keys(Path(path).read_text())
    except FileNotFoundError:
        raise AuthenticationError(f"key file not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AuthenticationError(f"{path} is not a TorchServe key_file.json") from None


@dataclass(frozen=True)
class Token:
    """A key and the key file it was read from (None when it was given explicitly)."""

    value: str | None
    key_file: Path | None = None


def resolve_token(config: ClientConfig, kind: str) -> Token:
    """The token for ``kind`` ("inference" or "management"): option, env, key file, ./runtime."""
    explicit = config.token if kind == "inference" else config.management_token
    if explicit:
        return Token(explicit)
    key_file = config.key_file or find_key_file()
    if key_file is None:
        return Token(None)
    return Token(read_key_file(key_file).get(kind), key_file)


def add_verbosity(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``-v/--verbose``, the same on every command of both programs."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: retries and fail-overs to other replicas on stderr; -vv: every request's status and time too",
    )


def show_client_log(verbosity: int, program: str) -> None:
    """The ``deepfake_client`` logger on stderr at INFO (-v) or DEBUG (-vv); without -v only its warnings
    (retries) reach stderr, through Python's last-resort handler."""
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{program}: %(message)s"))
    log = logging.getLogger("deepfake_client")
    log.addHandler(handler)
    log.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)

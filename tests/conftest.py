"""Shared fixtures: checkpoints saved by the tests, archives built from them, a real TorchServe."""

from __future__ import annotations

import functools
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageFilter

from deepfake_client import encode_frame
from scripts.operations.archives import load_archive
from scripts.operations.torchserve import Ports, TorchServe, observed_batches
from tests.reliability_report import reliability  # noqa: F401  (a session fixture)
from tests.served_models import (  # noqa: F401  (the test modules' names for them)
    CONSTANT_LOGITS,
    CONSTANT_SETTINGS,
    SERVED_MODELS,
    ServedModel,
    constant_checkpoint,
    random_checkpoint,
    read_store,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def image_bytes(
    color: tuple[int, int, int] = (180, 40, 90),
    size: tuple[int, int] = (96, 64),
    fmt: str = "JPEG",
    pattern: bool = True,
) -> bytes:
    """A small deterministic image (a gradient over ``color`` when pattern is set)."""
    image = Image.new("RGB", size, color)
    if pattern:
        pixels = image.load()
        for x in range(size[0]):
            for y in range(size[1]):
                pixels[x, y] = ((color[0] + 3 * x) % 256, (color[1] + 5 * y) % 256, (color[2] + x * y) % 256)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def frame_bytes(seed: int, size: int = 224, **save: object) -> bytes:
    """A textured frame as JPEG (the client's own encoder unless ``save`` options are given)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2))
    if not save:
        return encode_frame(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


archive_service = functools.cache(load_archive)  # the core as a worker builds it, once per archive


@dataclass
class Server:
    ts: TorchServe
    models: dict[str, ServedModel]

    def headers(self, kind: str = "inference") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ts.keys()[kind]}"}

    def predict(
        self, model: str, payload: bytes, content_type: str = "image/jpeg", session: requests.Session | None = None
    ) -> requests.Response:
        return (session or requests).post(
            f"{self.ts.inference_url}/predictions/{model}",
            data=payload,
            headers={**self.headers(), "Content-Type": content_type},
            timeout=120,
        )

    def ts_log(self) -> str:
        return (self.ts.log_dir / "ts_log.log").read_text(errors="replace")

    def batches_of(
        self, request_ids: set[str], model: str = "deepfake", timeout: float = 15.0, awaited: set[str] | None = None
    ) -> list[set[str]]:
        """TorchServe's own record of how it batched these requests (see ``finished_batches``)."""
        return finished_batches(self.ts.log_dir / "ts_log.log", request_ids, model, timeout, awaited)


def finished_batches(
    ts_log: Path,
    request_ids: set[str],
    model: str = "deepfake",
    timeout: float = 15.0,
    awaited: set[str] | None = None,
) -> list[set[str]]:
    """The batches in which TorchServe ran these requests, from its log at ``ts_log``.

    TorchServe may write a batch's closing log line after sending its responses, so the log is read
    until every request of ``awaited`` (default: all of them) sits in a finished batch, or the deadline
    passes (then what is there). A request the frontend answered itself never reaches a batch: leave it
    out of ``awaited``; a batch's line names all of its requests at once.
    """
    awaited = request_ids if awaited is None else awaited
    deadline = time.monotonic() + timeout
    while True:
        text = ts_log.read_text(errors="replace") if ts_log.exists() else ""
        batches = [b & request_ids for b in observed_batches(text, model) if b & request_ids]
        if set().union(*batches) >= awaited or time.monotonic() > deadline:
            return batches
        time.sleep(0.1)  # polling interval, bounded by the deadline


def cli(ts: TorchServe, *args: str, token: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``deepfake-detect <command> ...`` against ``ts``, with its key file unless a ``token`` is given."""
    auth = ["--token", token] if token is not None else ["--key-file", str(ts.key_file)]
    command = [sys.executable, "-m", "deepfake_client", args[0], "--url", ts.inference_url,
               "--management-url", ts.management_url, *auth, *args[1:]]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="session")
def model_store(_in_background: BackgroundBuilds) -> dict[str, ServedModel]:
    """The SERVED_MODELS archives, built by ``python -m tests.served_models`` since the session started."""
    return read_store(_in_background.start("model_store").wait(timeout=1800))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_store: dict[str, ServedModel]) -> Iterator[Server]:
    """One real TorchServe on free loopback ports for the whole session, stopped at the end."""
    runtime = tmp_path_factory.mktemp("runtime")
    store = next(iter(model_store.values())).weights.parent / "store"
    ts = TorchServe(runtime, store, {name: f"{name}.mar" for name in model_store}, ports=Ports.free())
    ts.start(timeout=300)
    try:
        yield Server(ts, model_store)
    finally:
        ts.stop()


# Builds in the background take what the tests running meanwhile leave of the cores. They stay in
# pytest's process session: with the kernel's autogroup scheduling (Debian's default) a new session
# (setsid) is a group of its own, weighed equally with pytest's whatever its niceness (measured: the quick
# benchmark test took 599 s beside the two builds started so, 318 s beside them in pytest's session).
BACKGROUND_NICENESS = 10


@dataclass
class Background:
    """A build started with the session in a process of its own (``_in_background``), into ``out``."""

    out: Path
    log: Path
    process: subprocess.Popen

    @classmethod
    def start(cls, command: list[str], out: Path) -> Background:
        log = out.with_name(f"{out.name}_build.log")
        nice = shutil.which("nice")
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [nice, "-n", str(BACKGROUND_NICENESS), *command] if nice else command,
                cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, process_group=0,
            )  # fmt: skip
        return cls(out, log, process)

    def wait(self, timeout: float) -> Path:
        """``out`` once the build has succeeded (else the end of its output, in the failure)."""
        returncode = self.process.wait(timeout=timeout)
        tail = self.log.read_text(errors="replace")[-3000:]
        assert returncode == 0, f"{self.process.args} exited with {returncode}; its output ends ({self.log}):\n{tail}"
        return self.out

    def stop(self) -> None:
        if self.process.poll() is None:  # the session ended first (a failure with -x, Ctrl-C): its children too
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


# What the session builds in the background when a selected test uses it: fixture -> (folder, command).
BACKGROUND_BUILDS = {
    "demo": ("demo", ["-m", "scripts.demo.build_demo", "--out"]),  # exactly as `make run` builds it
    "model_store": ("models", ["-m", "tests.served_models"]),
}


class BackgroundBuilds:
    """The session's BACKGROUND_BUILDS, each started once: up front, or when first asked for."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp_path_factory = tmp_path_factory
        self._started: dict[str, Background] = {}

    def start(self, name: str) -> Background:
        """The build of ``name``, started now unless it already was."""
        if name not in self._started:
            folder, command = BACKGROUND_BUILDS[name]
            out = self._tmp_path_factory.mktemp(folder)
            self._started[name] = Background.start([sys.executable, *command, str(out)], out)
        return self._started[name]

    def stop(self) -> None:
        for build in self._started.values():
            build.stop()


@pytest.fixture(scope="session", autouse=True)
def _in_background(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackgroundBuilds]:
    """Starts, with the session's first test, the builds that its selected tests will wait for.

    The demo (~7 min, training included) and the served archives (~2-3 min) used to be built when the
    first test asked for them, the cores about half idle before (TorchServe's starts, clients waiting on
    answers): at a lower priority they now take what the tests meanwhile leave of them."""
    builds = BackgroundBuilds(tmp_path_factory)
    needed = {name for item in request.session.items for name in item.fixturenames} & set(BACKGROUND_BUILDS)
    try:
        for name in sorted(needed):
            builds.start(name)
        yield builds
    finally:
        builds.stop()


@pytest.fixture(scope="session")
def demo(_in_background: BackgroundBuilds) -> Path:
    """The demo (data, model, evaluation), built once per test run exactly as `make run` builds it.

    In its own process, as `make run` does: training forks DataLoader and generator workers, and
    forking this test process, where OpenVINO's thread pools already run, crashed it (SIGSEGV)."""
    return _in_background.start("demo").wait(timeout=1800)


# Test tiers. Every test module says its tier with a module constant, ``TIER = "unit"`` (or integration,
# browser, slow); a test that differs from its module says so with its own ``@pytest.mark.<tier>``. Each
# test gets exactly one tier marker here, so ``-m unit`` (make test-fast) selects precisely the unit tier.
#   unit         no Java, no TorchServe, no model training: make test-fast, under a minute
#   integration  starts TorchServe, builds archives or the demo model (the fixtures below)
#   browser      drives the web page in headless Chromium (and needs a server, like integration)
#   slow         trains, quantises, packages or checks a model in-process, or starts fresh interpreters of it
TIERS = ("unit", "integration", "browser", "slow")
INTEGRATION_FIXTURES = {"server", "demo", "fault_server", "model_store", "bundle", "replicas", "kserve_front",
                        "demo_site"}  # fmt: skip


def tier_of(item: pytest.Item) -> tuple[str | None, str | None]:
    """The item's tier, and what is wrong with it (None when nothing is)."""
    own = [marker.name for marker in getattr(item, "own_markers", []) if marker.name in TIERS]
    module_tier = getattr(getattr(item, "module", None), "TIER", None)
    if len(own) > 1:
        return None, f"marked with several tiers: {', '.join(own)}"
    tier = own[0] if own else module_tier
    if tier not in TIERS:
        return None, f'its module has no TIER (one of {", ".join(TIERS)}), e.g. TIER = "unit"'
    used = INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
    if tier in ("unit", "slow") and used:
        return tier, f"is in the {tier} tier but uses {', '.join(sorted(used))}, which start TorchServe"
    return tier, None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        tier, problem = tier_of(item)
        if problem:
            problems.append(f"{item.nodeid}: {problem}")
        elif not any(marker.name == tier for marker in item.own_markers):
            item.add_marker(getattr(pytest.mark, tier))
    if problems:
        raise pytest.UsageError("test tiers (tests/conftest.py):\n" + "\n".join(problems))


def cpu_has_bf16() -> bool:
    from handler.runtimes import cpu_capabilities

    return "BF16" in cpu_capabilities()


# bf16 as asked: on a CPU without BF16, OpenVINO (rightly) runs fp32 instead, which these tests would misread
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no BF16 (OpenVINO's capabilities)")

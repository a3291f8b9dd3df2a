"""The KServe bundle, served exactly as KServe's TorchServe runtime serves it, and two replicas behind one client."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pytest
import requests
import yaml
from requests.adapters import HTTPAdapter

from deepfake_client import DeepfakeClient, SampledFrame
from deepfake_client.contract import oip_request, predictions_from_oip
from scripts.bench.benchmark.jit import project_vmargs
from scripts.bench.loadtest import distinct_images
from scripts.operations import kserve_bundle
from scripts.operations.kserve_bundle import KSERVE_ENVIRONMENT, MOUNT, read_archive
from scripts.operations.torchserve import Ports
from tests.conftest import REPO_ROOT, ServedModel, archive_service, finished_batches
from tests.kserve_front import KServeTorchServe
from tests.media import constant_rate, write_video
from tests.test_serve_lifecycle import frontend_command_line

TIER = "integration"

READINESS = REPO_ROOT / "deploy" / "kserve" / "readiness.py"


@pytest.fixture(scope="module")
def bundle(model_store: dict[str, ServedModel], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kserve") / "bundle"
    assert kserve_bundle.main(["--archive", str(model_store["deepfake"].archive), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def replicas(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[KServeTorchServe]]:
    """Two TorchServe instances started from the bundle, as two KServe predictor pods would be."""
    servers = [KServeTorchServe(bundle, tmp_path_factory.mktemp(f"replica{i}")) for i in range(2)]
    try:
        for server in servers:
            server.start(timeout=300)
        yield servers
    finally:
        for server in servers:
            server.stop()


def infer(ts: KServeTorchServe, body: dict) -> requests.Response:
    return requests.post(f"{ts.inference_url}/v2/models/deepfake/infer", json=body, timeout=120)


def readiness(ts: KServeTorchServe, *models: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(READINESS), "--url", ts.management_url, *models]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_bundle_has_the_layout_and_settings_kserve_reads(bundle: Path, model_store: dict[str, ServedModel]):
    archive = model_store["deepfake"].archive
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "config/config.properties",
        "config/metrics.yaml",
        "model-store/deepfake.mar",
    ]
    assert (bundle / "model-store" / "deepfake.mar").read_bytes() == archive.read_bytes()
    assert (bundle / "config" / "metrics.yaml").read_text() == (REPO_ROOT / "handler" / "metrics.yaml").read_text()
    _, config, _ = read_archive(archive)
    text = (bundle / "config" / "config.properties").read_text()
    assert text.startswith(kserve_bundle.CONFIG_TEMPLATE.read_text().rstrip("\n"))
    snapshot = yaml.safe_load(re.search(r"^model_snapshot=(.+)$", text, re.MULTILINE).group(1))
    entry = snapshot["models"]["deepfake"]["1.0"]
    assert entry["marName"] == "deepfake.mar" and entry["defaultVersion"] is True
    for key in ("batchSize", "maxBatchDelay", "minWorkers", "maxWorkers", "responseTimeout"):
        assert entry[key] == config[key], key  # the archive's own settings
    assert (
        kserve_bundle.main(["--archive", str(bundle / "config" / "metrics.yaml"), "--out", str(bundle.parent / "x")])
        == 2
    )


def test_started_like_kserve_it_answers_oip_in_batches(replicas: list[KServeTorchServe], model_store):
    ts = replicas[0]
    config = ts.rendered_config()
    assert MOUNT not in config and "disable_token_authorization=true" in config
    assert ts.command(Path("c.properties"))[1:] == [
        "--start",
        f"--model-store={ts.model_store}",
        "--ts-config=c.properties",
    ]
    assert ts.environment()["TS_SERVICE_ENVELOPE"] == KSERVE_ENVIRONMENT["TS_SERVICE_ENVELOPE"] == "kservev2"
    service = archive_service(model_store["deepfake"].archive)
    images = distinct_images(8, seed=31)
    expected = [service.logits(service.decode(image).unsqueeze(0))[0].tolist() for image in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda i: infer(ts, oip_request([images[i]], f"k-{i}")), range(8)))
    assert [r.status_code for r in responses] == [200] * 8  # no key needed: KServe's model server sends none
    for i, (response, logits) in enumerate(zip(responses, expected, strict=True)):
        assert response.json()["id"] == f"k-{i}"
        assert predictions_from_oip(response.json())[0].logits == pytest.approx(logits, abs=1e-4)
    ids = {r.headers["x-request-id"] for r in responses}
    batches = finished_batches(ts.log_dir / "ts_log.log", ids)
    assert max((len(b) for b in batches), default=0) > 1, (
        f"batch sizes {[len(b) for b in batches]}"
    )  # the envelope did not take over
    bad = infer(ts, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0.5]}]})
    assert bad.status_code == 400 and "datatype 'FP32'" in bad.json()["error"]
    metrics = requests.get(f"{ts.metrics_url}/metrics", timeout=30).text
    assert re.search(r'^deepfake_predictions_total\{model_name="deepfake",label="\w+",', metrics, re.MULTILINE)


def test_the_bundles_frontend_runs_with_the_projects_jvm_options(bundle: Path, replicas: list[KServeTorchServe]):
    """The bundle's config.properties sets the project's ``vmargs`` (docs/benchmark.md section 15), and a
    replica's JVM runs with them."""
    vmargs = project_vmargs()
    assert vmargs and project_vmargs(bundle / "config" / "config.properties") == vmargs
    for replica in replicas:
        assert all(option in frontend_command_line(replica) for option in vmargs.split())


def test_readiness_probe_reads_the_worker_state(replicas: list[KServeTorchServe]):
    ready = readiness(replicas[0], "deepfake")
    assert (ready.returncode, ready.stdout.strip()) == (0, "ready")
    assert readiness(replicas[0]).returncode == 0  # every registered model
    unknown = readiness(replicas[0], "nope")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr


@pytest.fixture(scope="module")
def kserve_front(replicas: list[KServeTorchServe], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KServe's model server (tests/kserve_front.py) in front of the first replica, as in a predictor pod."""
    ports = Ports.free()
    command = [sys.executable, "-m", "tests.kserve_front", "--http_port", str(ports.inference),
               "--grpc_port", str(ports.grpc_inference), "--model_name", "deepfake",
               "--predictor_host", f"127.0.0.1:{replicas[0].ports.inference}"]  # fmt: skip
    log = tmp_path_factory.mktemp("front") / "front.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports.inference}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.25)  # polling interval, bounded by the deadline
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_cli_works_over_oip_through_kserves_model_server(kserve_front: str, replicas, tmp_path: Path):
    """The same CLI against KServe's own model server: readiness, images and a video over the protocol."""
    no_management = ["--management-url", "http://127.0.0.1:9"]  # behind KServe there is no management API

    def detect(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "deepfake_client", args[0], "--protocol", "oip", *no_management, *args[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    health = detect("health", "--url", kserve_front)
    assert health.returncode == 0 and "READY" in health.stdout, health.stderr
    image = tmp_path / "face.png"
    image.write_bytes(distinct_images(1, seed=32)[0])
    through_kserve = detect("image", "--json", "--url", kserve_front, str(image))
    direct = detect("image", "--json", "--url", replicas[0].inference_url, str(image))
    assert through_kserve.returncode == direct.returncode == 0, through_kserve.stderr
    assert json.loads(through_kserve.stdout) == json.loads(direct.stdout)  # KServe passed the answer on intact
    video = write_video(tmp_path / "clip.mp4", constant_rate(50, Fraction(5)))  # 10 s: 20 samples
    analysed = detect("video", "--json", "--quiet", "--url", kserve_front, str(video))
    assert analysed.returncode == 0, analysed.stderr
    frames = json.loads(analysed.stdout)["frames"]
    assert [f["index"] for f in frames] == list(range(20)) and all(f["fake_probability"] is not None for f in frames)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    refused = detect("image", "--url", kserve_front, str(broken))
    # KServe's model server passes the handler's message on (as a 500: it turns a predictor's 4xx into one)
    assert refused.returncode != 0 and "not a recognised image format" in refused.stdout + refused.stderr


class RecordingTransport(HTTPAdapter):
    """The client's real HTTP transport, noting which replica answered each inference request (or refused it)."""

    def __init__(self) -> None:
        super().__init__(pool_connections=4, pool_maxsize=40)
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int]] = []
        self.refused: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        host = request.url.split("/")[2]
        if not request.url.endswith("/infer"):
            return super().send(request, **kwargs)
        try:
            response = super().send(request, **kwargs)
        except requests.ConnectionError:
            with self.lock:
                self.refused.append(host)
            raise
        with self.lock:
            self.answers.append((host, response.status_code))
        return response

    def answered_by(self, ts: KServeTorchServe) -> int:
        with self.lock:
            return sum(host.endswith(f":{ts.ports.inference}") and status == 200 for host, status in self.answers)


def test_a_video_spreads_over_two_replicas_and_survives_one_stopping(replicas: list[KServeTorchServe], tmp_path: Path):
    """Replica b is stopped mid-video: its frames go to a, and every frame is answered, in time order."""
    a, b = replicas
    video = write_video(tmp_path / "long.mp4", constant_rate(200, Fraction(5)))  # 40 s: 80 samples at 2 fps
    with DeepfakeClient(a.client_config(protocol="oip", max_in_flight=8)) as client:
        reference = client.analyze_video(video, fps=2.0)
    transport = RecordingTransport()
    answered_before_stop = {}

    def stop_b_midway(sample: SampledFrame) -> None:
        if sample.index == 30:  # 30 frames sent, up to 16 of them still in flight
            answered_before_stop["b"] = transport.answered_by(b)
            assert b.stop()

    # one frame per request: the replicas share out requests, which this counts
    config = a.client_config(protocol="oip", replica_urls=(b.inference_url,), max_in_flight=8, frames_per_request=1)
    with DeepfakeClient(config, transport=transport) as client:
        analysis = client.analyze_video(video, fps=2.0, on_frame=stop_b_midway)
    assert [f.index for f in analysis.frames] == list(range(80))
    assert all(f.error is None for f in analysis.frames)
    for frame, expected in zip(analysis.frames, reference.frames, strict=True):
        assert frame.prediction.fake_probability == pytest.approx(expected.prediction.fake_probability, abs=1e-4)
    by_b = transport.answered_by(b)
    assert 0 < answered_before_stop["b"] <= by_b < 80, "replica b served nothing before it was stopped"
    assert transport.answered_by(a) == 80 - by_b  # a answered every other frame, b's unanswered ones included
    assert any(host.endswith(f":{b.ports.inference}") for host in transport.refused)  # b's failure was met
    gone = readiness(b, "deepfake")
    assert gone.returncode == 1 and "cannot read worker states" in gone.stderr

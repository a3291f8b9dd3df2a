"""Every input answered, nothing lost under load or worker crashes, no open doors.

Against real TorchServe instances on 127.0.0.1; what each test observes goes into
docs/reliability.md (tests/reliability_report.py).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from deepfake_client import AuthenticationError, BadVideoError, ClientConfig, DeepfakeClient
from scripts.bench import loadtest
from scripts.operations.torchserve import Ports, TorchServe
from tests.conftest import Server, archive_service, cli
from tests.inputs import VIDEO_CASES, ImageCase, image_cases
from tests.media import constant_rate, write_video
from tests.reliability_report import ReliabilityRecord

TIER = "integration"

MODEL = "deepfake"  # the ResNet18 in the default (int8) mode


def client_for(ts: TorchServe, **overrides) -> DeepfakeClient:
    return DeepfakeClient(ts.client_config(**overrides))


def short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def worker_pid(ts: TorchServe, model: str = MODEL) -> int:
    with client_for(ts) as client:
        return loadtest.worker_pid(client, model)


def reference_answer(server: Server, case: ImageCase) -> list[float]:
    """The server's logits for the lossless reference pixels of a valid case."""
    response = server.predict(MODEL, case.reference, "image/png")
    assert response.status_code == 200, response.text
    return response.json()["logits"]


def check_answer(case: ImageCase, response: requests.Response, expected: list[float] | None) -> None:
    if case.valid:
        assert response.status_code == 200, (case.name, response.text)
        assert response.json()["logits"] == pytest.approx(expected, abs=1e-4), case.name
        return
    assert response.status_code == case.status, (case.name, response.status_code, response.text)
    if case.error_type:  # the handler's JSON error (TorchServe's own 413 for the body size has no body)
        body = response.json()
        assert body["type"] == case.error_type and case.message in body["message"], (case.name, body)


# --- the battery ---------------------------------------------------------------------------------
def test_input_battery_against_the_server(server: Server, reliability: ReliabilityRecord):
    pid = worker_pid(server.ts)
    rows = []
    for case in image_cases():
        response = server.predict(MODEL, case.payload, case.content_type)
        check_answer(case, response, reference_answer(server, case) if case.valid else None)
        body = response.json() if response.content else {}
        if case.valid:
            observed = f"{body['label']}, logits equal to the reference pixels' (1e-4)"
        else:
            observed = short(body.get("message", "")) or "(empty body, from TorchServe's frontend)"
        rows.append([case.name, response.status_code, "" if case.valid else body.get("type", ""), observed])
    assert worker_pid(server.ts) == pid  # no case took the worker down
    reliability.table("images", ["input", "HTTP", "type", "server's answer"], rows)


def test_bad_items_fail_alone_inside_batches(server: Server, reliability: ReliabilityRecord):
    """All the battery at once with distinct good images: each answer is its own input's."""
    cases = [c for c in image_cases() if len(c.payload) < 1 << 20]  # the 32 MiB body is not batched
    good = [ImageCase(f"distinct image {i}", p, "image/png", reference=p) for i, p in
            enumerate(loadtest.distinct_images(16, seed=7))]  # fmt: skip
    everything = cases + good
    expected = {c.name: reference_answer(server, c) for c in everything if c.valid}
    pid = worker_pid(server.ts)
    for attempt in range(1, 6):  # noqa: B007  (reported below) until a bad item shares a batch with good ones
        with ThreadPoolExecutor(max_workers=len(everything)) as pool:
            responses = list(pool.map(lambda c: server.predict(MODEL, c.payload, c.content_type), everything))
        for case, response in zip(everything, responses, strict=True):
            check_answer(case, response, expected.get(case.name))
        ids = {r.headers["x-request-id"]: c for c, r in zip(everything, responses, strict=True)}
        batches = server.batches_of(set(ids))
        mixed = [b for b in batches if any(ids[i].valid for i in b) and any(not ids[i].valid for i in b)]
        if mixed:
            break
    else:
        pytest.fail("no batch mixed good and bad items")
    assert worker_pid(server.ts) == pid
    sizes = sorted((len(b) for b in batches), reverse=True)
    reliability.add(
        "batch",
        f"{len(cases)} battery cases and {len(good)} distinct valid images sent at once (attempt {attempt}): "
        f"TorchServe made batches of {sizes}; {len(mixed)} of them mixed refused and valid items. Every valid "
        "item got its own image's logits (within 1e-4 of the reference), every bad one its own 4xx, and the "
        "worker process was the same before and after.",
    )


def test_cli_and_library_answer_the_battery(server: Server, tmp_path: Path, reliability: ReliabilityRecord):
    cases = [c for c in image_cases() if c.on_disk]
    paths = []
    for index, case in enumerate(cases):
        paths.append(tmp_path / f"{index:02d}.img")
        paths[-1].write_bytes(case.payload)
    with client_for(server.ts) as client:
        library = client.predict_images(paths)
    result = cli(server.ts, "image", *map(str, paths), "--json")
    assert result.returncode == 2, result.stderr  # some inputs are bad: exit 2, documented
    printed = json.loads(result.stdout)
    stderr_lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    rows = []
    for case, path, from_library, from_cli in zip(cases, paths, library, printed, strict=True):
        assert from_cli["source"] == str(path)
        if case.valid:
            expected = reference_answer(server, case)
            assert from_library.prediction.logits == pytest.approx(expected, abs=1e-4)
            assert from_cli["logits"] == pytest.approx(expected, abs=1e-4)
            rows.append([case.name, "Prediction", "result"])
            continue
        fragment = case.message or "larger than the server's max_request_size"
        assert from_library.prediction is None and fragment in from_library.error, (case.name, from_library.error)
        assert fragment in from_cli["error"]
        [line] = [ln for ln in stderr_lines if ln.startswith(f"deepfake-detect: {path}")]  # one line per bad file
        assert fragment in line
        rows.append([case.name, "InputRejectedError", short(line.replace(str(path), "FILE"))])
    assert len(stderr_lines) == sum(not c.valid for c in cases)
    reliability.add("images", f"The library (`predict_images`) and the CLI (`deepfake-detect image ... --json`, "
                    f"exit code {result.returncode}) on the {len(cases)} file cases:", "")  # fmt: skip
    reliability.table("images", ["file", "library", "CLI stderr"], rows)


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: c.name)
def test_bad_videos_get_one_line_and_exit_2(
    server: Server, tmp_path: Path, case, reliability: ReliabilityRecord
):  # fmt: skip
    path = case.make(tmp_path)
    with client_for(server.ts) as client, pytest.raises(BadVideoError, match=re.escape(case.message)):
        client.analyze_video(path)
    result = cli(server.ts, "video", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"deepfake-detect: {path}")
    assert case.message in result.stderr and "Traceback" not in result.stderr
    if "videos" not in reliability.sections:
        reliability.add("videos", "| video | library | CLI (exit 2, stderr) |", "| --- | --- | --- |")
    reliability.add(
        "videos", f"| {case.name} | BadVideoError | {short(result.stderr.strip().replace(str(path), 'FILE'))} |"
    )


# --- load -----------------------------------------------------------------------------------------
def test_load_64_clients_2000_requests(server: Server, reliability: ReliabilityRecord):
    payloads = loadtest.distinct_images(2000)
    references = loadtest.reference_logits(archive_service(server.models[MODEL].archive), payloads)
    # the inputs must be told apart by their answers, or cross-talk could pass unnoticed
    rounded = {tuple(np.round(row, 3)) for row in references}
    assert len(rounded) > 1900
    with client_for(server.ts, max_in_flight=64) as client:
        report = loadtest.run_load(client, payloads, references, clients=64, requests=2000)
    assert report.ok, report.summary() + f" {report.errors}"
    reliability.add("load", f"`scripts.bench.loadtest` logic, 64 clients, 2,000 different images: {report.summary()}.",
                    f"{len(rounded)} of the 2,000 images have answers distinct at 1e-3, so an answer delivered to "
                    "the wrong request would have been counted as a mismatch.", "")  # fmt: skip


def test_loadtest_script(server: Server, tmp_path: Path):
    argv = ["--url", server.ts.inference_url, "--management-url", server.ts.management_url, "--key-file",
            str(server.ts.key_file), "--archive", str(server.models[MODEL].archive), "--clients", "8",
            "--requests", "120", "--json", str(tmp_path / "load.json")]  # fmt: skip
    assert loadtest.main(argv) == 0
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["ok"] and report["answered"] == 120 and report["mismatches"] == 0
    assert loadtest.main([*argv[:0], "--url", "http://192.0.2.1:8080", "--archive", argv[9]]) == 2  # loopback only


# --- faults ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    """A TorchServe of its own serving the default archive: these tests kill its worker."""
    archive = server.models[MODEL].archive
    ts = TorchServe(tmp_path_factory.mktemp("faults"), archive.parent, {MODEL: archive.name}, ports=Ports.free())
    ts.start(timeout=300)
    try:
        yield ts
    finally:
        ts.stop()


def died_answers(ts: TorchServe) -> int:
    """Requests TorchServe answered because their worker died: 507, or 500 "Worker died." (the moment decides)."""
    log = ts.log_dir / "access_log.log"
    return (
        len(re.findall(rf'"POST /predictions/{MODEL} HTTP/1.1" (?:500|507) ', log.read_text())) if log.exists() else 0
    )


def test_worker_killed_mid_load(fault_server: TorchServe, server: Server, reliability: ReliabilityRecord):
    payloads = loadtest.distinct_images(800, seed=11)
    references = loadtest.reference_logits(archive_service(server.models[MODEL].archive), payloads)
    died_before = died_answers(fault_server)
    with client_for(fault_server, max_in_flight=64) as client:
        killed: list[int] = []
        report = loadtest.run_load(
            client, payloads, references, clients=64, requests=800,
            on_answer=lambda n: killed.append(loadtest.kill_worker(client)) if n == 200 else None,
        )  # fmt: skip
        client.wait_until_ready(timeout=60)
        new_pid = loadtest.worker_pid(client)
    died = died_answers(fault_server) - died_before
    assert killed and new_pid != killed[0]  # TorchServe started a new worker
    assert died >= 1  # the kill hit a batch in flight: its requests were answered 507 or 500 ...
    assert report.ok, report.summary() + f" {report.errors}"  # ... and retried: nothing lost, nothing mixed up
    reliability.add("faults", f"**Worker killed mid-load** (SIGKILL after 200 answers, 64 clients, 800 different "
                    f"images): {report.summary()}. TorchServe answered {died} requests of the dying batch with "
                    f"507 or 500 \"Worker died.\"; the client retried them and every request got its own image's "
                    f"answer. New worker pid {new_pid}.", "")  # fmt: skip


def test_worker_killed_mid_video(fault_server: TorchServe, tmp_path: Path, reliability: ReliabilityRecord):
    """One frame per request, so that the kill always meets frames in flight (a pack's retry is the same
    path: tests/test_client_transport.py sends a worker crash to packs too)."""
    video = write_video(tmp_path / "minute.mp4", constant_rate(1800, Fraction(30)))  # 60 s: 120 samples
    with client_for(fault_server, frames_per_request=1) as client:
        undisturbed = client.analyze_video(video)
        killed: list[int] = []
        died_before = died_answers(fault_server)
        disturbed = client.analyze_video(
            video, progress=lambda n: killed.append(loadtest.kill_worker(client)) if n == 30 else None
        )
    died = died_answers(fault_server) - died_before
    assert killed
    assert [f.index for f in disturbed.frames] == list(range(120))
    assert all(f.prediction is not None and f.error is None for f in disturbed.frames)
    for calm, hit in zip(undisturbed.frames, disturbed.frames, strict=True):
        assert hit.prediction.logits == pytest.approx(calm.prediction.logits, abs=1e-4)
    assert disturbed.summary.verdict == undisturbed.summary.verdict
    reliability.add("faults", f"**Worker killed mid-video** (a 60 s video, 120 frames at 2 fps, SIGKILL after 30 "
                    f"answers, one frame per request): {died} frame requests were answered 507 or 500 \"Worker "
                    f"died.\" and retried; the analysis ended with a result for all {len(disturbed.frames)} frames, "
                    "each equal to the undisturbed run's.", "")  # fmt: skip


def test_a_renewed_key_is_picked_up_from_the_key_file(fault_server: TorchServe, reliability: ReliabilityRecord):
    payload = loadtest.distinct_images(1)[0]
    old = fault_server.keys()["inference"]
    with client_for(fault_server) as client:
        client.predict_image(payload)  # the client has read the current key from the key file
        renewed = requests.post(
            f"{fault_server.management_url}/token?type=inference",
            headers={"Authorization": f"Bearer {fault_server.keys()['api']}"},
            timeout=30,
        )
        assert renewed.status_code == 200, renewed.text
        assert fault_server.keys()["inference"] != old  # TorchServe wrote the new key to key_file.json
        assert client.predict_image(payload).label in ("Real", "Fake")  # refused once, re-read, accepted
    config = ClientConfig(base_url=fault_server.inference_url, management_url=fault_server.management_url)
    with DeepfakeClient(config, token=old) as client, pytest.raises(AuthenticationError, match="keys also expire"):
        client.predict_image(payload)
    reliability.add("faults", "**Expired key**: after `POST /token?type=inference` renewed the inference key, a "
                    "client holding the old key from the key file re-read the file once and went on; one given "
                    "the old key explicitly got `AuthenticationError` (exit 3): \"TorchServe refused the token "
                    "... keys also expire\".", "",
                    "Read timeouts (`ServerTimeoutError` within the read timeout, never retried), a server that "
                    "never becomes ready (`wait_until_ready` fails at its deadline with the last worker state), "
                    "backoff (0.25 s doubling, capped at 4 s, no retry later than 60 s) and the retries of "
                    "502/503/504/507 and 500 \"Worker died\" are pinned by tests/test_client_transport.py "
                    "through an injected transport.", "")  # fmt: skip


# --- security -------------------------------------------------------------------------------------
def ipv4(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    return getattr(address, "ipv4_mapped", None) or address


def test_endpoints_listen_on_loopback_only(server: Server, reliability: ReliabilityRecord):
    frontend = psutil.Process(server.ts.pid())
    sockets = [c.laddr for c in frontend.connections("inet") if c.status == psutil.CONN_LISTEN]  # psutil 5.9
    listening = {(str(ipv4(address.ip)), address.port) for address in sockets}
    ports = vars(server.ts.ports)
    assert {port for _, port in listening} == set(ports.values())  # the five configured, nothing else
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, sockets  # Java shows it as ::ffff:127.0.0.1
    registration = requests.post(
        f"{server.ts.management_url}/models", params={"url": f"{MODEL}.mar"}, headers=server.headers("management"),
        timeout=30,
    )  # fmt: skip
    assert registration.status_code >= 400
    unauthorised = requests.post(f"{server.ts.inference_url}/predictions/{MODEL}", data=b"x", timeout=30)
    assert unauthorised.status_code == 400 and unauthorised.json()["type"] == "InvalidKeyException"
    reliability.add("security", f"- The frontend listens on {sorted(listening)}: loopback only.",
                    f"- Registering a model over HTTP: HTTP {registration.status_code}, "
                    f"\"{short(registration.json().get('message', ''))}\".",
                    "- Inference without a key: HTTP 400 `InvalidKeyException`.")  # fmt: skip


def test_no_temporary_file_outlives_its_request(server: Server, tmp_path: Path, reliability: ReliabilityRecord):
    def files() -> set[Path]:
        return {p for p in server.ts.tmp_dir.rglob("*") if p.is_file()}

    before = files()
    big = loadtest.distinct_images(1, size=1500)[0]  # ~MBs: a multipart upload Netty may spill to disk
    url = f"{server.ts.inference_url}/predictions/{MODEL}"
    for _ in range(3):
        multipart = requests.post(
            url, files={"file": ("x.png", big, "image/png")}, headers=server.headers(), timeout=60
        )
        assert multipart.status_code == 200
    assert files() == before
    # the CLI writes only where it is told: its plot, nothing in the folder it runs in or the temp folder
    video = write_video(tmp_path / "clip.mp4", constant_rate(60, Fraction(30)))
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir(), temp.mkdir()
    plot = tmp_path / "out" / "timeline.png"
    plot.parent.mkdir()
    env = {**__import__("os").environ, "TMPDIR": str(temp), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    result = cli(server.ts, "video", str(video), "--plot", str(plot), cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == [] and list(temp.iterdir()) == [] and list(plot.parent.iterdir()) == [plot]
    reliability.add("security", f"- TorchServe's temp folder ({len(before)} files: the unpacked archives) was "
                    "unchanged after large multipart uploads; the CLI analysing a video with `--plot` wrote the "
                    "plot and nothing else (its working folder and TMPDIR stayed empty; matplotlib keeps its "
                    "font cache in MPLCONFIGDIR).")  # fmt: skip

"""deploy/nginx/deepfake-serve.conf in front of a real TorchServe: what TorchServe alone cannot bound.

TorchServe's frontend has no read timeout (its Netty pipeline has no idle handler and no setting adds
one): a request whose body never comes holds a connection, without a token. The shipped proxy config,
run as it is (only its two addresses filled in), closes such a connection within its
client_body_timeout, refuses an oversized body before reading it, and passes real requests through.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts.operations.torchserve import Ports
from tests.conftest import Server, image_bytes
from tests.reliability_report import ReliabilityRecord

TIER = "integration"

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "deepfake-serve.conf"
BODY_TIMEOUT = 10  # client_body_timeout of the shipped config


@pytest.fixture(scope="module")
def proxy(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "make proxy installs Debian's nginx (make test does)"
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    port = Ports.free().inference
    upstream = server.ts.inference_url.removeprefix("http://")
    text = CONFIG.read_text().replace("{{LISTEN}}", f"127.0.0.1:{port}").replace("{{TORCHSERVE}}", upstream)
    (prefix / "nginx.conf").write_text(text)
    settings = f"daemon off; user root; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'};"
    command = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", settings]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)  # polling interval, bounded by the deadline
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def held_for(url: str, limit: float) -> float:
    """Send a POST's headers with no body; seconds until the server closes (``limit`` if it never does)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as connection:
        connection.sendall(b"POST /predictions/deepfake HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                           b"Content-Length: 100000\r\n\r\n")  # fmt: skip
        started = time.monotonic()
        try:
            while connection.recv(4096):
                pass
        except TimeoutError:
            return limit
        return time.monotonic() - started


def test_the_proxy_closes_a_request_that_never_sends_its_body(
    server: Server, proxy: str, reliability: ReliabilityRecord
):
    limit = BODY_TIMEOUT + 5.0
    results: dict[str, float] = {}
    threads = [threading.Thread(target=lambda k=k, u=u: results.__setitem__(k, held_for(u, limit)))
               for k, u in (("direct", server.ts.inference_url), ("proxied", proxy))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["direct"] == limit  # TorchServe alone: still held when the test gave up
    assert results["proxied"] < limit  # closed by the proxy's client_body_timeout
    reliability.add(
        "hostile",
        f"A POST whose declared body never comes: TorchServe alone still held the connection after {limit:g} s "
        f"(it has no read timeout); through deploy/nginx/deepfake-serve.conf it was closed after "
        f"{results['proxied']:.1f} s (client_body_timeout {BODY_TIMEOUT} s).",
    )


def test_the_proxy_passes_requests_and_refuses_oversized_bodies(server: Server, proxy: str):
    image = image_bytes((30, 140, 200))
    direct = server.predict("deepfake", image)
    proxied = requests.post(f"{proxy}/predictions/deepfake", data=image, timeout=60,
                            headers={**server.headers(), "Content-Type": "image/jpeg"})  # fmt: skip
    assert direct.status_code == proxied.status_code == 200
    assert proxied.json()["logits"] == pytest.approx(direct.json()["logits"], abs=1e-6)
    no_token = requests.post(f"{proxy}/predictions/deepfake", data=image, timeout=60)
    assert no_token.status_code == 400 and "InvalidKeyException" in no_token.text  # TorchServe still checks keys
    oversized = requests.post(f"{proxy}/predictions/deepfake", data=b"\0" * (33 * 2**20), timeout=60,
                              headers=server.headers())  # fmt: skip
    assert oversized.status_code == 413

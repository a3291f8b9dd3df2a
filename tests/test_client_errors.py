"""Client bookkeeping when some frames are refused (a unit test of the client, not of TorchServe).

A real TorchServe never refuses a valid frame, so a small local HTTP stub plays a server that
refuses exactly the frames whose pixel-encoded index is odd; the real server's own refusals are
covered in test_client.py and test_server.py.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from deepfake_client import ClientConfig, DeepfakeClient
from tests.media import constant_rate, read_index, write_video


class OddFramesRefused(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        index = read_index(Image.open(io.BytesIO(self.rfile.read(int(self.headers["Content-Length"])))))
        if index % 2:
            body, status = {"code": 400, "type": "InvalidImage", "message": f"frame {index} refused"}, 400
        else:
            p = index / 100
            body, status = {"label": "Real", "class_index": 0, "logits": [float(index), 0.0],
                            "probabilities": {"Real": 1 - p, "Fake": p}, "fake_probability": p,
                            "softmax_confidence": 1 - p, "adjusted_confidence": 0.6,
                            "temperature": 1.0, "alpha": 6.0}, 200  # fmt: skip
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OddFramesRefused)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_refused_frames_are_recorded_in_order_and_none_is_lost(stub: str, tmp_path: Path):
    video = write_video(tmp_path / "clip.mp4", constant_rate(300, Fraction(30)))  # 20 samples at 2 fps
    config = ClientConfig(base_url=stub, token="t", max_in_flight=6)
    with DeepfakeClient(config) as client:
        analysis = client.analyze_video(video, 2.0, image_format="PNG")
    assert [f.index for f in analysis.frames] == list(range(20))
    assert [f.time for f in analysis.frames] == [i / 2 for i in range(20)]
    for frame in analysis.frames:
        sampled = frame.frame_number  # the index written in the pixels of the frame that was sent
        if sampled % 2:
            assert frame.prediction is None and frame.error.endswith(f"frame {sampled} refused")
        else:
            assert frame.error is None and frame.prediction.logits == [float(sampled), 0.0]
    assert (analysis.summary.frames, analysis.summary.failed) == (20, 10)
    assert analysis.to_dict()["frames"][1]["fake_probability"] is None

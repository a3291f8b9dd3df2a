"""Section 13: gRPC instead of HTTP between the client and TorchServe's frontend.

TorchServe also answers inference over gRPC (``InferenceAPIsService/Predictions`` in its
``inference.proto``, on ``grpc_inference_port``, with the same token as HTTP in the ``authorization``
metadata). A request there reaches the handler as the input map it carries, with no endpoint header,
so the handler reads it as an Open Inference Protocol body: this section sends the very OIP bodies the
client sends over HTTP (``oip_request``), once through each frontend, side by side on one served archive.

``GrpcTransport`` is a ``requests`` transport adapter (the client's seam, ``DeepfakeClient(transport=...)``)
that carries the client's OIP inference requests over gRPC and everything else over HTTP, so the clip is
analysed by the unchanged client. TorchServe's wheel ships no Python stubs for its proto; the two messages
used have three fields between them, so they are encoded here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from deepfake_client import DEFAULT_FRAMES_PER_REQUEST, ClientConfig, DeepfakeClient, make_response
from deepfake_contract import OIP
from scripts.bench.benchmark.harness import ADOPT_GAIN, CONCURRENCY, MODEL_NAME, load, write_video
from scripts.operations.precision import DEFAULT_PRECISION
from scripts.operations.torchserve import TorchServe

PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
INFER_PATH = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
WIRES = {"http": "HTTP/1.1 (the client's)", "grpc": "gRPC"}
PACKINGS = (1, DEFAULT_FRAMES_PER_REQUEST)  # one image per request (many callers), the client's default for videos

# what a gRPC failure is to an HTTP client (the client's retry and error paths read the status)
_STATUS = {
    grpc.StatusCode.PERMISSION_DENIED: 401,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def predictions_request(model: str, inputs: Mapping[str, bytes], version: str | None = None) -> bytes:
    """TorchServe's ``PredictionsRequest``: model_name = 1, model_version = 2, map<string, bytes> input = 3."""
    message = _field(1, model.encode())
    if version:
        message += _field(2, version.encode())
    for name, value in inputs.items():
        message += _field(3, _field(1, name.encode()) + _field(2, value))
    return message


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[at]
        value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
        if not byte & 0x80:
            return value, at


def prediction_bytes(message: bytes) -> bytes:
    """``PredictionResponse.prediction`` (field 1); the other fields are skipped by their wire type."""
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, at = _read_varint(message, at)
        elif kind in (1, 5):
            at += 8 if kind == 1 else 4
        elif kind == 2:
            size, at = _read_varint(message, at)
            if number == 1:
                return message[at : at + size]
            at += size
        else:
            raise ValueError(f"unexpected protobuf wire type {kind}")
    return b""


def grpc_target(ts: TorchServe) -> str:
    return f"127.0.0.1:{ts.ports.grpc_inference}"


def channel(target: str) -> grpc.Channel:
    """A channel that carries messages as large as TorchServe lets through."""
    size = 64 * 2**20  # above config.properties' max_request_size, which the frontend enforces
    return grpc.insecure_channel(
        target, options=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
    )


def predictions(chan: grpc.Channel) -> Callable[..., bytes]:
    return chan.unary_unary(PREDICTIONS, request_serializer=bytes, response_deserializer=prediction_bytes)


class GrpcTransport(BaseAdapter):
    """The client's OIP inference requests over gRPC, every other request over HTTP.

    An answer the handler refuses (a 4xx) comes back through TorchServe's gRPC frontend as a success with
    the error body: its status is lost, so it is answered here as 422 with that body (the client then
    reports the handler's message).
    """

    def __init__(self, target: str, in_flight: int = CONCURRENCY):
        super().__init__()
        self._channel = channel(target)
        self._predict = predictions(self._channel)
        self._http = HTTPAdapter(pool_maxsize=in_flight + 4)

    def send(  # BaseAdapter.send's signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        match = INFER_PATH.fullmatch(urlsplit(request.url or "").path)
        if request.method != "POST" or match is None:
            return self._http.send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=dict(proxies or {})
            )
        body = request.body.encode() if isinstance(request.body, str) else request.body
        if not isinstance(body, bytes):
            raise TypeError(f"an OIP body is JSON bytes, not {type(body).__name__}")
        auth = request.headers.get("Authorization")
        seconds = sum(t for t in timeout if t) if isinstance(timeout, tuple) else timeout
        try:
            answer = self._predict(
                predictions_request(match["model"], {"body": body}, match["version"]),
                metadata=[("authorization", auth)] if auth else None,
                timeout=seconds,
            )
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise requests.ReadTimeout(details, request=request) from None
            status = _STATUS.get(code, 500)
            return make_response(status, json={"code": status, "type": code.name, "message": details}, request=request)
        refused = answer[:200].lstrip().startswith(b'{"error"')
        return make_response(422 if refused else 200, content=answer, request=request, headers=_JSON)

    def close(self) -> None:
        self._channel.close()
        self._http.close()


_JSON = {"Content-Type": "application/json"}


def grpc_sender(chan: grpc.Channel, key: str) -> Callable[[bytes], None]:
    """Send one OIP body through the gRPC frontend on ``chan`` with the inference ``key`` (``load``'s
    ``sender``)."""
    predict, metadata = predictions(chan), [("authorization", f"Bearer {key}")]

    def send(body: bytes) -> None:
        answer = predict(predictions_request(MODEL_NAME, {"body": body}), metadata=metadata, timeout=300)
        if b'"outputs"' not in answer[:4096]:
            raise RuntimeError(f"gRPC answer without outputs: {answer[:200]!r}")

    return send


def clip_seconds(ts: TorchServe, clip: Path, wire: str) -> float:
    """The clip analysed end to end by an in-process client at its default frames per request."""
    config = ClientConfig(base_url=ts.inference_url, management_url=ts.management_url, key_file=ts.key_file)
    transport = GrpcTransport(grpc_target(ts)) if wire == "grpc" else None
    with DeepfakeClient(config, transport=transport) as client:
        started = time.perf_counter()
        analysis = client.analyze_video(clip)
        elapsed = time.perf_counter() - started
    if any(frame.error for frame in analysis.frames):
        raise RuntimeError(f"{wire}: frames refused: {[f.error for f in analysis.frames if f.error][:3]}")
    return elapsed


def grpc_vs_http(ts: TorchServe, payloads: list[bytes], workdir: Path, total: int, seconds: float) -> dict[str, Any]:
    """16 clients of one and of eight images per request, a lone request, and the clip, over each wire of one
    running server."""
    clip = write_video(workdir / "grpc_clip.mp4", seconds)
    rows: dict[str, Any] = {wire: {"crowd": {}} for wire in WIRES}
    with channel(grpc_target(ts)) as chan:
        clip_seconds(ts, clip, "http")  # warm-up
        senders = {"http": None, "grpc": grpc_sender(chan, ts.keys()["inference"])}
        for per_request in PACKINGS:  # the wires take turns at each measurement, so drift favours neither
            requests_total = max(CONCURRENCY * 2, total // per_request)
            for wire, sender in senders.items():
                rows[wire]["crowd"][str(per_request)] = load(
                    ts, payloads, CONCURRENCY, requests_total, OIP, per_request, sender=sender
                )
        for wire, sender in senders.items():
            rows[wire]["lone"] = load(ts, payloads, 1, total // 3, OIP, sender=sender)
        for wire in WIRES:
            rows[wire]["video_s"] = clip_seconds(ts, clip, wire)
    return {"seconds": seconds, "rows": rows}


def gains(g: dict[str, Any]) -> dict[str, float]:
    """gRPC's crowd rate over HTTP's, per frames per request."""
    http, grpc_row = g["rows"]["http"]["crowd"], g["rows"]["grpc"]["crowd"]
    return {k: grpc_row[k]["images_per_s"] / http[k]["images_per_s"] for k in http}


def adopted(g: dict[str, Any]) -> bool:
    """gRPC is worth a second wire when the crowd gains ADOPT_GAIN at every packing and the clip is no slower."""
    return min(gains(g).values()) >= ADOPT_GAIN and g["rows"]["grpc"]["video_s"] <= g["rows"]["http"]["video_s"]


def grpc_markdown(g: dict[str, Any]) -> str:
    rows = g["rows"]
    packings = list(rows["http"]["crowd"])
    lines = [
        f"## 13. gRPC instead of HTTP to TorchServe's frontend ({DEFAULT_PRECISION}, the same OIP bodies)",
        "",
        "| wire | "
        + " | ".join(f"{CONCURRENCY} clients x {k} per request, images/s" for k in packings)
        + f" | lone p50 ms | {g['seconds']:g} s 720p clip (client in-process) | frontend cores (x {packings[-1]}) |",
        "| --- | " + "--- | " * len(packings) + "--- | --- | --- |",
    ]
    for wire, r in rows.items():
        crowd = r["crowd"]
        lines.append(
            f"| {WIRES[wire]} | "
            + " | ".join(f"{crowd[k]['images_per_s']:.1f}" for k in packings)
            + f" | {r['lone']['p50_ms']:.0f} | {r['video_s']:.2f} s | {crowd[packings[-1]]['cores']['frontend']:.2f} |"
        )
    http, grpc_row = rows["http"], rows["grpc"]
    ratios = ", ".join(f"{gain:.2f}x at {k} per request" for k, gain in gains(g).items())
    lines += [
        "",
        f"gRPC / HTTP: {ratios}; the clip {grpc_row['video_s']:.2f} s against {http['video_s']:.2f} s: "
        + (
            "adopted."
            if adopted(g)
            else f"not adopted: the client stays on HTTP (a gain of {ADOPT_GAIN - 1:.0%} or more at every packing "
            "with the clip no slower would be). The frontend's share of the cores is what gRPC could save, and "
            "with packed frames it is already small."
        ),
    ]
    return "\n".join(lines)

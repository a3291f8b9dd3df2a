"""The original app's web page, rebuilt on DeepfakeClient.

Flask, as the original app used: the page needs a handful of routes, the work behind each is the
client library's, and a WSGI app served by waitress (no debug mode, no reloader) is all it takes.
A long video runs as a background job whose progress the page polls.

Safe by construction: the upload size is capped before anything is read (Flask's
MAX_CONTENT_LENGTH); the type is sniffed from the first bytes before anything is decoded; each
video lands in its own temporary directory under a fixed name, removed when its analysis ends; an
uploaded file name is only ever echoed back as text, never used as a path.
"""

from __future__ import annotations

import base64
import io
import math
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepfake_client._client import DeepfakeClient
from deepfake_client._config import ClientConfig
from deepfake_client._exceptions import (
    AuthenticationError,
    DeepfakeError,
    InputError,
    InputRejectedError,
    ServerError,
    ServerUnavailableError,
)
from deepfake_client._results import VideoAnalysis, json_safe
from deepfake_client._video import SampledFrame, probe_duration

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 200  # a few minutes of 1080p; images are further capped by TorchServe (32 MiB)
DEFAULT_FPS = 2.0
DEFAULT_MAX_JOBS = 4  # video analyses at once: each keeps 16 frames in flight on the one TorchServe
THUMBNAIL_PX = 96
JOB_TTL_S = 900.0  # a finished job's result stays this long for the page to fetch
STATIC = Path(__file__).with_name("static")

# First bytes of the formats the page takes; anything else is refused before decoding.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def sniff(head: bytes) -> tuple[str, str] | None:
    """("image" | "video", extension) from a file's first bytes; None for anything else."""
    if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image", ""
    if head[4:8] == b"ftyp":
        return "video", ".mp4"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "video", ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", ".avi"
    return None


def display_name(filename: str | None) -> str:
    """The upload's name, for display only: the last path component, printable, at most 100 chars."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:100] or "upload"


@dataclass(frozen=True)
class WebConfig:
    client: ClientConfig = field(default_factory=ClientConfig.from_env)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    fps: float = DEFAULT_FPS
    max_jobs: int = DEFAULT_MAX_JOBS


class WebError(Exception):
    """An answer for the page: HTTP status and a message a person can act on."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def web_error(exc: DeepfakeError, path: Path | None = None, name: str = "") -> WebError:
    """The client's exception tree, as HTTP answers of this app (the temporary ``path`` shown as ``name``)."""
    message = str(exc).replace(str(path), name) if path is not None else str(exc)
    if isinstance(exc, InputRejectedError) and exc.status == 413:
        return WebError(413, "too_large", message)
    if isinstance(exc, InputError):
        return WebError(400, "bad_input", message)
    if isinstance(exc, AuthenticationError):
        return WebError(503, "server_auth", f"the web app's TorchServe key was refused: {exc}")
    if isinstance(exc, ServerUnavailableError):
        return WebError(503, "server_unavailable", f"TorchServe is down or not ready ({exc}); start it: make start")
    if isinstance(exc, ServerError):
        return WebError(502, "server_error", str(exc))
    return WebError(500, "error", str(exc))


@dataclass
class Job:
    """One video analysis in the background: progress, then its result or its error."""

    id: str
    name: str
    total: int | None
    done: int = 0
    state: str = "running"  # running | done | error
    result: dict[str, Any] | None = None
    thumbnails: dict[int, str] = field(default_factory=dict)
    error: WebError | None = None
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"job": self.id, "name": self.name, "state": self.state, "done": self.done,
                                "total": self.total}  # fmt: skip
        if self.result is not None:
            data["result"] = self.result
            data["thumbnails"] = [self.thumbnails.get(i) for i in range(len(self.result["frames"]))]
        if self.error is not None:
            data["error"] = {"error": self.error.error, "message": self.error.message}
        return data


def video_json(analysis: VideoAnalysis, name: str) -> dict[str, Any]:
    """What ``deepfake-detect video --json`` prints, with the upload's name as its source (not the
    temporary path it was analysed from)."""
    return {**json_safe(analysis.to_dict()), "source": name}


def thumbnail(sample: SampledFrame) -> str:
    image = sample.image.copy()
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def create_app(config: WebConfig | None = None, client: DeepfakeClient | None = None) -> Flask:
    config = config or WebConfig()
    client = client or DeepfakeClient(config.client)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    jobs: dict[str, Job] = {}
    lock = threading.Lock()
    limit_mb = config.max_upload_bytes / 1024 / 1024

    @app.errorhandler(WebError)
    def on_web_error(exc: WebError):
        return jsonify(error=exc.error, message=exc.message), exc.status

    @app.errorhandler(RequestEntityTooLarge)
    def on_too_large(exc: RequestEntityTooLarge):
        return jsonify(error="too_large", message=f"the file is larger than the upload limit of {limit_mb:g} MB"), 413

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException):
        return jsonify(error="http", message=exc.description), exc.code

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC, name)

    @app.get("/api/health")
    def health():
        try:
            ready = client.ready()
        except DeepfakeError as exc:
            raise web_error(exc) from None
        if not ready:
            raise WebError(503, "server_unavailable", f"model {client.config.model} has no READY worker yet")
        return jsonify(ready=True, model=client.config.model, upload_limit_mb=limit_mb)

    @app.post("/api/analyze")
    def analyze():
        upload = request.files.get("file")
        if upload is None:
            raise WebError(400, "bad_input", "send the file in a multipart form field named 'file'")
        name = display_name(upload.filename)
        kind = sniff(upload.stream.read(16))
        upload.stream.seek(0)
        if kind is None:
            raise WebError(400, "bad_input", f"{name}: not an image (JPEG, PNG, WebP, GIF, BMP, TIFF) or a video "
                           "(MP4, MOV, MKV, WebM, AVI)")  # fmt: skip
        if kind[0] == "image":
            try:
                prediction = client.predict_image(upload.read())
            except DeepfakeError as exc:
                raise web_error(exc) from None
            return jsonify(kind="image", name=name, **prediction.to_json())
        folder = Path(tempfile.mkdtemp(prefix="deepfake-web-"))
        handed_to_job = False
        try:
            path = folder / f"upload{kind[1]}"  # never the uploaded name
            upload.save(path)
            if request.args.get("async") in ("1", "true"):
                job = start_job(name, path, folder)  # the job removes the folder when it ends
                handed_to_job = True
                return jsonify(kind="video", job=job.id, name=name, total=job.total, status=f"/api/jobs/{job.id}"), 202
            try:
                analysis = client.analyze_video(path, config.fps)
            except DeepfakeError as exc:
                raise web_error(exc, path, name) from None
            return jsonify(kind="video", name=name, **video_json(analysis, name))
        finally:
            if not handed_to_job:
                shutil.rmtree(folder, ignore_errors=True)

    def start_job(name: str, path: Path, folder: Path) -> Job:
        duration = probe_duration(path)  # for the progress bar; read before taking the lock
        with lock:
            expire_jobs()
            if sum(j.state == "running" for j in jobs.values()) >= config.max_jobs:
                raise WebError(503, "busy", f"{config.max_jobs} videos are being analysed; try again shortly")
            job = Job(uuid.uuid4().hex, name, math.ceil(duration * config.fps) if duration else None)
            jobs[job.id] = job

        def run() -> None:
            try:
                analysis = client.analyze_video(
                    path,
                    config.fps,
                    progress=lambda done: setattr(job, "done", done),
                    on_frame=lambda sample: job.thumbnails.__setitem__(sample.index, thumbnail(sample)),
                )
                job.result = {"kind": "video", "name": name, **video_json(analysis, name)}
                job.total, job.state = len(analysis.frames), "done"
            except DeepfakeError as exc:
                job.error, job.state = web_error(exc, path, name), "error"
            except Exception as exc:  # anything else still ends the job with a message
                job.error, job.state = WebError(500, "error", f"{type(exc).__name__}: {exc}"), "error"
            finally:
                job.finished = time.monotonic()
                shutil.rmtree(folder, ignore_errors=True)  # the upload lives exactly as long as its analysis

        threading.Thread(target=run, name=f"video-{job.id[:8]}", daemon=True).start()
        return job

    def expire_jobs() -> None:
        now = time.monotonic()
        for key in [k for k, j in jobs.items() if j.finished and now - j.finished > JOB_TTL_S]:
            del jobs[key]

    @app.get("/api/jobs/<job_id>")
    def job_status(job_id: str):
        with lock:
            job = jobs.get(job_id)
        if job is None:
            raise WebError(404, "no_such_job", f"no video analysis {job_id!r} (finished ones are kept {JOB_TTL_S:g} s)")
        return jsonify(job.to_json())

    return app

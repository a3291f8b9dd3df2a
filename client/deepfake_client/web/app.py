"""The original app's web page, rebuilt on DeepfakeClient.

Flask, as the original app used: the page needs a handful of routes, the work behind each is the
client library's, and a WSGI app served by waitress (no debug mode, no reloader) is all it takes.
A long video runs as a background job whose progress the page polls.

Safe by construction: the upload size is capped before anything is read (waitress refuses a larger
body before reading it, Flask's MAX_CONTENT_LENGTH backs it); the type is sniffed from the first
bytes before anything is decoded; each video lands in its own temporary directory under a fixed
name, removed when its analysis ends; an uploaded file name is only ever echoed back as text, never
used as a path. It serves only its own origin: a request for another Host name (DNS rebinding) is
refused, and so is a state-changing request from another site's page (its Origin, or
Sec-Fetch-Site); every answer carries a Content-Security-Policy that allows only the page's own
scripts and forbids framing. Every analysis, synchronous or not, counts against ``max_jobs``.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request, send_from_directory
from PIL import Image, ImageOps
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepfake_client._client import DeepfakeClient
from deepfake_client._config import DEFAULT_FPS, ClientConfig
from deepfake_client._exceptions import (
    AuthenticationError,
    CancelledError,
    DeepfakeError,
    InputError,
    InputRejectedError,
    ServerError,
    ServerUnavailableError,
)
from deepfake_client._explain import draw_boxes, fitted, fitted_overlay
from deepfake_client._media import IMAGE_FORMATS, SNIFF_BYTES, VIDEO_FORMATS, sniff
from deepfake_client._results import VideoAnalysis, json_safe
from deepfake_client._video import SampledFrame, probe_duration
from deepfake_contract import Explanation, Prediction, is_no_face

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 200  # a few minutes of 1080p; images are further capped by TorchServe (32 MiB)
DEFAULT_MAX_VIDEO_MINUTES = 60.0  # per video: a crafted file can put hours between two frames in a few KB
DEFAULT_MAX_JOBS = 4  # video analyses at once: each keeps 16 frames in flight on the one TorchServe
# Host names the page answers to when no others are configured: this machine's, on any port. A DNS
# rebinding attack arrives with the attacker's own name, and is refused.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MULTIPART_OVERHEAD = 64 * 1024  # a form's boundaries and part headers around the uploaded file
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
THUMBNAIL_PX = 96
VIEW_PX = 640  # the side of the image views (boxes, explanation overlays) the page shows
EXPLAINED_FRAMES = 3  # a video's most suspicious frames shown with their explanation
JOB_TTL_S = 900.0  # a finished job's result stays this long for the page to fetch
STATIC = Path(__file__).with_name("static")
logger = logging.getLogger(__name__)


def display_name(filename: str | None) -> str:
    """The upload's name, for display only: the last path component, printable, at most 100 chars."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:100] or "upload"


@dataclass(frozen=True)
class WebConfig:
    client: ClientConfig = field(default_factory=ClientConfig.from_env)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    max_video_seconds: float = DEFAULT_MAX_VIDEO_MINUTES * 60  # longer videos are refused (400)
    fps: float = DEFAULT_FPS
    max_jobs: int = DEFAULT_MAX_JOBS
    # Host header values the page answers: "name" (any port) or "name:port". A deployment behind a
    # proxy adds the name users reach it by (--allowed-host).
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS


def _host_port(value: str) -> tuple[str | None, int | None]:
    parts = urlsplit("//" + value.strip())
    return parts.hostname, parts.port


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names this page: an allowed "name:port" exactly, or an allowed name on any port."""
    try:
        name, port = _host_port(host)
        entries = [_host_port(entry) for entry in allowed]
    except ValueError:  # a port that is not a number
        return False
    return name is not None and any(name == n and p in (None, port) for n, p in entries)


def cross_site(origin: str | None, fetch_site: str | None, host: str) -> bool:
    """A state-changing request sent by another site's page: its Origin is not this page's, or the browser
    says it is not same-origin (Sec-Fetch-Site). Requests from tools (curl, the tests) carry neither."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != host.strip().lower()


class WebError(Exception):
    """An answer for the page: HTTP status and a message a person can act on."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def web_error(exc: DeepfakeError, path: Path | str | None = None, name: str = "") -> WebError:
    """The client's exception tree, as HTTP answers of this app (the temporary ``path``, or the client's
    "<bytes>", shown as the upload's ``name``)."""
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
    state: str = "running"  # running | done | error | cancelled
    cancel: threading.Event = field(default_factory=threading.Event)
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


def data_url(image: Image.Image, side: int, quality: int = 70) -> str:
    """``image`` shrunk to fit ``side`` pixels, as a JPEG data URL (the page's CSP allows data: images)."""
    image = image.convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(sample: SampledFrame) -> Image.Image:
    image = sample.image.convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return image


def frame_thumbnails(analysis: VideoAnalysis, thumbnails: dict[int, Image.Image], sizes: dict[int, int]) -> dict:
    """Each frame's thumbnail as a data URL, with its faces outlined and named by person (face tracks)."""
    person = {(p.index, tuple(p.box)): track.name for track in analysis.tracks for p in track.points}
    urls = {}
    for frame in analysis.frames:
        small = thumbnails.get(frame.index)
        if small is None:
            continue
        faces = frame.prediction.faces if frame.prediction is not None and frame.prediction.faces else []
        if faces:
            scale = small.width / sizes[frame.index]
            boxes = [([v * scale for v in face.box], face.prediction.fake_probability) for face in faces]
            labels = [person.get((frame.index, tuple(face.box)), "").replace("person ", "") for face in faces]
            small = draw_boxes(small, boxes, labels)
        urls[frame.index] = data_url(small, THUMBNAIL_PX)
    return urls


def image_views(image: Image.Image, prediction: Prediction, explanation: Explanation | None) -> dict[str, Any]:
    """What the page shows of an analysed image: face boxes drawn on it (face-crop archives) and the
    explanation's heatmap overlay, as data URLs, with the explanation itself."""
    views: dict[str, Any] = {"explanation": None, "overlay": None, "boxes": None}
    if prediction.faces:
        preview, scale = fitted(image, VIEW_PX)  # drawn on the preview, not on the full image
        boxes = [([v * scale for v in face.box], face.prediction.fake_probability) for face in prediction.faces]
        views["boxes"] = data_url(draw_boxes(preview, boxes), VIEW_PX, 85)
    if explanation is not None:
        views["explanation"] = explanation.to_json()
        views["overlay"] = data_url(fitted_overlay(image, explanation, VIEW_PX), VIEW_PX, 85)
    return views


def explained_frames(client: DeepfakeClient, analysis: VideoAnalysis, count: int) -> list[dict[str, Any]]:
    """The most suspicious frames with their heatmap overlays; explanations that fail are left out (the
    verdict stands without them)."""
    try:
        explained = client.explain_top_frames(analysis, count)
    except DeepfakeError as exc:
        logger.warning("could not explain %s's frames: %s", analysis.source, exc)
        return []
    return [
        {
            "index": frame.index,
            "time": frame.time,
            "fake_probability": explanation.prediction.fake_probability,
            "frame": data_url(image, VIEW_PX, 85),
            "overlay": data_url(fitted_overlay(image, explanation, VIEW_PX), VIEW_PX, 85),
        }
        for frame, image, explanation in explained
    ]


def create_app(config: WebConfig | None = None, client: DeepfakeClient | None = None) -> Flask:
    config = config or WebConfig()
    client = client or DeepfakeClient(config.client)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes
    jobs: dict[str, Job] = {}
    lock = threading.Lock()
    limit_mb = config.max_upload_bytes / 1024 / 1024
    running_sync = [0]  # synchronous video analyses under way (the jobs dict holds the others)

    @app.before_request
    def only_this_origin():
        if not host_allowed(request.host, config.allowed_hosts):
            return jsonify(
                error="bad_host", message=f"this page does not answer for the host {request.host[:100]!r}"
            ), 421
        if request.method not in SAFE_METHODS and cross_site(
            request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), request.host
        ):
            return jsonify(error="cross_site", message="requests from another site's page are refused"), 403
        return None

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def running() -> int:
        return sum(j.state == "running" for j in jobs.values()) + running_sync[0]

    def take_slot() -> None:
        """Count one more analysis, or 503 busy when max_jobs are under way (the lock is held)."""
        expire_jobs()
        if running() >= config.max_jobs:
            raise WebError(503, "busy", f"{config.max_jobs} videos are being analysed; try again shortly")

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
        return jsonify(
            ready=True,
            model=client.config.model,
            upload_limit_mb=limit_mb,
            notice=client.model_notice(),
            card=metadata.card.to_json() if (metadata := client.metadata()) else None,
            image_formats=IMAGE_FORMATS,
            video_formats=VIDEO_FORMATS,
        )

    @app.post("/api/analyze")
    def analyze():
        upload = request.files.get("file")
        if upload is None:
            raise WebError(400, "bad_input", "send the file in a multipart form field named 'file'")
        name = display_name(upload.filename)
        kind = sniff(upload.stream.read(SNIFF_BYTES))
        upload.stream.seek(0)
        if kind is None:
            raise WebError(400, "bad_input", f"{name}: not an image ({', '.join(IMAGE_FORMATS)}) or a video "
                           f"({', '.join(VIDEO_FORMATS)})")  # fmt: skip
        if kind[0] == "image":
            notice = client.model_notice()
            data = upload.read()
            try:
                prediction = client.predict_image(data)
            except InputRejectedError as exc:
                if not is_no_face(exc.status, exc.error_type):
                    raise web_error(exc, "<bytes>", name) from None
                message = str(exc).replace("<bytes>: ", "")  # an answer, as the CLI gives it: no verdict
                return jsonify(kind="image", name=name, no_face=True, message=message, model_notice=notice)
            except DeepfakeError as exc:
                raise web_error(exc, "<bytes>", name) from None
            try:
                explanation: Explanation | None = client.explain(data)
            except DeepfakeError as exc:  # the verdict stands without it
                logger.warning("could not explain %s: %s", name, exc)
                explanation = None
            with Image.open(io.BytesIO(data)) as picture:  # TorchServe decoded it: so does Pillow here
                views = image_views(ImageOps.exif_transpose(picture), prediction, explanation)
            answer = {"kind": "image", "name": name, "no_face": False, "model_notice": notice}
            return jsonify(**answer, **prediction.to_json(), **views)
        folder = Path(tempfile.mkdtemp(prefix="deepfake-web-"))
        handed_to_job = False
        try:
            path = folder / f"upload{kind[1]}"  # never the uploaded name
            upload.save(path)
            if request.args.get("async") in ("1", "true"):
                job = start_job(name, path, folder)  # the job removes the folder when it ends
                handed_to_job = True
                return jsonify(kind="video", job=job.id, name=name, total=job.total, status=f"/api/jobs/{job.id}"), 202
            with lock:
                take_slot()
                running_sync[0] += 1
            try:
                analysis = client.analyze_video(path, config.fps, max_seconds=config.max_video_seconds)
            except DeepfakeError as exc:
                raise web_error(exc, path, name) from None
            finally:
                with lock:
                    running_sync[0] -= 1
            frames = explained_frames(client, analysis, EXPLAINED_FRAMES)
            return jsonify(kind="video", name=name, **video_json(analysis, name), explained_frames=frames)
        finally:
            if not handed_to_job:
                shutil.rmtree(folder, ignore_errors=True)

    def start_job(name: str, path: Path, folder: Path) -> Job:
        duration = probe_duration(path)  # for the progress bar; read before taking the lock
        with lock:
            take_slot()
            job = Job(uuid.uuid4().hex, name, math.ceil(duration * config.fps) if duration else None)
            jobs[job.id] = job

        small: dict[int, Image.Image] = {}
        widths: dict[int, int] = {}

        def keep_thumbnail(sample: SampledFrame) -> None:
            small[sample.index], widths[sample.index] = thumbnail(sample), sample.image.width

        def run() -> None:
            try:
                analysis = client.analyze_video(
                    path,
                    config.fps,
                    progress=lambda done: setattr(job, "done", done),
                    on_frame=keep_thumbnail,
                    cancel=job.cancel,
                    max_seconds=config.max_video_seconds,
                )
                job.result = {
                    "kind": "video",
                    "name": name,
                    **video_json(analysis, name),
                    "explained_frames": explained_frames(client, analysis, EXPLAINED_FRAMES),
                }
                job.thumbnails = frame_thumbnails(analysis, small, widths)
                job.total, job.state = len(analysis.frames), "done"
            except CancelledError:
                job.state = "cancelled"
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

    def find_job(job_id: str) -> Job:
        with lock:
            job = jobs.get(job_id)
        if job is None:
            raise WebError(
                404, "no_such_job", f"no video analysis {job_id[:40]!r} (finished ones are kept {JOB_TTL_S:g} s)"
            )
        return job

    @app.get("/api/jobs/<job_id>")
    def job_status(job_id: str):
        return jsonify(find_job(job_id).to_json())

    @app.delete("/api/jobs/<job_id>")
    def cancel_job(job_id: str):
        """Stop a running analysis before its next frame; its slot is free once the frames in flight return."""
        job = find_job(job_id)
        job.cancel.set()
        return jsonify(job.to_json()), 202

    return app


def create_server(config: WebConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **options: Any):
    """The page on waitress, which refuses a body over the upload limit before reading it (its own default
    reads up to 1 GiB first)."""
    from waitress import create_server as waitress_server

    options = {"threads": 8, "ident": "deepfake-web", **options}
    limit = config.max_upload_bytes + MULTIPART_OVERHEAD
    return waitress_server(create_app(config), host=host, port=port, max_request_body_size=limit, **options)

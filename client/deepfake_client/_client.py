"""DeepfakeClient: images and videos in, verdicts out, over TorchServe's HTTP APIs."""

from __future__ import annotations

import dataclasses
import email.utils
import io
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from PIL import Image
from requests.adapters import BaseAdapter

from deepfake_client._aggregate import AggregationConfig, summarise, sustained_segments
from deepfake_client._config import (
    DEFAULT_FPS,
    RETRY_STATUSES,
    WORKER_DIED_MESSAGE,
    ClientConfig,
    Token,
    resolve_token,
)
from deepfake_client._exceptions import (
    AuthenticationError,
    BadVideoError,
    CancelledError,
    DeepfakeError,
    InputError,
    InputRejectedError,
    MalformedAnswerError,
    ModelNotFoundError,
    ServerError,
    ServerTimeoutError,
    ServerUnavailableError,
)
from deepfake_client._replicas import ReplicaPool
from deepfake_client._results import FrameResult, ImageResult, VideoAnalysis
from deepfake_client._tracks import face_signature, link_tracks
from deepfake_client._transport import Clock, pooled_transport
from deepfake_client._video import SampledFrame, native_frame_rate, probe_duration, sample_frames
from deepfake_contract import (
    DEFAULT_INPUT_SIZE,
    MAX_ANSWER_BYTES,
    MAX_IMAGES_PER_REQUEST,
    OIP,
    ContractError,
    ErrorAnswer,
    Explanation,
    ModelMetadata,
    Prediction,
    WireFormat,
    is_no_face,
    wire_format,
    workers_ready,
)

ImageInput = str | Path | bytes | Image.Image
logger = logging.getLogger("deepfake_client")  # retries, fail-overs (INFO/WARNING), timings (DEBUG); silent unless set
ProgressCallback = Callable[[int], None]  # called with the number of frames answered so far
FRAME_SIZE = DEFAULT_INPUT_SIZE  # the client asks the archive for its own (DeepfakeClient.input_size)
# The most the client reads of one answer: the server's own answers stay under MAX_ANSWER_BYTES; management
# listings are smaller still. Anything larger is not an answer of this service.
MAX_READ_BYTES = 4 * MAX_ANSWER_BYTES
READ_CHUNK = 64 * 1024


class _TooSlow(Exception):
    """The body did not arrive within the request's total deadline."""


def _read_body(response: requests.Response, deadline: float) -> None:
    """Read a streamed body within ``deadline`` (monotonic) and at most MAX_READ_BYTES: each read returns
    what has arrived, so a server trickling its answer cannot stretch the request past the deadline by
    more than one read timeout."""
    if response._content is not False:  # already read (an injected transport)
        return
    raw, chunks, size = response.raw, [], 0
    read = getattr(raw, "read1", raw.read)
    while True:
        if time.monotonic() > deadline:
            response.close()
            raise _TooSlow
        chunk = read(READ_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_READ_BYTES:
            response.close()
            raise MalformedAnswerError(f"an answer larger than {MAX_READ_BYTES} bytes from {response.url}", None)
        chunks.append(chunk)
    response._content = b"".join(chunks)
    response._content_consumed = True


def answer_json(response: requests.Response, what: str, kind: type = dict) -> Any:
    """The JSON of an answer, which must be a ``kind``; MalformedAnswerError for anything else."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        raise MalformedAnswerError(
            f"{what}: the server's answer is not JSON: {response.text[:80]!r}", response.status_code
        ) from None
    if not isinstance(data, kind):
        raise MalformedAnswerError(
            f"{what}: expected a JSON {'object' if kind is dict else 'list'}, got {type(data).__name__}",
            response.status_code,
        )
    return data


def encode_frame(
    image: Image.Image, image_format: str = "JPEG", quality: int = 95, size: int | None = FRAME_SIZE
) -> bytes:
    """Resize a frame to size x size (bilinear, like the server) and encode it for the wire.

    ``size=None`` keeps the frame's own size: the server then resizes it.
    """
    buffer = io.BytesIO()
    frame = image if image.mode == "RGB" else image.convert("RGB")
    if size is not None and frame.size != (size, size):
        frame = frame.resize((size, size), Image.Resampling.BILINEAR)
    if image_format.upper() == "PNG":
        frame.save(buffer, format="PNG")
    else:
        frame.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _token_refused(response: requests.Response) -> bool:
    """TorchServe answers a missing, wrong or expired key with 400 InvalidKeyException."""
    if response.status_code in (401, 403):
        return True
    return response.status_code == 400 and _error_details(response)[0] == "InvalidKeyException"


def _retry_after(response: requests.Response | None) -> float | None:
    """The seconds a ``Retry-After`` header asks for (a number, or an HTTP date), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retryable(response: requests.Response) -> bool:
    """An answer that says the request never reached a working model: worth sending again."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code == 500 and WORKER_DIED_MESSAGE in _error_details(response)[1]


def _image_too_large(response: requests.Response, error_type: str) -> bool:
    """A 413 from the handler (an image over the pixel limit), not TorchServe's body-size limit: a native
    ImageTooLarge, or an OIP error body (the frontend's own 413 is neither)."""
    if error_type.startswith("Image"):
        return True
    try:
        return "error" in response.json()
    except (ValueError, TypeError, RecursionError):
        return False


def _no_face(exc: InputError) -> bool:
    """A face-crop archive's answer for an image without a face."""
    return isinstance(exc, InputRejectedError) and is_no_face(exc.status, exc.error_type)


def check_local_path(source: str | Path) -> None:
    """URLs are not fetched (the client reads local files only): say so instead of "no such file"."""
    if isinstance(source, str) and "://" in source and source.split("://", 1)[0].isalpha():
        raise InputError(
            f"{source}: URLs are not fetched; download the file first (curl -LO '{source[:200]}') and pass its path"
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _nothing_listening(exc: Exception) -> bool:
    """A connection that could not even be opened (refused, or a name that does not resolve)."""
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), urllib3.exceptions.NewConnectionError)


def _model_entry(entries: list[Any], model: str) -> dict[str, Any]:
    """One model's description from TorchServe's management API, checked for what the client reads of it."""
    entry = entries[0] if entries else {}
    workers = entry.get("workers", []) if isinstance(entry, dict) else None
    if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
        raise MalformedAnswerError(f"describe {model}: the answer has no list of workers", 200)
    if not isinstance(entry.get("customizedMetadata", {}), (dict, type(None))):
        raise MalformedAnswerError(f"describe {model}: customizedMetadata is not an object", 200)
    return {**entry, "workers": workers}


def _error_details(response: requests.Response) -> tuple[str, str]:
    """(type, message) of an error answer in either wire format (deepfake_contract's ErrorAnswer)."""
    try:
        error = ErrorAnswer.from_json(response.json(), response.status_code)
    except (ValueError, RecursionError):
        return "", response.text.strip()[:300] or response.reason
    return error.type, error.message or response.text.strip()[:300] or response.reason


def _sampling_rate(path: str | Path, fps: float | Fraction) -> tuple[float | Fraction, list[str]]:
    """``fps``, or the video's own frame rate when ``fps`` is above it: sampling faster than the frames
    change analyses the same frames again, and costs time for nothing."""
    native = native_frame_rate(path)
    if native is None or fps <= native:
        return fps, []
    return native, [
        f"fps {float(fps):g} is above the video's own frame rate ({float(native):.4g} fps): "
        f"sampled at {float(native):.4g} fps, every frame once"
    ]


class DeepfakeClient:
    """A connection to one TorchServe deployment of the deepfake detector.

    >>> with DeepfakeClient() as client:               # token from ./runtime/key_file.json
    ...     client.predict_image("face.jpg").label
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        transport: BaseAdapter | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ):
        base = config or ClientConfig.from_env()
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.clock = clock or Clock()
        self.replicas = ReplicaPool(self.config.inference_urls, self.config.replica_cooldown, self.clock.now)
        self._session = requests.Session()
        # every request in flight may go to one replica while the others are down
        in_flight = self.config.max_in_flight * len(self.replicas)
        adapter = transport or pooled_transport(in_flight, hosts=len(self.replicas) + 1)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._tokens: dict[str, Token] = {}
        self._metadata: dict[str, ModelMetadata | None] = {}
        self._listing = False  # listing the served models for a 404's message
        self._answered: set[str] = set()  # servers that answered once: a refused connection there is a restart

    def __enter__(self) -> DeepfakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # --- HTTP -------------------------------------------------------------------------------
    def _token(self, kind: str, reread: bool = False) -> Token:
        if reread or kind not in self._tokens:
            self._tokens[kind] = resolve_token(self.config, kind)
        return self._tokens[kind]

    def _request(
        self, method: str, url: str, kind: str, what: str, *, retry: bool = True, **kwargs: Any
    ) -> requests.Response:
        """Send one idempotent request and map failures to the client's errors.

        Connection errors and retryable answers (a full queue, a worker that died mid-batch) are retried
        with capped exponential backoff, up to ``config.retries`` times and never past
        ``config.retry_deadline``. A refused token read from a key file is re-read once: TorchServe
        writes a renewed key there. A read timeout is not retried: the server may still be working.

        An inference ``url`` that is a path (``/predictions/...``) goes to one of the replicas; a retry
        goes straight to another healthy replica, and backs off only when none is left.
        """
        headers = dict(kwargs.pop("headers", {}))
        started, retries, reread, failed = self.clock.now(), 0, False, None
        while True:
            token = self._token(kind)
            if token.value:
                headers["Authorization"] = f"Bearer {token.value}"
            replica = self.replicas.acquire(avoid=failed) if url.startswith("/") else None
            target = f"{replica}{url}" if replica else url
            response, failure, ok = None, "", False
            timeouts = self.config.timeouts
            deadline = time.monotonic() + timeouts.connect + timeouts.read
            sent = self.clock.now()
            try:
                response = self._session.request(
                    method, target, headers=headers, timeout=timeouts.as_tuple(), stream=True, **kwargs
                )
                _read_body(response, deadline)
                logger.debug(
                    "%s %s: HTTP %d in %.1f ms", method, target, response.status_code, (self.clock.now() - sent) * 1e3
                )
            except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, _TooSlow):
                raise ServerTimeoutError(
                    f"TorchServe did not answer {what} within the read timeout of {timeouts.read:g} s ({target})"
                ) from None
            except (requests.ConnectionError, urllib3.exceptions.HTTPError) as exc:  # nothing usable came back
                response, failure = None, f"cannot reach TorchServe at {target}: {type(exc).__name__}"
                server = _origin(target)
                if _nothing_listening(exc) and server not in self._answered and not self.replicas.any_other(replica):
                    raise ServerUnavailableError(  # nothing has ever answered there: a retry will not help
                        f"cannot reach TorchServe at {server}: nothing is listening there (connection refused). "
                        "Is it running? Start it with `make start`, or point --url / DEEPFAKE_URL at it"
                    ) from None
            else:
                ok = not _retryable(response)
                self._answered.add(_origin(target))
            finally:
                if replica:
                    self.replicas.release(replica, ok)
            if response is not None:
                if _token_refused(response) and token.key_file is not None and not reread:
                    reread = True  # a renewed key is in the key file: read it again, once
                    if self._token(kind, reread=True).value != token.value:
                        continue
                if ok:
                    return self._check(response, kind, what)
            failed = replica
            elapsed = self.clock.now() - started
            elsewhere = replica is not None and self.replicas.has_other_healthy(replica)
            delay = 0.0 if elsewhere else self.config.retry_delay(retries, _retry_after(response))
            if not retry or retries >= self.config.retries or elapsed + delay > self.config.retry_deadline:
                attempts = f"{retries + 1} attempt{'s' * (retries > 0)} in {elapsed:.1f} s"
                if response is None:
                    raise ServerUnavailableError(f"{failure} ({attempts})")
                return self._check(response, kind, what, attempts)
            retries += 1
            reason = failure if response is None else f"HTTP {response.status_code}"
            if elsewhere:
                logger.info("%s: %s at %s; sending it to another replica", what, reason, replica)
            else:
                logger.warning("%s: %s; retry %d of %d in %.2f s", what, reason, retries, self.config.retries, delay)
            if delay:
                self.clock.sleep(delay)  # backoff between retries, bounded by the retry deadline

    def _check(self, response: requests.Response, kind: str, what: str, attempts: str = "") -> requests.Response:
        status = response.status_code
        if status < 400:
            return response
        error_type, message = _error_details(response)
        if _token_refused(response):
            where = "an inference" if kind == "inference" else "a management"
            raise AuthenticationError(
                f"TorchServe refused the token for {what}: it needs {where} key (--token/--management-token, "
                f"DEEPFAKE_TOKEN, or --key-file runtime/key_file.json); keys also expire"
            )
        if status == 404:
            raise ModelNotFoundError(f"{what}: {message or 'not found'} on {response.url}{self._served_hint()}", status)
        if status == 413 and not _image_too_large(response, error_type):  # TorchServe's own body-size limit
            raise InputRejectedError(
                f"{what}: the request is larger than the server's max_request_size", status, error_type or None
            )
        if _retryable(response):
            died = status == 507 or WORKER_DIED_MESSAGE in message
            reason = "the worker died" if died else "no worker available" if status == 503 else "gateway"
            raise ServerUnavailableError(
                f"{what}: TorchServe answered {status} ({reason}: {message})"
                + (f" after {attempts}" if attempts else "")
            )
        if status < 500:
            raise InputRejectedError(f"{what}: {message}", status, error_type)
        raise ServerError(f"{what}: server error {status} {error_type}: {message}", status)

    def _served_hint(self) -> str:
        """ "; served: a, b; use --model a" from the management API, when it answers (else nothing)."""
        if self._listing:
            return ""
        self._listing = True
        try:
            response = self._request("GET", f"{self.config.management_url}/models", "management", "list", retry=False)
            listed = answer_json(response, "list").get("models", [])
            names = [str(m["modelName"]) for m in listed if isinstance(m, dict) and isinstance(m.get("modelName"), str)]
        except DeepfakeError:
            return ""
        finally:
            self._listing = False
        return f"; served: {', '.join(names)}; use --model {names[0]}" if names else "; no model is served"

    # --- inference -------------------------------------------------------------------------
    @property
    def wire(self) -> WireFormat:
        """The configured protocol's wire format (the contract's): paths, bodies, answers, health."""
        return wire_format(self.config.protocol)

    def _predict_bytes(self, payload: bytes, what: str, model: str | None = None) -> Prediction:
        """One image, in the configured wire format, to one of the replicas."""
        return self._predict_with(self.wire, [payload], what, model)[0]

    def _predict_with(self, wire: WireFormat, payloads: list[bytes], what: str, model: str | None) -> list[Prediction]:
        """Images in one request of ``wire``'s format: one answer per image, or MalformedAnswerError."""
        model = model or self.config.model
        response = self._request("POST", wire.infer_path(model), "inference", what, **wire.request(payloads))
        try:
            predictions = wire.predictions(answer_json(response, what))
            if len(predictions) != len(payloads):
                raise ContractError(f"{len(predictions)} answers for {len(payloads)} images")
            return predictions
        except ContractError as exc:
            raise MalformedAnswerError(f"{what}: the server's answer does not fit the contract: {exc}", 200) from None

    def _frames_per_request(self, model: str | None) -> int:
        """Frames per request for videos: ``config.frames_per_request``, one for face-crop archives."""
        wanted = max(1, min(self.config.frames_per_request, MAX_IMAGES_PER_REQUEST))
        if wanted > 1 and (metadata := self.metadata(model)) is not None and metadata.crop == "face":
            return 1
        return wanted

    def _predict_pack(
        self, payloads: list[bytes], names: list[str], model: str | None = None
    ) -> list[Prediction | InputRejectedError]:
        """One answer per image: all in one OIP request, or (a refused pack, or a single image) one by one,
        so that an image the server refuses fails alone."""
        if len(payloads) > 1:
            what = f"{names[0]} and {len(payloads) - 1} more frames"
            try:  # OIP whatever config.protocol is: TorchServe answers both, and only OIP carries several
                return list(self._predict_with(wire_format(OIP), payloads, what, model))
            except InputRejectedError:
                pass  # find the refused frame(s): each frame on its own
        answers: list[Prediction | InputRejectedError] = []
        for payload, name in zip(payloads, names, strict=True):
            try:
                answers.append(self._predict_bytes(payload, name, model))
            except InputRejectedError as exc:
                answers.append(exc)
        return answers

    @staticmethod
    def _read_image(image: ImageInput) -> tuple[bytes, str]:
        if isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue(), "<PIL image>"
        if isinstance(image, (bytes, bytearray)):
            return bytes(image), "<bytes>"
        check_local_path(image)
        path = Path(image)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a folder; scan it: deepfake-detect scan {path}") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None

    def predict_image(self, image: ImageInput, *, model: str | None = None) -> Prediction:
        """Classify one image (path, bytes or PIL image). Raises InputRejectedError if refused."""
        payload, name = self._read_image(image)
        return self._predict_bytes(payload, name, model)

    def predict_images(
        self, images: Iterable[ImageInput], *, model: str | None = None, progress: ProgressCallback | None = None
    ) -> list[ImageResult]:
        """Classify many images concurrently; results in input order, a refused image fails alone.
        ``progress`` is called with the number of images answered so far."""
        done = itertools.count(1)
        lock = threading.Lock()
        notice = self.model_notice(model)

        def one(image: ImageInput) -> ImageResult:
            name = str(image) if isinstance(image, (str, Path)) else "<image>"
            try:
                payload, name = self._read_image(image)
                result = ImageResult(name, self._predict_bytes(payload, name, model), model_notice=notice)
            except InputError as exc:
                result = ImageResult(name, None, str(exc), no_face=_no_face(exc), model_notice=notice)
            if progress:
                with lock:
                    progress(next(done))
            return result

        with ThreadPoolExecutor(max_workers=self.config.max_in_flight) as pool:
            return list(pool.map(one, list(images)))

    def analyze_video(
        self,
        path: str | Path,
        fps: float = DEFAULT_FPS,
        *,
        model: str | None = None,
        aggregation: AggregationConfig | None = None,
        image_format: str = "JPEG",
        jpeg_quality: int = 95,
        progress: ProgressCallback | None = None,
        on_frame: Callable[[SampledFrame], None] | None = None,
        cancel: threading.Event | None = None,
        max_seconds: float | None = None,
    ) -> VideoAnalysis:
        """Sample at exactly ``fps``, classify every frame, aggregate into a verdict.

        Frames are decoded while earlier ones are in flight (up to ``max_in_flight``, enough for
        TorchServe to fill its batches); memory stays bounded by that window. A frame the server
        refuses is recorded with its error; a frame whose worker died (507) or that found no worker
        is retried like any request; auth errors, and availability errors that outlast the retries,
        stop the analysis. ``on_frame`` sees each sampled frame as it is sent (thumbnails, previews).
        Setting ``cancel`` stops it before the next frame is sent: CancelledError.
        ``max_seconds`` is a service's budget: a video longer than that is refused (BadVideoError), from its
        header before any frame is sent, or at the first sample past it where the header says less (a
        crafted file can put hours between two frames).

        With ``frames_per_request`` above 1 (ClientConfig), consecutive frames travel together in one
        Open Inference Protocol request (fewer round trips through TorchServe's frontend); a pack the
        server refuses is sent again frame by frame, so a bad frame still fails alone. Face-crop
        archives get one frame per request (a frame without a face would refuse its whole pack).
        """
        aggregation = aggregation or AggregationConfig()
        check_local_path(path)
        if max_seconds is not None and (declared := probe_duration(path) or 0) > max_seconds:
            raise BadVideoError(f"{path}: {declared:.0f} s long, over the limit of {max_seconds:g} s here")
        rate, notes = _sampling_rate(path, fps)
        # each sampled frame, the request carrying it (one per pack of frames) and its place in that pack
        in_flight: deque[tuple[SampledFrame, Future[list[Prediction | InputRejectedError]], int]] = deque()
        results: list[FrameResult] = []

        def collect_oldest() -> None:
            sample, future, position = in_flight.popleft()
            try:
                prediction = future.result()[position]
                if isinstance(prediction, InputRejectedError):
                    raise prediction
                signatures = [face_signature(sample.image, face.box) for face in prediction.faces or []] or None
                frame = FrameResult(sample.index, sample.time, sample.frame_time, sample.frame_number, prediction)
                results.append(dataclasses.replace(frame, face_signatures=signatures))
            except InputRejectedError as exc:
                results.append(
                    FrameResult(
                        sample.index, sample.time, sample.frame_time, sample.frame_number, None, str(exc), _no_face(exc)
                    )
                )
            if progress:
                progress(len(results))

        size = self.input_size(model)
        per_request = self._frames_per_request(model)
        window = self.config.max_in_flight * len(self.replicas)  # frames: keeps every replica's batches full
        pack: list[tuple[SampledFrame, Future[bytes], str]] = []  # a frame, its encoding under way, its name

        def send_pack() -> None:
            encodings, names = [p for _, p, _ in pack], [w for _, _, w in pack]
            future = pool.submit(lambda: self._predict_pack([e.result() for e in encodings], names, model))
            in_flight.extend((sample, future, i) for i, (sample, _, _) in enumerate(pack))
            pack.clear()

        def encode(sample: SampledFrame) -> bytes:
            return encode_frame(sample.image, image_format, jpeg_quality, size)

        senders = ThreadPoolExecutor(max_workers=max(1, window // per_request) + 1)
        # frames are converted, resized and encoded in one thread beside the decoding (in order)
        with senders as pool, ThreadPoolExecutor(1, thread_name_prefix="encode") as encoder:
            try:
                for sample in sample_frames(path, rate):
                    if cancel is not None and cancel.is_set():
                        raise CancelledError(f"{path}: the analysis was cancelled after {len(results)} frames")
                    if max_seconds is not None and sample.time > max_seconds:
                        raise BadVideoError(f"{path}: frames past {max_seconds:g} s, the limit here")
                    if on_frame:
                        on_frame(sample)
                    payload = encoder.submit(encode, sample)
                    pack.append((sample, payload, f"frame {sample.index} ({sample.time:.2f}s) of {path}"))
                    if len(pack) >= per_request:
                        send_pack()
                    while len(in_flight) >= window:
                        collect_oldest()
                if pack:
                    send_pack()
                while in_flight:
                    collect_oldest()
            except DeepfakeError:
                for _, future, _ in in_flight:
                    future.cancel()
                raise
        segments = sustained_segments(results, 1 / float(rate), aggregation)
        tracks = link_tracks(results, 1 / float(rate), aggregation=aggregation)
        return VideoAnalysis(
            source=str(path),
            fps=float(rate),
            frames=results,
            summary=summarise(results, aggregation, 1 / float(rate), segments, tracks),
            segments=segments,
            tracks=tracks,
            thresholds=aggregation.to_dict(),
            notes=notes,
            model_notice=self.model_notice(model),
        )

    # --- explanations ------------------------------------------------------------------------
    def explain(self, image: ImageInput, *, model: str | None = None) -> Explanation:
        """Where in ``image`` the model sees manipulation: TorchServe's explanations API (handler.explain).
        Draw it with ``deepfake_client.overlay(image, explanation)``."""
        payload, what = self._read_image(image)
        model = model or self.config.model
        response = self._request(
            "POST",
            f"/explanations/{model}",
            "inference",
            f"explanation of {what}",
            data=payload,
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            return Explanation.from_json(answer_json(response, what))
        except ContractError as exc:
            raise MalformedAnswerError(f"{what}: the explanation does not fit the contract: {exc}", 200) from None

    def explain_top_frames(
        self, analysis: VideoAnalysis, count: int, *, model: str | None = None
    ) -> list[tuple[FrameResult, Image.Image, Explanation]]:
        """Explanations of the ``count`` frames of an analysed video the model found most fake, each with the
        full-resolution frame (sampled again from the video, at the analysis' rate), most fake first."""
        answered = [f for f in analysis.frames if f.prediction is not None]
        top = sorted(answered, key=lambda f: -f.prediction.fake_probability)[: max(0, count)]  # type: ignore[union-attr]
        wanted = {frame.index: frame for frame in top}
        images: dict[int, Image.Image] = {}
        if wanted:
            for sample in sample_frames(analysis.source, Fraction(analysis.fps).limit_denominator(1001)):
                if sample.index in wanted:
                    images[sample.index] = sample.image
                    if len(images) == len(wanted):
                        break
        return [(frame, images[frame.index], self.explain(images[frame.index], model=model)) for frame in top]

    def metadata(self, model: str | None = None) -> ModelMetadata | None:
        """The served model's metadata (deepfake_contract: input size, labels, normalisation, precision).

        None when it cannot be read: no management access (an OIP server behind KServe), or an archive
        built before the metadata existed.
        """
        model = model or self.config.model
        if model not in self._metadata:
            try:
                # optional information: no retries (an OIP server may have no management API at all)
                published = (self.describe(model, retry=False).get("customizedMetadata") or {})["metadata"]
                self._metadata[model] = ModelMetadata.from_json(published)
            except (DeepfakeError, KeyError, TypeError, ValueError):
                self._metadata[model] = None
        return self._metadata[model]

    def model_notice(self, model: str | None = None) -> str:
        """What the served model's metadata says every reader must know (e.g. "demo model ..."); "" if nothing."""
        metadata = self.metadata(model)
        return metadata.notice if metadata else ""

    def input_size(self, model: str | None = None) -> int | None:
        """The size frames travel at, already resized to the model's input. None when unknown, and for a
        face-crop archive (the server finds the faces in the full frame): frames then travel at their own
        size and the server resizes (exact for any model, only slower)."""
        metadata = self.metadata(model)
        return metadata.input_size if metadata and metadata.crop == "full" else None

    # --- management ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness: TorchServe's /ping, or over OIP the protocol's /v2/health/live. Neither means that
        a worker is ready: see ``ready``."""
        url = f"{self.config.base_url}{self.wire.live_path}"
        answer = answer_json(self._request("GET", url, "inference", "health check"), "health check")
        try:
            return self.wire.health(answer)
        except ContractError as exc:
            raise MalformedAnswerError(f"health check: {exc}", 200) from None

    def describe(self, model: str | None = None, *, retry: bool = True) -> dict[str, Any]:
        """Model status, workers and the archive's settings (normalisation, labels, T, alpha)."""
        model = model or self.config.model
        url = f"{self.config.management_url}/models/{model}"
        params = {"customized": "true"}
        response = self._request("GET", url, "management", f"describe {model}", retry=retry, params=params)
        return _model_entry(answer_json(response, f"describe {model}", list), model)

    def ready(self, model: str | None = None) -> bool:
        """True when the model can answer now: every TorchServe worker READY (management API), or over
        OIP the protocol's model readiness (``GET /v2/models/<model>/ready``, e.g. KServe's model server)."""
        model = model or self.config.model
        path = self.wire.ready_path(model)
        if path is not None:
            url = f"{self.config.base_url}{path}"
            try:
                response = self._request("GET", url, "inference", f"readiness of {model}", retry=False)
                return answer_json(response, f"readiness of {model}").get("ready") is True
            except ServerUnavailableError:  # 503: known, not ready
                return False
        return workers_ready(self._worker_statuses(model))

    def _worker_statuses(self, model: str | None, retry: bool = True) -> list[str]:
        model = model or self.config.model
        url = f"{self.config.management_url}/models/{model}"
        response = self._request("GET", url, "management", f"describe {model}", retry=retry)
        entry = _model_entry(answer_json(response, f"describe {model}", list), model)
        return [str(w.get("status", "?")) for w in entry["workers"]]

    def wait_until_ready(self, model: str | None = None, timeout: float = 120.0, interval: float = 0.5) -> None:
        """Poll the workers' state until all are READY; ServerUnavailableError after ``timeout``."""
        deadline = self.clock.now() + timeout
        last = "no answer"
        while True:
            try:
                statuses = self._worker_statuses(model, retry=False)
                if workers_ready(statuses):
                    return
                last = f"workers {', '.join(statuses) or 'none'}"
            except (ServerUnavailableError, ServerError) as exc:
                if isinstance(exc, ModelNotFoundError):
                    raise
                last = str(exc)
            if self.clock.now() + interval > deadline:  # the next poll would end past the deadline
                raise ServerUnavailableError(
                    f"model {model or self.config.model} not READY after {timeout:g} s (last seen: {last})"
                )
            self.clock.sleep(interval)  # polling interval, bounded by the deadline

    def models(self) -> list[dict[str, Any]]:
        """Every registered model, described (status, workers, settings)."""
        response = self._request("GET", f"{self.config.management_url}/models", "management", "list models")
        listing = answer_json(response, "list models").get("models")
        if not isinstance(listing, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("modelName"), str) for entry in listing
        ):
            raise MalformedAnswerError("list models: the answer has no list of models with their names", 200)
        return [self.describe(entry["modelName"]) for entry in listing]

    def scale(self, workers: int, model: str | None = None) -> dict[str, Any]:
        """Set the model's worker count (min = max = workers) and wait for TorchServe to apply it."""
        if workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        model = model or self.config.model
        params = {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        url = f"{self.config.management_url}/models/{model}"
        answer = answer_json(self._request("PUT", url, "management", f"scale {model}", params=params), f"scale {model}")
        if not isinstance(answer.get("status"), str):
            raise MalformedAnswerError(f"scale {model}: the answer has no status", 200)
        return answer

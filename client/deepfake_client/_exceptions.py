"""The client's exceptions: one base class, one branch per thing a caller can act on.

DeepfakeError
├── CancelledError          the caller cancelled the analysis (CLI exit 130)
├── InputError              your input is the problem        (CLI exit 2)
│   ├── InputRejectedError  the server refused it (HTTP 4xx)
│   └── BadVideoError       the video cannot be read
├── AuthenticationError     missing, wrong or expired token  (CLI exit 3)
├── ServerUnavailableError  cannot reach the server / no worker (CLI exit 4)
│   └── ServerTimeoutError  no answer within the read timeout
└── ServerError             the server failed or answered nonsense (CLI exit 5)
    ├── MalformedAnswerError an answer that does not fit the contract (types, ranges, size)
    └── ModelNotFoundError  no such model on the server (CLI exit 2: the name given is the mistake)
"""

from __future__ import annotations


class DeepfakeError(Exception):
    """Base class of every error raised by deepfake_client."""

    exit_code = 1


class CancelledError(DeepfakeError):
    """The analysis was cancelled by its caller (``analyze_video(cancel=...)``)."""

    exit_code = 130


class InputError(DeepfakeError):
    """The input (file, image, video, option) cannot be analysed."""

    exit_code = 2


class InputRejectedError(InputError):
    """The server refused an input, e.g. an undecodable image (HTTP 4xx)."""

    def __init__(self, message: str, status: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class BadVideoError(InputError):
    """The file is not a decodable video with a video stream."""


class AuthenticationError(DeepfakeError):
    """TorchServe refused the token (it answers HTTP 400 InvalidKeyException)."""

    exit_code = 3


class ServerUnavailableError(DeepfakeError):
    """The server cannot be reached, or has no ready worker, even after retries."""

    exit_code = 4


class ServerTimeoutError(ServerUnavailableError):
    """The server took the request but did not answer within the read timeout (not retried)."""


class ServerError(DeepfakeError):
    """The server failed (HTTP 5xx) or answered something unexpected."""

    exit_code = 5

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ModelNotFoundError(ServerError):
    """The model name is not registered on the server; the message lists the ones that are."""

    exit_code = 2


class MalformedAnswerError(ServerError):
    """The server's answer does not fit the wire contract: not JSON, a field missing, of the wrong type or
    out of range, or larger than any answer can be. Never a traceback, never taken for a verdict."""

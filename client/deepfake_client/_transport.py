"""The client's seams to the outside world: a requests transport adapter (and an in-memory one for
tests), and the clock that retries and readiness polls wait on (and a manual one for tests).

``DeepfakeClient(transport=...)`` mounts any ``requests`` adapter for http:// and https://. The
default is a pooled ``HTTPAdapter``; ``MockTransport`` (after httpx's) answers each request with a
function, so the client's failure paths (retries, timeouts, 5xx, auth) are tested without sockets.
``DeepfakeClient(clock=ManualClock())`` makes backoff and deadlines exact and instant in tests.
"""

from __future__ import annotations

import json as jsonlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

Handler = Callable[[requests.PreparedRequest], requests.Response]


def pooled_transport(max_in_flight: int, hosts: int = 2) -> HTTPAdapter:
    """Keep-alive connections for every request the client may have in flight, to each of ``hosts``."""
    return HTTPAdapter(pool_connections=max(hosts, 2), pool_maxsize=max(max_in_flight, 4) + 4)


def make_response(
    status_code: int = 200,
    *,
    json: Any = None,
    content: bytes = b"",
    headers: Mapping[str, str] | None = None,
    request: requests.PreparedRequest | None = None,
) -> requests.Response:
    """A ``requests.Response`` built in memory (``json`` wins over ``content``)."""
    response = requests.Response()
    response.status_code = status_code
    response.headers = CaseInsensitiveDict(headers or {})
    if json is not None:
        content = jsonlib.dumps(json).encode()
        response.headers.setdefault("Content-Type", "application/json")
    response._content = content
    response.encoding = "utf-8"
    response.reason = requests.status_codes._codes.get(status_code, ("",))[0].replace("_", " ").upper()
    if request is not None:
        response.request, response.url = request, request.url or ""
    return response


class MockTransport(BaseAdapter):
    """Answer every request with ``handler(request)``; the handler may raise requests' exceptions
    (``ConnectionError``, ``ReadTimeout``) to play a server that is down or slow."""

    def __init__(self, handler: Handler):
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(  # BaseAdapter.send's signature; the settings do not apply to an in-memory answer
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        self.requests.append(request)
        response = self.handler(request)
        if response.request is None:
            response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        pass


class Clock:
    """Monotonic time and sleeping: what backoff, retry deadlines, replica cool-downs and readiness
    polls are measured with (the read deadline of a body being received stays on real time)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ManualClock(Clock):
    """A clock that moves only when slept on: every sleep is recorded and returns at once."""

    def __init__(self, start: float = 0.0):
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

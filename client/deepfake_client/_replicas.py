"""Spreading requests over several replicas of one model, and steering around the ones that fail.

The stand-in for a load balancer in front of replicas (and what a client does when it is given the
replicas' addresses itself): each request goes to the healthy replica with the fewest requests in
flight; a replica that refused a connection or lost its worker is skipped for ``cooldown`` seconds,
then tried again, so a replica that comes back gets its share again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence


class ReplicaPool:
    def __init__(self, urls: Sequence[str], cooldown: float, clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError("a replica pool needs at least one URL")
        self.urls = list(dict.fromkeys(url.rstrip("/") for url in urls))
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._turn = 0  # breaks ties in turn, so equal replicas share the load evenly

    def __len__(self) -> int:
        return len(self.urls)

    def healthy(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [url for url in self.urls if self._down_until[url] <= now]

    def acquire(self, avoid: str | None = None) -> str:
        """The replica for the next request: healthy and least busy, ``avoid`` (the one that just failed)
        only when nothing else is left; when all are down, the one due back first."""
        with self._lock:
            now = self._clock()
            candidates = [url for url in self.urls if self._down_until[url] <= now]
            if avoid is not None and len(candidates) > 1:
                candidates = [url for url in candidates if url != avoid]
            if not candidates:
                candidates = [min(self.urls, key=lambda url: (url == avoid, self._down_until[url]))]
            order = {url: (i - self._turn) % len(self.urls) for i, url in enumerate(self.urls)}
            url = min(candidates, key=lambda u: (self._in_flight[u], order[u]))
            self._turn = (self.urls.index(url) + 1) % len(self.urls)
            self._in_flight[url] += 1
            return url

    def release(self, url: str, ok: bool) -> None:
        """A request to ``url`` finished: ``ok`` False marks the replica down for ``cooldown`` seconds."""
        with self._lock:
            self._in_flight[url] -= 1
            self._down_until[url] = 0.0 if ok else self._clock() + self.cooldown

    def has_other_healthy(self, url: str) -> bool:
        return any(other != url for other in self.healthy())

    def any_other(self, url: str | None) -> bool:
        """Whether there are replicas besides ``url`` (a management URL, None, has none)."""
        return url is not None and any(other != url for other in self.urls)

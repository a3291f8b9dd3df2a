"""A crowd of HTTP clients for ``harness.load``: threads of this process, or split over several processes
where one process's GIL would bound the rate (a GPU's). Light on imports: each client process loads only this.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from scripts import REPO_ROOT


class CrowdError(RuntimeError):
    """A crowd's request got an error answer: the benchmark measures answered requests only."""


class _Crowd:
    """``concurrency`` threads of one process sending bodies by index; each answer's latency and request id.

    Requests go over keep-alive ``http.client`` connections, as many as requests in flight, kept from run
    to run (the warm-up's too): the crowd stands for clients on other machines, but here it shares the
    server's 2 cores. Through ``requests`` it took ~0.9 ms of CPU per request (0.12-0.17 cores at 150
    requests/s), through ``http.client`` ~0.2 ms (0.03 cores): measured in turn on one int8 server, 153
    against 166 images/s served."""

    def __init__(
        self,
        url: str,
        bodies: list[bytes],
        headers: dict[str, str],
        concurrency: int,
        sender: Callable[[bytes], None] | None = None,
    ):
        self.url, self.bodies, self.headers, self.concurrency, self.sender = url, bodies, headers, concurrency, sender
        self.connections_opened = 0
        self._parts = urlsplit(url)
        self._idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()  # kept from run to run
        self._lock = threading.Lock()

    def _take(self) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                self.connections_opened += 1
            return http.client.HTTPConnection(self._parts.hostname, self._parts.port, timeout=300)

    def post(self, body: bytes) -> str:
        """One request on an idle keep-alive connection (a new one when none is idle); its request id
        (x-request-id). A kept connection the server closed meanwhile is opened again once; an error answer
        raises CrowdError."""
        for attempt in range(2):
            connection = self._take()
            try:
                connection.request("POST", self._parts.path, body=body, headers=self.headers)
                response = connection.getresponse()
                answer = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if attempt:
                    raise
            except BaseException:
                connection.close()
                raise
        self._idle.put(connection)
        if response.status != 200:
            raise CrowdError(f"HTTP {response.status} from {self.url}: {answer[:200]!r}")
        return response.headers["x-request-id"]

    def close(self) -> None:
        """Closes the kept connections."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._idle.get_nowait().close()

    def run(self, indices: Iterable[int]) -> tuple[list[float], set[str]]:
        latencies: list[float] = []
        ids: set[str] = set()

        def one(index: int) -> None:
            started = time.perf_counter()
            if self.sender is not None:
                self.sender(self.bodies[index % len(self.bodies)])
            else:
                ids.add(self.post(self.bodies[index % len(self.bodies)]))
            latencies.append(time.perf_counter() - started)

        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(one, indices))
        return latencies, ids

    def timed_run(self, indices: Iterable[int]) -> tuple[list[float], set[str], float]:
        """``run``, and the CPU seconds this process used meanwhile (the clients' share of the machine)."""
        before = time.process_time()  # all this process's threads, in ns: psutil's cpu_times counts 10 ms ticks,
        latencies, ids = self.run(indices)  # and a light crowd's share of a short run can stay under one
        return latencies, ids, time.process_time() - before


@contextlib.contextmanager
def clients(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    concurrency: int,
    total: int,
    warm_up: bool,
    processes: int = 1,
    sender: Callable[[bytes], None] | None = None,
) -> Iterator[Callable[[], tuple[list[float], set[str], float]]]:
    """``load``'s crowd, warmed up: threads of this process, or split over ``processes`` client processes
    (``crowd_share``; HTTP only). Yields the call that sends it and returns its latencies, request ids and
    the clients' CPU seconds."""
    if processes > 1 and sender is None:
        with _in_processes(url, bodies, headers, concurrency, total, warm_up, processes) as send:
            yield send
        return
    crowd = _Crowd(url, bodies, headers, concurrency, sender)
    try:
        crowd.run(range(concurrency * 2 if warm_up else 0))  # warm-up: connections, caches
        yield lambda: crowd.timed_run(range(total))
    finally:
        crowd.close()


def crowd_share() -> None:
    """One process's share of a crowd (``load`` with ``processes`` > 1): its job as a JSON line on stdin;
    "ready" once warmed up; on "go" its requests; then its latencies, request ids and CPU seconds as JSON."""
    job = json.loads(sys.stdin.readline())
    bodies = [base64.b64decode(body) for body in job["bodies"]]
    crowd = _Crowd(job["url"], bodies, job["headers"], job["concurrency"])
    crowd.run(range(job["warm_up"]))
    print("ready", flush=True)
    sys.stdin.readline()
    latencies, ids, cpu = crowd.timed_run(range(job["start"], job["start"] + job["count"]))
    crowd.close()
    print(json.dumps({"latencies": latencies, "ids": sorted(ids), "cpu_s": cpu}), flush=True)


@contextlib.contextmanager
def _in_processes(
    url: str, bodies: list[bytes], headers: dict[str, str], concurrency: int, total: int, warm_up: bool, processes: int
) -> Iterator[Callable[[], tuple[list[float], set[str], float]]]:
    """``clients`` split over processes, all warmed up; yields the call that starts them together and gathers
    their answers."""
    code = "from scripts.bench.benchmark.crowd import crowd_share; crowd_share()"
    encoded = [base64.b64encode(body).decode() for body in bodies]
    children: list[subprocess.Popen[str]] = []

    def tell(child: subprocess.Popen[str], line: str) -> None:
        assert child.stdin is not None
        child.stdin.write(line + "\n")
        child.stdin.flush()

    def hear(child: subprocess.Popen[str], when: str) -> str:
        assert child.stdout is not None
        if not (line := child.stdout.readline()):
            raise RuntimeError(f"a client process ended {when} (exit {child.wait()})")
        return line

    def send() -> tuple[list[float], set[str], float]:
        for child in children:
            tell(child, "go")
        results = [json.loads(hear(child, "in its crowd")) for child in children]
        latencies = [latency for result in results for latency in result["latencies"]]
        ids = {request_id for result in results for request_id in result["ids"]}
        return latencies, ids, sum(result["cpu_s"] for result in results)

    try:
        for share in range(processes):
            threads = max(concurrency // processes + (share < concurrency % processes), 1)
            job = {
                "url": url,
                "headers": headers,
                "bodies": encoded,
                "concurrency": threads,
                "warm_up": 2 * threads if warm_up else 0,
                "start": share * (total // processes + 1),  # each its own run of bodies, as the one process's
                "count": total // processes + (share < total % processes),
            }
            children.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT))  # fmt: skip
            tell(children[-1], json.dumps(job))
        for child in children:
            if hear(child, "before its crowd").strip() != "ready":
                raise RuntimeError("a client process did not get ready")
        yield send
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()

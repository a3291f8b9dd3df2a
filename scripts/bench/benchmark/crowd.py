"""A crowd of HTTP clients for ``harness.load``: threads of this process, or split over several processes
where one process's GIL would bound the rate (a GPU's). Light on imports: each client process loads only this.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests

from scripts import REPO_ROOT


class _Crowd:
    """``concurrency`` threads of one process sending bodies by index; each answer's latency and request id."""

    def __init__(
        self,
        url: str,
        bodies: list[bytes],
        headers: dict[str, str],
        concurrency: int,
        sender: Callable[[bytes], None] | None = None,
    ):
        self.url, self.bodies, self.headers, self.concurrency, self.sender = url, bodies, headers, concurrency, sender
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency + 2))

    def run(self, indices: Iterable[int]) -> tuple[list[float], set[str]]:
        latencies: list[float] = []
        ids: set[str] = set()

        def one(index: int) -> None:
            started = time.perf_counter()
            if self.sender is not None:
                self.sender(self.bodies[index % len(self.bodies)])
            else:
                body = self.bodies[index % len(self.bodies)]
                response = self.session.post(self.url, data=body, headers=self.headers, timeout=300)
                response.raise_for_status()
                ids.add(response.headers["x-request-id"])
            latencies.append(time.perf_counter() - started)

        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(one, indices))
        return latencies, ids

    def timed_run(self, indices: Iterable[int]) -> tuple[list[float], set[str], float]:
        """``run``, and the CPU seconds this process used meanwhile (the clients' share of the machine)."""
        before = psutil.Process().cpu_times()
        latencies, ids = self.run(indices)
        after = psutil.Process().cpu_times()
        return latencies, ids, after.user + after.system - before.user - before.system


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
    crowd.run(range(concurrency * 2 if warm_up else 0))  # warm-up: connections, caches
    yield lambda: crowd.timed_run(range(total))


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

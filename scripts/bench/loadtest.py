"""Load test: many concurrent clients, every answer checked against its own input's reference.

Each request carries a different image, and the logits the server returns for it are compared with
the archive's own runtime run in-process on that image: an answer delivered to the wrong request,
a lost request or a wrong number is counted, not averaged away. Loopback only, bounded in requests
and in seconds, and it stops by itself. ``--kill-worker-after N`` kills the model's worker process
after N answers, to show that TorchServe restarts it and the client's retries absorb the crash.

    python -m scripts.bench.loadtest --clients 64 --requests 2000          # against `make start`
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from deepfake_client import (
    DEFAULT_MANAGEMENT_URL,
    DEFAULT_MODEL,
    DEFAULT_URL,
    ClientConfig,
    DeepfakeClient,
    DeepfakeError,
)

if TYPE_CHECKING:
    from handler.service import DetectorService

DEFAULT_CLIENTS = 64
DEFAULT_REQUESTS = 2000
DEFAULT_DURATION_S = 300.0
LOGIT_TOLERANCE = 1e-3  # the served runtime is the in-process one; batching may change the last bits
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class LoadTestError(ValueError):
    """The load test cannot run as asked (not loopback, no archive for references)."""


def distinct_images(count: int, seed: int = 0, size: int = 64) -> list[bytes]:
    """``count`` different small PNGs: colours, gradients and a block that differ per image, so the
    model's answers differ per image too."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    images = []
    for _ in range(count):
        base, slope = rng.integers(0, 256, 3), rng.uniform(-4, 4, (3, 2))
        array = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
        top, left, side = *rng.integers(0, size // 2, 2), int(rng.integers(8, size // 2))
        array[top : top + side, left : left + side] = rng.integers(0, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def reference_logits(service: DetectorService, payloads: Sequence[bytes], batch: int = 32) -> np.ndarray:
    """The served archive's runtime (``scripts.operations.archives.load_archive``), in this process, on every
    payload: what the server must answer."""
    import torch

    rows = []
    for start in range(0, len(payloads), batch):
        tensors = torch.stack([service.decode(p) for p in payloads[start : start + batch]])
        rows.append(service.logits(tensors).numpy())
    return np.concatenate(rows)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise LoadTestError(f"the load test only targets this machine (127.0.0.1), not {host}")


@dataclass
class LoadReport:
    clients: int
    requests: int  # sent
    answered: int  # with a prediction
    mismatches: int  # a prediction that is not its own input's
    errors: dict[str, int] = field(default_factory=dict)  # error class: count
    elapsed_s: float = 0.0
    images_per_s: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    killed_workers: list[int] = field(default_factory=list)  # pids killed by --kill-worker-after

    @property
    def ok(self) -> bool:
        return not self.errors and self.mismatches == 0 and self.answered == self.requests

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def summary(self) -> str:
        errors = sum(self.errors.values())
        return (
            f"{self.requests} requests from {self.clients} clients in {self.elapsed_s:.1f} s "
            f"({self.images_per_s:.1f} images/s): {self.answered} answered, {errors} errors, "
            f"{self.mismatches} mismatches; latency p50 {self.p50_ms:.0f} ms, p90 {self.p90_ms:.0f} ms, "
            f"p99 {self.p99_ms:.0f} ms, max {self.max_ms:.0f} ms"
            + (f"; killed worker pid {', '.join(map(str, self.killed_workers))}" if self.killed_workers else "")
        )


def worker_pid(client: DeepfakeClient, model: str | None = None) -> int:
    """The pid of the model's (first) worker process, from the management API."""
    return int(client.describe(model)["workers"][0]["pid"])


def kill_worker(client: DeepfakeClient, model: str | None = None) -> int:
    """SIGKILL the model's worker process, as the kernel's OOM killer would; return its pid."""
    pid = worker_pid(client, model)
    os.kill(pid, signal.SIGKILL)
    return pid


def run_load(
    client: DeepfakeClient,
    payloads: Sequence[bytes],
    references: np.ndarray,
    *,
    clients: int = DEFAULT_CLIENTS,
    requests: int = DEFAULT_REQUESTS,
    duration: float = DEFAULT_DURATION_S,
    tolerance: float = LOGIT_TOLERANCE,
    on_answer: Callable[[int], None] | None = None,
) -> LoadReport:
    """``clients`` threads send request i with payload i (mod len) until ``requests`` are sent or
    ``duration`` seconds pass; every answer is compared with its own reference."""
    counter, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    state = {"sent": 0, "answered": 0, "mismatches": 0}
    started = time.monotonic()
    deadline = started + duration

    def one_client() -> None:
        while True:
            index = next(counter)
            if index >= requests or time.monotonic() > deadline:
                return
            payload, expected = payloads[index % len(payloads)], references[index % len(payloads)]
            sent = time.perf_counter()
            try:
                prediction = client.predict_image(payload)
            except DeepfakeError as exc:
                with lock:
                    state["sent"] += 1
                    errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                continue
            elapsed = time.perf_counter() - sent
            matches = np.allclose(prediction.logits, expected, atol=tolerance, rtol=0)
            with lock:
                state["sent"] += 1
                state["answered"] += 1
                state["mismatches"] += not matches
                latencies.append(elapsed * 1e3)
                answered = state["answered"]
            if on_answer:
                on_answer(answered)

    threads = [threading.Thread(target=one_client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    quantiles = np.percentile(latencies, [50, 90, 99, 100]) if latencies else [float("nan")] * 4
    return LoadReport(
        clients=clients,
        requests=state["sent"],
        answered=state["answered"],
        mismatches=state["mismatches"],
        errors=dict(errors),
        elapsed_s=round(elapsed, 2),
        images_per_s=round(state["answered"] / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(float(quantiles[0]), 1),
        p90_ms=round(float(quantiles[1]), 1),
        p99_ms=round(float(quantiles[2]), 1),
        max_ms=round(float(quantiles[3]), 1),
    )


def load_test(
    client: DeepfakeClient,
    archive: Path,
    *,
    clients: int = DEFAULT_CLIENTS,
    requests: int = DEFAULT_REQUESTS,
    duration: float = DEFAULT_DURATION_S,
    distinct: int | None = None,
    kill_worker_after: int = 0,
) -> LoadReport:
    """Distinct images, their references from ``archive``, the load, and the optional worker kill."""
    check_loopback(client.config.base_url)
    if not Path(archive).is_file():
        raise LoadTestError(f"no archive at {archive} for the reference answers: make mar, or pass --archive")
    payloads = distinct_images(distinct or requests)
    from scripts.operations.archives import load_archive

    references = reference_logits(load_archive(Path(archive)), payloads)
    killed: list[int] = []

    def maybe_kill(answered: int) -> None:
        if kill_worker_after and answered == kill_worker_after:
            killed.append(kill_worker(client))

    report = run_load(
        client, payloads, references, clients=clients, requests=requests, duration=duration, on_answer=maybe_kill
    )
    report.killed_workers = killed
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL, help="inference API on this machine (default %(default)s)")
    parser.add_argument("--management-url", default=DEFAULT_MANAGEMENT_URL, help="management API (worker pid)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--key-file", type=Path, help="TorchServe key_file.json (default: ./runtime/key_file.json)")
    parser.add_argument(
        "--archive", type=Path, help="the served archive, for references (default: model_store/<model>.mar)"
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent clients (default %(default)s)")
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests in all (default %(default)s)")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="stop after this many seconds")
    parser.add_argument("--distinct", type=int, help="different images (default: one per request)")
    parser.add_argument("--kill-worker-after", type=int, default=0, metavar="N", help="kill the worker after N answers")
    parser.add_argument("--json", type=Path, help="write the report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    config = ClientConfig.from_env(
        base_url=args.url, management_url=args.management_url, model=args.model, key_file=args.key_file
    )
    archive = args.archive or Path("model_store") / f"{args.model}.mar"
    try:
        with DeepfakeClient(config) as client:
            report = load_test(
                client, archive, clients=args.clients, requests=args.requests, duration=args.duration,
                distinct=args.distinct, kill_worker_after=args.kill_worker_after,
            )  # fmt: skip
    except (LoadTestError, DeepfakeError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for error, count in report.errors.items():
        print(f"  {count} x {error}")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

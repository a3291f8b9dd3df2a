"""A dependency-free progress line for terminals."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``frames 24/31 [=========>   ] 77% 12.3 fps``, redrawn in place; silent when disabled."""

    def __init__(self, total: int | None, label: str = "frames", stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.started, 1e-9)
        if self.total:
            fraction = min(done / self.total, 1.0)
            filled = int(fraction * 24)
            bar = "=" * filled + (">" if filled < 24 else "") + " " * (23 - filled)
            text = f"\r{self.label} {done}/{self.total} [{bar}] {fraction:4.0%} {rate:5.1f}/s"
        else:
            text = f"\r{self.label} {done} {rate:5.1f}/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

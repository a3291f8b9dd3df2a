"""Progress on the terminal: tqdm's bar (count, rate, elapsed and ETA), fed the number done so far."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class ProgressBar:
    """``frames:  77%|███████▋  | 24/31 [00:02<00:00, 12.3 frames/s]``, redrawn in place; silent when disabled.

    Called with the number done so far (the client's progress callbacks count, they do not step).
    """

    def __init__(self, total: int | None, label: str = "frames", stream: TextIO | None = None, enabled: bool = True):
        self.enabled = enabled
        self._bar = tqdm(total=total, desc=label, unit=label.rstrip("s") or "item", file=stream or sys.stderr,
                         disable=not enabled, dynamic_ncols=True, mininterval=0.1)  # fmt: skip

    def __call__(self, done: int) -> None:
        if self.enabled and done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()

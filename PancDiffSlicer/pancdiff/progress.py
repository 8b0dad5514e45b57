"""Progress for people (tqdm bars on stderr) or for programs (JSON lines on stdout).

The Slicer module runs ``pancdiff ... --progress json`` in a child process and parses one JSON
object per line: ``{"event": "stage" | "progress" | "info" | "error" | "done", ...}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Literal

from tqdm import tqdm

Mode = Literal["bar", "json", "quiet"]


class Task:
    """A counted piece of work; ``update`` advances it, closing ends the bar."""

    def __init__(self, reporter: Reporter, stage: str, total: int, unit: str) -> None:
        self._reporter, self.stage, self.total, self.done = reporter, stage, total, 0
        self._start = time.monotonic()
        self._bar = None
        if reporter.mode == "bar":
            self._bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        elif self._reporter.mode == "json":
            elapsed = time.monotonic() - self._start
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self._reporter.event(
                "progress",
                stage=self.stage,
                done=self.done,
                total=self.total,
                elapsed_s=round(elapsed, 2),
                eta_s=None if eta is None else round(eta, 2),
                **postfix,
            )

    def set_total(self, total: int) -> None:
        """For work whose size is known only once it starts (e.g. after batching)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Reporter:
    """Where progress goes. ``mode``: "bar" (default), "json" (machine-readable) or "quiet"."""

    def __init__(self, mode: Mode = "bar") -> None:
        if mode not in ("bar", "json", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode

    def stage(self, name: str, message: str = "") -> None:
        if self.mode == "json":
            self.event("stage", stage=name, message=message)
        elif self.mode == "bar":
            print(f"[{name}] {message}".rstrip(), file=sys.stderr, flush=True)

    def task(self, stage: str, total: int, unit: str = "it") -> Task:
        return Task(self, stage, total, unit)

    def info(self, message: str) -> None:
        if self.mode == "json":
            self.event("info", message=message)
        elif self.mode == "bar":
            print(message, file=sys.stderr, flush=True)

    def event(self, event: str, **payload) -> None:
        """One JSON line on stdout (json mode only)."""
        if self.mode == "json":
            print(json.dumps({"event": event, **payload}), flush=True)


class StepProgress:
    """Adapts a ``progress(done, total)`` callback (the Detector's) to a reporter task.

    The task opens on the first call, when the total is known, and follows a changed total (the
    detector re-batches after running out of GPU memory). Use as a context manager.
    """

    def __init__(self, reporter: Reporter, stage: str, unit: str = "step") -> None:
        self.reporter, self.stage, self.unit, self.task = reporter, stage, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.reporter.task(self.stage, total, unit=self.unit)
        elif total != self.task.total:
            self.task.set_total(total)
        if done > self.task.done:
            self.task.update(done - self.task.done)

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.task is not None:
            self.task.close()


QUIET = Reporter("quiet")

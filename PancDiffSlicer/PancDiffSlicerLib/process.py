"""Run the engine in a child process without blocking Slicer's GUI thread.

Reader threads put the child's output lines on a queue; the GUI's ``QTimer`` calls
``BackgroundProcess.poll`` to drain the queue and parse progress events. Cancelling interrupts the
whole process tree (Slicer's ``PythonSlicer`` is a launcher, so the Python doing the work is a
grandchild), gives it a moment to roll back its outputs, then kills whatever is left.

Pure Python: no ``slicer``, no Qt.
"""

from __future__ import annotations

import collections
import enum
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from .contract import ProcessEvent, parseEventLine


class ExitCode(enum.IntEnum):
    """The engine's exit codes, plus what the module needs to tell runs apart."""

    SUCCESS = 0
    FAILED = 1
    BAD_INPUT = 2
    MISSING_DEPENDENCY = 3
    CANCELLED = 130
    NOT_STARTED = -1000

    @classmethod
    def fromReturnCode(cls, returnCode: int | None, cancelRequested: bool = False) -> ExitCode:
        """``returnCode`` as an ExitCode; a run the user cancelled is CANCELLED however it ended."""
        if returnCode is None:
            return cls.NOT_STARTED
        if cancelRequested or returnCode == cls.CANCELLED:
            return cls.CANCELLED
        if returnCode == -signal.SIGINT or returnCode == 0xC000013A:  # Ctrl-C on POSIX / Windows
            return cls.CANCELLED
        try:
            return cls(returnCode)
        except ValueError:
            return cls.FAILED


class ProcessState(enum.Enum):
    NOT_STARTED = "notStarted"
    RUNNING = "running"
    CANCELLING = "cancelling"
    FINISHED = "finished"


class BackgroundProcess:
    """A child process whose output is read on threads and parsed on the caller's thread.

    Args:
        command: program and arguments.
        env: environment of the child (None: inherit).
        cwd: working directory of the child.
        logTailLines: how many non-JSON output lines to keep for error messages.
        platform: how cancel works: on Windows ("win32") the tree is killed at once with psutil,
            because a child started without a console (CREATE_NO_WINDOW) never receives
            CTRL_BREAK_EVENT; elsewhere SIGINT first, then a kill after the grace period.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        logTailLines: int = 200,
        platform: str = sys.platform,
    ) -> None:
        self.command = list(command)
        self.platform = platform
        self.env = env
        self.cwd = cwd
        self.logTail: collections.deque[str] = collections.deque(maxlen=logTailLines)
        self.lastError: ProcessEvent | None = None
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancelRequested = False
        self._killDeadline: float | None = None
        self._treePids: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: cancel reaches the launcher's children
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
            thread = threading.Thread(target=self._readLines, args=(stream, name), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _readLines(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            self._queue.put((name, line))
        stream.close()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returnCode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def state(self) -> ProcessState:
        if self._proc is None:
            return ProcessState.NOT_STARTED
        if self._proc.poll() is None or any(t.is_alive() for t in self._threads) or not self._queue.empty():
            return ProcessState.CANCELLING if self._cancelRequested else ProcessState.RUNNING
        return ProcessState.FINISHED

    def isRunning(self) -> bool:
        return self.state in (ProcessState.RUNNING, ProcessState.CANCELLING)

    @property
    def exitCode(self) -> ExitCode:
        """Meaningful once ``state`` is FINISHED."""
        return ExitCode.fromReturnCode(self.returnCode, self._cancelRequested)

    # -- output --------------------------------------------------------------------------------

    def poll(self) -> list[ProcessEvent]:
        """Drain the output queue (call from the GUI thread, e.g. on a QTimer); returns new events.

        Also escalates a cancel to a kill once its grace period is over.
        """
        events = []
        while True:
            try:
                stream, line = self._queue.get_nowait()
            except queue.Empty:
                break
            event = (
                parseEventLine(line) if stream == "stdout" else ProcessEvent(kind="log", message=line.rstrip("\r\n"))
            )
            if event.kind == "log":
                if event.message.strip():
                    self.logTail.append(event.message)
            elif event.kind == "error":
                self.lastError = event
            events.append(event)
        if self._killDeadline is not None and time.monotonic() >= self._killDeadline:
            self.kill()
        return events

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> list[ProcessEvent]:
        """Block until the process and its readers are done (tests and batch use); returns all events."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events = []
        while self.isRunning():
            events += self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"process {self.pid} still running after {timeout} s")
            time.sleep(interval)
        return events + self.poll()

    # -- cancel --------------------------------------------------------------------------------

    def _collectTree(self) -> None:
        """Remember the pids of all descendants now: once the parent dies they are reparented."""
        try:
            import psutil
        except ImportError:
            return
        try:
            parent = psutil.Process(self._proc.pid)
            self._treePids.update(child.pid for child in parent.children(recursive=True))
        except psutil.Error:
            pass

    def cancel(self, graceSeconds: float = 3.0) -> None:
        """Stop the whole process tree: SIGINT, then a kill after ``graceSeconds`` (POSIX); on Windows
        the tree is killed at once (no console to deliver Ctrl-Break to; the engine's outputs are
        atomic, so nothing half-written is left either way).

        Non-blocking on POSIX: ``poll`` does the kill when the grace period is over.
        """
        if not self.isRunning():  # a launcher that already exited may have left its child running
            return
        self._cancelRequested = True
        self._collectTree()
        if graceSeconds <= 0 or self.platform == "win32":
            self.kill()
            return
        try:
            os.killpg(self._proc.pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        self._killDeadline = time.monotonic() + graceSeconds

    def kill(self) -> None:
        """Kill the child and every descendant now."""
        self._killDeadline = None
        if self._proc is None:
            return
        self._collectTree()
        try:
            import psutil  # bundled with Slicer
        except ImportError:
            psutil = None
        if psutil is not None:  # every descendant, also those that left the group (setsid)
            for pid in self._treePids:
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass
        if sys.platform == "win32":
            if psutil is None:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], capture_output=True, check=False)
        elif self.platform != "win32":
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)  # the group is the child's session
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self._proc.kill()
        except ProcessLookupError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


_GPU_MEMORY_MARKERS = (
    "cuda out of memory",
    "outofmemoryerror",
    "cuda error: out of memory",
    "mps backend out of memory",
)


def readableError(
    exitCode: ExitCode, errorMessage: str = "", logTail: Sequence[str] = (), returnCode: int | None = None
) -> str:
    """A message a radiologist can act on, from the exit code, the engine's error event and its log.

    The full log stays in Slicer's Python console; this is the one paragraph for the dialog.
    """
    logTail = list(logTail)
    text = " ".join([errorMessage, *logTail[-30:]]).lower()
    detail = errorMessage.strip() or next((line.strip() for line in reversed(logTail) if line.strip()), "")
    if exitCode == ExitCode.SUCCESS:
        return ""
    if exitCode == ExitCode.CANCELLED:
        return "Detection was cancelled. The scene was left as it was."
    if any(marker in text for marker in _GPU_MEMORY_MARKERS):
        return (
            "The GPU ran out of memory. Choose Device: CPU (slower, but always fits), or close other "
            "programs using the GPU and run again (a smaller batch is used when less memory is free)."
        )
    if exitCode == ExitCode.MISSING_DEPENDENCY:
        advice = "Model weights or a Python package are missing."
        if "totalsegmentator" in text:
            advice = "TotalSegmentator is not ready (package or its weights missing)."
        return (
            f"{advice} {detail}\nInstall the missing item (the message above names it), or choose a pancreas "
            "mask you already have instead of TotalSegmentator. Details are in the Python console."
        ).strip()
    if exitCode == ExitCode.BAD_INPUT:
        return f"The input was rejected: {detail or 'no details given'}\nCheck the input volume and the pancreas mask."
    return (
        f"PancDiff stopped unexpectedly (exit code {returnCode if returnCode is not None else int(exitCode)}). "
        f"Last message: {detail or 'none'}\nThe full log is in the Python console; please include it in a bug report."
    )

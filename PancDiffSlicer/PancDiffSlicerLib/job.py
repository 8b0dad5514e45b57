"""One Detect click: write the inputs, run the engine in the background, import the results.

With TotalSegmentator as the pancreas source and no PancDiff pancreas segment for the CT yet, the
child runs twice: ``pancdiff pancreas`` (TotalSegmentator, never on MPS) and then ``pancdiff detect``
with that mask; the mask becomes an editable segment, which the next Detect reuses.

``DetectionJob.poll`` is meant for a GUI timer: it drains the child's progress, and when the child
has finished it imports the results into the scene on the calling (GUI) thread. Until then the
scene is not touched, so a cancelled or failed run leaves it as it was. Importable without the GUI.
"""

from __future__ import annotations

import enum
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import contract
from . import scene as sceneLib
from .process import BackgroundProcess, ExitCode, readableError

logger = logging.getLogger(__name__)


class JobState(enum.Enum):
    NOT_STARTED = "notStarted"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def isActive(self) -> bool:
        return self in (JobState.RUNNING, JobState.CANCELLING)


def humanReadableDuration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class JobProgress:
    """What the progress bar and its label show."""

    stage: str = ""
    message: str = ""
    fraction: float | None = None
    etaSeconds: float | None = None

    def describe(self) -> str:
        text = self.stage.replace("_", " ").capitalize() if self.stage else "Starting"
        if self.message:
            text += f": {self.message}"
        if self.etaSeconds is not None:
            text += f" (about {humanReadableDuration(self.etaSeconds)} left)"
        return text


class DetectionJob:
    """A detection run on one CT.

    Args:
        ctNode: the CT volume node.
        settings: validated detection settings.
        pythonExecutable: the Python that runs the engine (Slicer's ``PythonSlicer``).
        engineDir: folder containing the ``pancdiff`` package (the child's working directory).
        segmentationNode, segmentId, labelmapNode: the pancreas mask; with TotalSegmentator as the source,
            a segmentation given here (the CT's PancDiff pancreas segment from an earlier run) is used
            instead of running TotalSegmentator again.
        opacity: heatmap opacity when the results are shown.
        temporaryRoot: where the run's scratch folder is made (None: the system's temp folder).
        env: the child's environment (None: inherit).
        encodingCacheDir: the engine's DDIM-encoding cache, kept across runs (None: no cache); unlike
            the scratch folder it outlives the job, so the next Detect with another S decodes only.
    """

    def __init__(
        self,
        ctNode,
        settings: contract.DetectionSettings,
        pythonExecutable: str,
        engineDir: str | Path,
        segmentationNode=None,
        segmentId: str | None = None,
        labelmapNode=None,
        opacity: float = 0.5,
        temporaryRoot: str | Path | None = None,
        env: dict[str, str] | None = None,
        encodingCacheDir: str | Path | None = None,
    ) -> None:
        self.ctNode = ctNode
        self.settings = settings
        self.pythonExecutable = pythonExecutable
        self.engineDir = str(engineDir)
        self.segmentationNode = segmentationNode
        self.segmentId = segmentId
        self.labelmapNode = labelmapNode
        self.opacity = opacity
        self.temporaryRoot = temporaryRoot
        self.env = env
        self.encodingCacheDir = encodingCacheDir
        self.state = JobState.NOT_STARTED
        self.progress = JobProgress()
        self.result: sceneLib.DetectionResult | None = None
        self.errorMessage = ""
        self.exitCode = ExitCode.NOT_STARTED
        self.process: BackgroundProcess | None = None
        self.workDir: Path | None = None
        self._startTime: float | None = None
        self._endTime: float | None = None
        self._pendingDetect: list[str] | None = None  # the detect command, while the pancreas step runs
        self.pancreasSegment: tuple | None = None  # (segmentation node, segment id) shown after success

    @property
    def duration(self) -> float:
        """Seconds from start to finish (or until now while running)."""
        if self._startTime is None:
            return 0.0
        return (self._endTime or time.monotonic()) - self._startTime

    def start(self) -> None:
        """Write the inputs and start the child process (raises MaskError for an unusable mask)."""
        self._startTime = time.monotonic()
        self.workDir = Path(tempfile.mkdtemp(prefix="PancDiff-", dir=self.temporaryRoot))
        try:
            ctPath = self.workDir / "ct.nrrd"
            sceneLib.writeVolumeFile(self.ctNode, ctPath)
            maskPath = self.workDir / "pancreas.nii.gz"
            runTotalSegmentator = self.settings.pancreasSource.usesTotalSegmentator and self.segmentationNode is None
            if not runTotalSegmentator:
                sceneLib.writePancreasMask(
                    self.ctNode, maskPath, self.segmentationNode, self.segmentId, self.labelmapNode
                )
            command = contract.detectCommandLine(
                self.pythonExecutable, ctPath, self.workDir / "out", self.settings, maskPath,
                encodingCacheDir=self.encodingCacheDir,
            )  # fmt: skip
            if runTotalSegmentator:
                self._pendingDetect = command
                command = contract.pancreasCommandLine(self.pythonExecutable, ctPath, maskPath, self.settings)
            self._startProcess(command)
        except BaseException:
            self._removeWorkDir()
            raise
        self.state = JobState.RUNNING

    def _startProcess(self, command: list[str]) -> None:
        logger.info("PancDiff: running %s", " ".join(command))
        self.process = BackgroundProcess(command, env=self.env, cwd=self.engineDir)
        self.process.start()

    def poll(self) -> list[contract.ProcessEvent]:
        """Drain progress; once the child is done, import or report. Call from the GUI thread."""
        if not self.state.isActive:
            return []
        events = self.process.poll()
        for event in events:
            if event.kind == "stage":
                self.progress = JobProgress(stage=event.stage, message=event.message)
            elif event.kind == "progress":
                self.progress = JobProgress(
                    stage=event.stage or self.progress.stage,
                    message=self.progress.message,
                    fraction=event.fraction,
                    etaSeconds=event.etaSeconds,
                )
            elif event.kind in ("info", "log"):
                logger.info("pancdiff: %s", event.message)
            elif event.kind == "error":
                logger.error("pancdiff: %s", event.message)
        if not self.process.isRunning():
            if self._pendingDetect is not None and self.process.exitCode == ExitCode.SUCCESS:
                command, self._pendingDetect = self._pendingDetect, None
                try:
                    self._startProcess(command)  # the pancreas is found: now the detection
                except OSError as error:
                    self._pendingDetect = None
                    self.errorMessage = f"The detection could not start: {error}"
                    self.state = JobState.FAILED
                    self._endTime = time.monotonic()
                    self._removeWorkDir()
                return events
            self._pendingDetect = None
            self._finish()
        return events

    def cancel(self, graceSeconds: float = 3.0) -> None:
        if self.state == JobState.RUNNING:
            self.state = JobState.CANCELLING
            self.progress = JobProgress(stage="cancelling", message="stopping the background process")
            self.process.cancel(graceSeconds)

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> JobState:
        """Poll until done (for tests and scripted use; the GUI uses a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state.isActive:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(graceSeconds=0)
                self.poll()
                raise TimeoutError(f"PancDiff detection did not finish within {timeout} s")
            time.sleep(interval)
        return self.state

    def _finish(self) -> None:
        self._endTime = time.monotonic()
        self.exitCode = self.process.exitCode
        try:
            if self.exitCode == ExitCode.SUCCESS and self.ctNode.GetScene() is None:
                self.errorMessage = "The CT was removed from the scene before the results arrived."
                self.state = JobState.FAILED
            elif self.exitCode == ExitCode.SUCCESS:
                try:
                    self.result = sceneLib.importResults(
                        self.ctNode,
                        self.workDir / "out",
                        self.settings.threshold,
                        self.opacity,
                        self.settings.rerunKey(),
                    )
                    self.pancreasSegment = self._showPancreas()
                    self.state = JobState.SUCCEEDED
                except (OSError, ValueError, KeyError) as error:
                    self.errorMessage = f"The results could not be loaded: {error}"
                    self.state = JobState.FAILED
            else:
                lastError = self.process.lastError.message if self.process.lastError else ""
                self.errorMessage = readableError(
                    self.exitCode, lastError, self.process.logTail, self.process.returnCode
                )
                self.state = JobState.CANCELLED if self.exitCode == ExitCode.CANCELLED else JobState.FAILED
                if self.state == JobState.FAILED:
                    logger.error(
                        "PancDiff failed (exit %s). Last output:\n%s",
                        self.process.returnCode,
                        "\n".join(self.process.logTail),
                    )
        finally:
            self._removeWorkDir()

    def _showPancreas(self) -> tuple:
        """The mask this run used as the CT's editable pancreas segment (the user's own segment as is)."""
        if self.settings.pancreasSource == contract.PancreasSource.SEGMENTATION:
            return self.segmentationNode, self.segmentId
        if self.segmentationNode is not None:  # TotalSegmentator source, reusing the CT's segment
            return self.segmentationNode, self.segmentId
        return sceneLib.importPancreasMask(self.ctNode, self.workDir / "pancreas.nii.gz")

    def _removeWorkDir(self) -> None:
        if self.workDir is not None:
            shutil.rmtree(self.workDir, ignore_errors=True)

"""PancDiff Slicer module: Detect pancreatic tumor candidates, show heatmap, candidate and confidence."""

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from PancDiffSlicerLib import contract, dependencies, devices, findings, sampledata
from PancDiffSlicerLib import scene as sceneLib
from PancDiffSlicerLib.contract import Device, PancreasSource, Quality
from PancDiffSlicerLib.job import DetectionJob, JobState, humanReadableDuration
from PancDiffSlicerLib.markups import KnownTumorComparison
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

logger = logging.getLogger(__name__)

# The Lib's modules in dependency order, for reloading them with the module (developer mode).
LIB_MODULES = ("contract", "process", "dependencies", "devices", "scene", "markups", "findings", "sampledata", "job")

# The oldest Slicer whose Python (3.9) the engine and this module are tested for.
MINIMUM_SLICER_VERSION = (5, 8)


def slicerVersionProblem(major: int, minor: int) -> str:
    """A message for a Slicer older than ``MINIMUM_SLICER_VERSION``, or "" when it is supported."""
    if (major, minor) >= MINIMUM_SLICER_VERSION:
        return ""
    return (
        f"PancDiff needs 3D Slicer {MINIMUM_SLICER_VERSION[0]}.{MINIMUM_SLICER_VERSION[1]} or newer "
        f"(this is {major}.{minor}). Please install a current Slicer from download.slicer.org."
    )


#
# PancDiffSlicer
#


class PancDiffSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PancDiff")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["PancDiff contributors"]
        self.parent.helpText = _("""
Finds pancreatic tumor candidates in a CT as anomalies: classifier-guided diffusion models reconstruct
a healthy-looking pancreas, and where the reconstruction differs from the CT becomes a heatmap.
Choose the CT, where the pancreas comes from, and click Detect; the heatmap is shown over the CT, the
candidate is outlined, and the overall confidence and a per-slice table appear under Results.
<br><br><b>For research only, not for diagnosis.</b> The model has not been validated clinically.
See the <a href="https://github.com/pancdiff/PancDiff">documentation</a>.
""")
        problem = slicerVersionProblem(slicer.app.majorVersion, slicer.app.minorVersion)
        if problem:
            self.parent.helpText = problem + "<br><br>" + self.parent.helpText
            logger.error(problem)
        self.parent.acknowledgementText = _("""
PancDiff implements weakly supervised tumor detection with classifier-guided diffusion models.
It uses <a href="https://monai.io">MONAI</a>, <a href="https://pytorch.org">PyTorch</a> and
<a href="https://github.com/wasserth/TotalSegmentator">TotalSegmentator</a>.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The shipped sample CT and pancreas label in the Sample Data module (SHA-256 checked on load)."""
    import SampleData

    moduleDir = os.path.dirname(os.path.abspath(__file__))
    icon = os.path.join(moduleDir, "Resources", "Icons", "PancDiffSlicer.png")
    for arguments in sampledata.registrationArguments(moduleDir, icon):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**arguments)


#
# PancDiffSlicerParameterNode
#


@parameterNodeWrapper
class PancDiffSlicerParameterNode:
    """The module's state, saved with the scene.

    inputVolume: the CT to analyze.
    pancreasSource: TotalSegmentator (fast or full), an existing segmentation, or a label map.
    pancreasSegmentation, pancreasSegmentId: the pancreas segment when the source is a segmentation.
    pancreasLabelmap: the pancreas label map (nonzero = pancreas) when the source is a label map.
    device, quality: where inference runs and its step grid.
    guidanceScale: classifier guidance scale S. noiseLevel: noise level N (1000-step scale).
    thresholdPercent: heatmap values at or above this become the candidate (an outline); display only.
    heatmapWindowLowPercent, heatmapWindowHighPercent: the heatmap's own color window; display only.
    heatmapOpacity: heatmap opacity over the CT; display only.
    batchSize: slices per batch (0 = chosen from the free memory).
    showCandidate3D: show the candidate as a 3D surface.
    knownTumorPoints, hitToleranceMm: known tumor locations to compare with, and the hit distance.
    referenceSegmentation, referenceSegmentId: a reference tumor outline to compare the candidates with.
    heatmapVolume, candidateSegmentation, sliceTable, knownTumorTable, candidateTable, referenceTable:
        result nodes of inputVolume.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    pancreasSource: PancreasSource = PancreasSource.TOTALSEGMENTATOR_FAST
    pancreasSegmentation: vtkMRMLSegmentationNode
    pancreasSegmentId: str = ""
    pancreasLabelmap: vtkMRMLLabelMapVolumeNode
    device: Device = Device.AUTO
    quality: Quality = Quality.FAST
    # Defaults: the bundled model's operating point (model.json; Testing/test_slicer_static.py checks it)
    guidanceScale: Annotated[float, WithinRange(0.0, 20.0)] = 5.0
    noiseLevel: Annotated[float, WithinRange(10.0, 600.0)] = 50.0
    thresholdPercent: Annotated[float, WithinRange(5.0, 95.0)] = 65.0
    heatmapWindowLowPercent: Annotated[float, WithinRange(0.0, 95.0)] = 0.0
    heatmapWindowHighPercent: Annotated[float, WithinRange(5.0, 100.0)] = 100.0
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    batchSize: Annotated[int, WithinRange(0, 512)] = 0
    showCandidate3D: bool = False
    knownTumorPoints: vtkMRMLMarkupsFiducialNode
    hitToleranceMm: Annotated[float, WithinRange(0.0, 100.0)] = 10.0
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentId: str = ""
    heatmapVolume: vtkMRMLScalarVolumeNode
    candidateSegmentation: vtkMRMLSegmentationNode
    sliceTable: vtkMRMLTableNode
    knownTumorTable: vtkMRMLTableNode
    candidateTable: vtkMRMLTableNode
    referenceTable: vtkMRMLTableNode


#
# PancDiffSlicerWidget
#


class PancDiffSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the widgets to the parameter node and calls the logic; computes nothing itself."""

    POLL_INTERVAL_MS = 250

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingGui = False
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PancDiffSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = PancDiffSlicerLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self._pollTimer.timeout.connect(self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Widgets without a parameter-node connector are wired here; the rest through SlicerParameterName.
        self.ui.pancreasSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onPancreasSegmentChanged)
        self.ui.pancreasSegmentSelector.connect("currentSegmentChanged(QString)", self.onPancreasSegmentChanged)
        self.ui.knownTumorsMarkupsWidget.connect("markupsNodeChanged()", self.onKnownTumorsNodeChanged)
        self.ui.knownTumorsMarkupsWidget.setNodeBaseName("Known tumor")
        self.ui.referenceSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onReferenceSegmentChanged)
        self.ui.referenceSegmentSelector.connect("currentSegmentChanged(QString)", self.onReferenceSegmentChanged)
        self.ui.detectButton.connect("clicked(bool)", self.onDetectButton)
        self.ui.jumpToPeakButton.connect("clicked(bool)", self.onJumpToPeakButton)
        self.ui.nextCandidateButton.connect("clicked(bool)", lambda: self.logic.nextCandidate(self._parameterNode))
        self.ui.previousCandidateButton.connect(
            "clicked(bool)", lambda: self.logic.previousCandidate(self._parameterNode)
        )
        self.ui.showProbabilityPlotButton.connect("clicked(bool)", self.onShowProbabilityPlot)
        self.ui.exportKnownTumorsButton.connect("clicked(bool)", lambda: self._exportTable("knownTumorTable"))
        self.ui.exportReferenceButton.connect("clicked(bool)", lambda: self._exportTable("referenceTable"))
        self.ui.candidateTableView.connect("clicked(QModelIndex)", self.onCandidateRowClicked)
        self.ui.sliceTableView.connect("clicked(QModelIndex)", self.onSliceRowClicked)

        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """The application closes or the module is reloaded: leave no engine running."""
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self.logic is not None:
            self.logic.cancelDetection(graceSeconds=0)
            self.logic.cleanup()
        self.removeObservers()

    def onReload(self) -> None:
        import importlib

        self.cleanup()
        for name in LIB_MODULES:
            module = sys.modules.get(f"PancDiffSlicerLib.{name}")
            if module is not None:
                importlib.reload(module)
        super().onReload()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # The engine keeps running and its results still arrive: the timer belongs to the widget.
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancelDetection(graceSeconds=0)
        self.logic.cleanup()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.GetAttribute(sceneLib.ROLE_ATTRIBUTE):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Any setting changed: let the logic update the display, then refresh the widgets."""
        if self._updatingGui or not self._parameterNode:
            return
        self._updatingGui = True
        try:
            self.logic.applyParameters(self._parameterNode)
        finally:
            self._updatingGui = False
        self._updateGuiFromParameterNode()

    def _updateGuiFromParameterNode(self) -> None:
        parameters = self._parameterNode
        if not parameters:
            return
        source = parameters.pancreasSource
        for widget in (self.ui.pancreasSegmentLabel, self.ui.pancreasSegmentSelector):
            widget.setVisible(source == PancreasSource.SEGMENTATION)
        for widget in (self.ui.pancreasLabelmapLabel, self.ui.pancreasLabelmapSelector):
            widget.setVisible(source == PancreasSource.LABELMAP)
        wasBlocked = self.ui.pancreasSegmentSelector.blockSignals(True)
        self.ui.pancreasSegmentSelector.setCurrentNode(parameters.pancreasSegmentation)
        self.ui.pancreasSegmentSelector.setCurrentSegmentID(parameters.pancreasSegmentId)
        self.ui.pancreasSegmentSelector.blockSignals(wasBlocked)
        wasBlocked = self.ui.referenceSegmentSelector.blockSignals(True)
        self.ui.referenceSegmentSelector.setCurrentNode(parameters.referenceSegmentation)
        self.ui.referenceSegmentSelector.setCurrentSegmentID(parameters.referenceSegmentId)
        self.ui.referenceSegmentSelector.blockSignals(wasBlocked)
        wasBlocked = self.ui.knownTumorsMarkupsWidget.blockSignals(True)
        self.ui.knownTumorsMarkupsWidget.setCurrentNode(parameters.knownTumorPoints)
        self.ui.knownTumorsMarkupsWidget.blockSignals(wasBlocked)
        self.ui.gpuInfoLabel.text = self.logic.deviceDescription(parameters.device)

        job = self.logic.job
        running = job is not None and job.state.isActive
        if running:
            cancelling = job.state == JobState.CANCELLING
            self.ui.detectButton.text = _("Cancelling...") if cancelling else _("Cancel")
            self.ui.detectButton.toolTip = _("Stop the detection; the scene is left as it was.")
            self.ui.detectButton.enabled = not cancelling
        else:
            problem = self.logic.inputProblem(parameters)
            self.ui.detectButton.text = _("Detect")
            self.ui.detectButton.toolTip = problem or _("Find tumor candidates in the CT (runs in the background).")
            self.ui.detectButton.enabled = not problem

        result = self.logic.result(parameters)
        self.ui.resultsCollapsibleButton.enabled = result is not None
        self.ui.jumpToPeakButton.enabled = result is not None
        self.ui.sliceTableView.setMRMLTableNode(parameters.sliceTable)
        self.ui.knownTumorTableView.setMRMLTableNode(parameters.knownTumorTable)
        self.ui.candidateTableView.setMRMLTableNode(parameters.candidateTable)
        self.ui.referenceTableView.setMRMLTableNode(parameters.referenceTable)
        for button in (self.ui.nextCandidateButton, self.ui.previousCandidateButton, self.ui.showProbabilityPlotButton):
            button.enabled = result is not None
        self.ui.exportKnownTumorsButton.enabled = parameters.knownTumorTable is not None
        self.ui.exportReferenceButton.enabled = parameters.referenceTable is not None
        self.ui.referenceResultLabel.text = self.logic.referenceText(parameters)
        if result is None:
            self.ui.confidenceLabel.text = _("No result yet: click Detect.")
            self.ui.staleLabel.hide()
        else:
            self.ui.confidenceLabel.text = self.logic.confidenceText(result)
            self.ui.staleLabel.setVisible(self.logic.isStale(parameters))

    def onPancreasSegmentChanged(self, *args) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.pancreasSegmentation = self.ui.pancreasSegmentSelector.currentNode()
            self._parameterNode.pancreasSegmentId = self.ui.pancreasSegmentSelector.currentSegmentID() or ""

    def onReferenceSegmentChanged(self, *args) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.referenceSegmentation = self.ui.referenceSegmentSelector.currentNode()
            self._parameterNode.referenceSegmentId = self.ui.referenceSegmentSelector.currentSegmentID() or ""

    def onCandidateRowClicked(self, index) -> None:
        self.logic.jumpToCandidate(self._parameterNode, index.row())

    def onSliceRowClicked(self, index) -> None:
        self.logic.jumpToSliceRow(self._parameterNode, index.row())

    def onShowProbabilityPlot(self) -> None:
        chart = self.logic.probabilityChart(self._parameterNode)
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def _exportTable(self, parameterName: str) -> None:
        table = getattr(self._parameterNode, parameterName)
        if table is None:
            return
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), _("Export table as CSV"), f"{table.GetName()}.csv", "CSV (*.csv)"
        )
        if path:
            with slicer.util.tryWithErrorDisplay(_("The table could not be saved."), waitCursor=True):
                findings.exportTableCsv(table, path)

    def onKnownTumorsNodeChanged(self) -> None:
        if self._parameterNode and not self._updatingGui:
            self._parameterNode.knownTumorPoints = self.ui.knownTumorsMarkupsWidget.currentNode()

    def onDetectButton(self) -> None:
        if self.logic.isRunning():
            self.logic.cancelDetection()
            self._updateGuiFromParameterNode()
            return
        with slicer.util.tryWithErrorDisplay(_("PancDiff could not start."), waitCursor=True):
            if not self._installMissingDependencies():
                return
            self.logic.startDetection(self._parameterNode)
            self.ui.statusLabel.text = _("Starting...")
            self.ui.progressBar.setRange(0, 0)
            self.ui.progressBar.show()
            self._pollTimer.start()
        self._updateGuiFromParameterNode()

    def _installMissingDependencies(self) -> bool:
        """Ask once, listing every missing package; install them. False: the user said no."""
        missing = self.logic.missingDependencies(self._parameterNode)
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(dependencies.confirmationText(missing), windowTitle="PancDiff"):
            return False
        self.ui.statusLabel.text = _("Installing Python packages (this can take a few minutes)...")
        slicer.app.processEvents()
        self.logic.installDependencies(missing)
        return True

    def onPollTimer(self) -> None:
        self._updatingGui = True  # result nodes stored by the logic must not re-enter applyParameters
        try:
            job = self.logic.pollDetection(self._parameterNode)
        finally:
            self._updatingGui = False
        if job is None:
            self._pollTimer.stop()
            return
        if job.progress.fraction is None:
            self.ui.progressBar.setRange(0, 0)  # busy indicator while a stage has no count
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.value = round(100 * job.progress.fraction)
        self.ui.statusLabel.text = job.progress.describe()
        if job.state.isActive:
            return
        self._pollTimer.stop()
        self.ui.progressBar.hide()
        if job.state == JobState.SUCCEEDED:
            self.ui.statusLabel.text = _("Done in {duration}.").format(duration=humanReadableDuration(job.duration))
            self.ui.resultsCollapsibleButton.collapsed = False
        elif job.state == JobState.CANCELLED:
            self.ui.statusLabel.text = _("Cancelled. The scene was left as it was.")
        else:
            self.ui.statusLabel.text = _("Failed; see the message.")
            slicer.util.errorDisplay(job.errorMessage, windowTitle=_("PancDiff"))
        self._updateGuiFromParameterNode()

    def onJumpToPeakButton(self) -> None:
        self.logic.jumpToPeak(self._parameterNode)


#
# PancDiffSlicerLogic
#


class PancDiffSlicerLogic(ScriptedLoadableModuleLogic):
    """Runs detections and keeps their results in the scene; usable without the widget.

    The computation happens in a child process (``python -m pancdiff pancreas`` when TotalSegmentator
    must find the pancreas, then ``python -m pancdiff detect``); this class writes the inputs, polls the
    process and delegates everything in the scene to ``PancDiffSlicerLib``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None
        self.knownTumorComparison = None
        self.candidateNavigator = findings.CandidateNavigator()
        self.referenceComparison = None
        self._appliedDisplay = {}  # heatmap node ID -> (threshold, opacity, show 3D, window) last applied
        self._gpus = None
        self._modelCard = None
        self._candidateKey = None  # what the candidate table was computed from
        self._candidateParameters = None
        self._candidatePointTags = []  # observers of the known-tumor points (distances in the candidate table)
        self._referenceKey = None
        self._referenceProblem = ""
        self._encodingCacheDir = None

    def getParameterNode(self):
        return PancDiffSlicerParameterNode(super().getParameterNode())

    def cleanup(self) -> None:
        """Stop observing (scene close, module reload); results stay in the scene, the session's
        encodings go (the next scene's CTs are other ones)."""
        if self.knownTumorComparison is not None:
            self.knownTumorComparison.cleanup()
            self.knownTumorComparison = None
        self._observeCandidatePoints(None)
        self._candidateKey = self._referenceKey = None
        self._appliedDisplay.clear()
        if self._encodingCacheDir is not None:
            shutil.rmtree(self._encodingCacheDir, ignore_errors=True)
            self._encodingCacheDir = None

    # -- settings --------------------------------------------------------------------------------

    @staticmethod
    def settingsFrom(parameters) -> contract.DetectionSettings:
        return contract.DetectionSettings(
            guidanceScale=float(parameters.guidanceScale),
            noiseLevel=round(parameters.noiseLevel),
            threshold=float(parameters.thresholdPercent) / 100.0,
            quality=parameters.quality,
            device=parameters.device,
            pancreasSource=parameters.pancreasSource,
            batchSize=int(parameters.batchSize),
        )

    @staticmethod
    def inputProblem(parameters) -> str:
        """Why Detect cannot run with these inputs, or "" when it can."""
        if not parameters.inputVolume:
            return _("Choose the CT volume.")
        if parameters.pancreasSource == PancreasSource.SEGMENTATION and not (
            parameters.pancreasSegmentation and parameters.pancreasSegmentId
        ):
            return _("Choose the pancreas segmentation and segment.")
        if parameters.pancreasSource == PancreasSource.LABELMAP and not parameters.pancreasLabelmap:
            return _("Choose the pancreas label map.")
        return ""

    @staticmethod
    def missingDependencies(parameters) -> list:
        """What must be installed first; TotalSegmentator only when it will run (no pancreas segment yet)."""
        needTotalSegmentator = parameters.pancreasSource.usesTotalSegmentator and not (
            parameters.inputVolume and sceneLib.findPancreasSegment(parameters.inputVolume)
        )
        return dependencies.missingPackages(needTotalSegmentator=needTotalSegmentator)

    @staticmethod
    def installDependencies(missing) -> None:
        """Install ``missing``: PyTorch through the PyTorch extension, the rest with pip.

        Never pip-installs SimpleITK, numpy, vtk or torch, and pins the installed ones with a
        constraints file so no dependency replaces them (``dependencies.installPlan``). Raises with
        advice on failure.
        """
        plan = dependencies.installPlan(missing)
        if plan.blocked:
            raise RuntimeError(dependencies.blockedAdvice(plan.blocked))
        if plan.torch:
            PancDiffSlicerLogic._installTorch()
            plan = dependencies.installPlan(missing)  # pin the torch that was just installed
        pipPackages = [p for p in missing if p.pipInstallable]
        if pipPackages == [dependencies.TOTALSEGMENTATOR_PACKAGE] and hasattr(slicer.modules, "totalsegmentator"):
            # The TotalSegmentator extension knows its own requirements (and its own skip list).
            slicer.util.getModuleLogic("TotalSegmentator").setupPythonRequirements()
            return
        if not pipPackages:
            return
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            constraintsFile = os.path.join(folder, "constraints.txt")
            with open(constraintsFile, "w", encoding="utf-8") as f:
                f.write("\n".join(plan.constraints) + "\n")
            try:
                slicer.util.pip_install(plan.pipArguments(constraintsFile))
            except Exception as error:
                logger.exception("Installing %s failed", " ".join(plan.pipRequirements))
                raise RuntimeError(dependencies.installAdvice(pipPackages[0], error)) from error

    @staticmethod
    def _installTorch() -> None:
        package = dependencies.TORCH_PACKAGE
        try:
            try:
                import PyTorchUtils
            except ModuleNotFoundError as error:
                raise RuntimeError(
                    "the PyTorch extension is missing: install 'PyTorch' from the Extensions Manager"
                ) from error
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.torchInstalled():  # installed but too old
                raise RuntimeError(
                    f"PyTorch {torchLogic.torch.__version__} is older than {package.requirement}; "
                    "uninstall it in the 'PyTorch Utils' module"
                )
            torch = torchLogic.installTorch(
                askConfirmation=False, torchVersionRequirement=dependencies.pyTorchUtilsRequirement()
            )
            if torch is None:
                raise RuntimeError("PyTorch was not installed")
        except Exception as error:
            logger.exception("Installing %s failed", package.requirement)
            raise RuntimeError(dependencies.installAdvice(package, error)) from error

    # -- detection -------------------------------------------------------------------------------

    @staticmethod
    def engineDir() -> str:
        """The folder holding the ``pancdiff`` package (shipped beside this file)."""
        return os.path.dirname(os.path.abspath(__file__))

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher (sets up the environment), else this interpreter."""
        return shutil.which("PythonSlicer") or sys.executable

    @staticmethod
    def childEnvironment() -> dict:
        """The environment Slicer started with: ``PythonSlicer`` sets up its own paths from there."""
        return slicer.util.startupEnvironment()

    def isRunning(self) -> bool:
        return self.job is not None and self.job.state.isActive

    def encodingCacheDir(self) -> str:
        """This session's folder of the engine's DDIM encodings (Slicer's temporary folder): after the S
        slider moves, Detect decodes only. Made on first use, removed by ``cleanup``; the engine bounds it."""
        import tempfile

        if self._encodingCacheDir is None:
            self._encodingCacheDir = tempfile.mkdtemp(prefix="PancDiff-encodings-", dir=slicer.app.temporaryPath)
        return self._encodingCacheDir

    def startDetection(self, parameters) -> DetectionJob:
        """Write the inputs and start the engine in the background; poll with ``pollDetection``."""
        if self.isRunning():
            raise RuntimeError(_("A detection is already running."))
        problem = self.inputProblem(parameters)
        if problem:
            raise ValueError(problem)
        settings = self.settingsFrom(parameters)
        source = parameters.pancreasSource
        segmentationNode, segmentId = None, None
        if source == PancreasSource.SEGMENTATION:
            segmentationNode, segmentId = parameters.pancreasSegmentation, parameters.pancreasSegmentId or None
        elif source.usesTotalSegmentator:
            # TotalSegmentator ran on this CT before: reuse its (possibly corrected) pancreas segment.
            segmentationNode, segmentId = sceneLib.findPancreasSegment(parameters.inputVolume) or (None, None)
        job = DetectionJob(
            parameters.inputVolume,
            settings,
            self.pythonExecutable(),
            self.engineDir(),
            segmentationNode=segmentationNode,
            segmentId=segmentId,
            labelmapNode=parameters.pancreasLabelmap if source == PancreasSource.LABELMAP else None,
            opacity=float(parameters.heatmapOpacity),
            temporaryRoot=slicer.app.temporaryPath,
            env=self.childEnvironment(),
            encodingCacheDir=self.encodingCacheDir(),
        )
        job.start()
        self.job = job
        return job

    def pollDetection(self, parameters):
        """Drain progress; when the run succeeded, its result nodes go into ``parameters``."""
        if self.job is None:
            return None
        wasActive = self.job.state.isActive
        self.job.poll()
        if wasActive and self.job.state == JobState.SUCCEEDED and parameters is not None:
            self._appliedDisplay.pop(self.job.result.heatmapNode.GetID(), None)
            if parameters.inputVolume and parameters.inputVolume.GetID() == self.job.ctNode.GetID():
                self.applyParameters(parameters)
        return self.job

    def cancelDetection(self, graceSeconds: float = 3.0) -> None:
        if self.isRunning():
            self.job.cancel(graceSeconds)

    def runDetection(self, parameters, timeoutSeconds: float = 3600.0) -> DetectionJob:
        """Run a detection to the end (scripts and the self-test), keeping the GUI responsive."""
        job = self.startDetection(parameters)
        deadline = time.monotonic() + timeoutSeconds
        while job.state.isActive:
            self.pollDetection(parameters)
            slicer.app.processEvents()
            if time.monotonic() > deadline:
                self.cancelDetection(graceSeconds=0)
            time.sleep(0.1)
        return job

    # -- results ---------------------------------------------------------------------------------

    @staticmethod
    def result(parameters):
        return sceneLib.findResult(parameters.inputVolume) if parameters.inputVolume else None

    def isStale(self, parameters) -> bool:
        """The result was made with other S, N, steps or mask source than the current settings."""
        result = self.result(parameters)
        return result is not None and result.settingsKey != self.settingsFrom(parameters).rerunKey()

    def modelCard(self) -> dict:
        """The bundled model card (read once): the validation figures quoted next to the confidence."""
        if self._modelCard is None:
            self._modelCard = contract.readModelCard(self.engineDir())
        return self._modelCard

    def confidenceText(self, result) -> str:
        """The confidence with what it is: model id, held-out figures from the model card, its calibration."""
        return contract.confidenceText(sceneLib.summaryOf(result), self.modelCard())

    def applyParameters(self, parameters) -> None:
        """Bring the scene in line with the parameters: result nodes, threshold, opacity, 3D, markups.

        Threshold and opacity change display properties (and the candidate segment) only: instant,
        no rerun. Each property is applied only when it changed, so this is cheap to call often.
        """
        result = self.result(parameters)
        self._storeResultNodes(parameters, result)
        if result is not None:
            threshold = float(parameters.thresholdPercent) / 100.0
            opacity = float(parameters.heatmapOpacity)
            show3D = bool(parameters.showCandidate3D)
            low = float(parameters.heatmapWindowLowPercent) / 100.0
            high = max(float(parameters.heatmapWindowHighPercent) / 100.0, low + 0.01)
            key = result.heatmapNode.GetID()
            applied = self._appliedDisplay.get(key)
            if applied is None:
                sceneLib.showHeatmap(parameters.inputVolume, result.heatmapNode, opacity)
            if applied is None or applied[0] != threshold:
                sceneLib.setThreshold(result, threshold)
            if applied is None or applied[1] != opacity:
                sceneLib.setOpacity(result.heatmapNode, opacity)
            if applied is None or applied[2] != show3D:
                sceneLib.setCandidate3DVisible(result, show3D)
            if applied is None or applied[3] != (low, high):
                sceneLib.setHeatmapWindow(result.heatmapNode, low, min(high, 1.0))
            self._appliedDisplay[key] = (threshold, opacity, show3D, (low, high))
        self._updateKnownTumorComparison(parameters, result)
        self._updateCandidates(parameters, result)
        self._updateReferenceComparison(parameters, result)

    def _updateCandidates(self, parameters, result, force: bool = False) -> None:
        """The ranked candidate table (engine's peaks) at the current threshold and known points.

        Recomputed only when the map, the threshold or the points changed (points are observed).
        """
        self._candidateParameters = parameters
        self._observeCandidatePoints(parameters.knownTumorPoints if result is not None else None)
        if result is None:
            self._candidateKey = None
            self.candidateNavigator.setCandidates([])
            if parameters.candidateTable is not None:
                parameters.candidateTable = None
            return
        threshold = float(parameters.thresholdPercent) / 100.0
        points = parameters.knownTumorPoints
        key = (
            result.heatmapNode.GetID(),
            result.heatmapNode.GetImageData().GetMTime(),
            threshold,
            points.GetID() if points else None,
        )
        if key == self._candidateKey and not force:
            return
        self._candidateKey = key
        candidates = findings.rankedCandidates(result, threshold, points)
        self.candidateNavigator.setCandidates(candidates)
        table = findings.candidateTableNode(parameters.inputVolume)
        findings.fillCandidateTable(table, candidates)
        if parameters.candidateTable is not table:
            parameters.candidateTable = table

    def _observeCandidatePoints(self, points) -> None:
        if self._candidatePointTags and self._candidatePointTags[0][0] is points:
            return
        for node, tag in self._candidatePointTags:
            node.RemoveObserver(tag)
        self._candidatePointTags = []
        if points is not None:
            self._candidatePointTags = [
                (points, points.AddObserver(event, self._onCandidatePointsChanged))
                for event in KnownTumorComparison.POINT_EVENTS
            ]

    def _onCandidatePointsChanged(self, caller=None, event=None) -> None:
        parameters = self._candidateParameters
        if parameters is not None and parameters.inputVolume:
            self._updateCandidates(parameters, self.result(parameters), force=True)

    def _updateReferenceComparison(self, parameters, result) -> None:
        reference, segmentId = parameters.referenceSegmentation, parameters.referenceSegmentId
        if result is None or not reference or not segmentId:
            self.referenceComparison = None
            self._referenceKey = None
            self._referenceProblem = ""
            if parameters.referenceTable is not None:
                parameters.referenceTable = None
            return
        threshold = float(parameters.thresholdPercent) / 100.0
        key = (
            result.heatmapNode.GetID(),
            result.heatmapNode.GetImageData().GetMTime(),
            threshold,
            reference.GetID(),
            segmentId,
            reference.GetMTime(),
            reference.GetSegmentation().GetMTime(),
        )
        if key == self._referenceKey:
            return
        self._referenceKey = key
        self._referenceProblem = ""
        try:
            self.referenceComparison = findings.compareWithReference(result, threshold, reference, segmentId)
        except ValueError as error:  # e.g. a segment that cannot be resampled to the map
            self.referenceComparison = None
            self._referenceProblem = str(error)
            return
        table = findings.referenceTableNode(parameters.inputVolume)
        findings.fillReferenceTable(table, self.referenceComparison)
        if parameters.referenceTable is not table:
            parameters.referenceTable = table

    def referenceText(self, parameters) -> str:
        if self._referenceProblem:
            return self._referenceProblem
        if self.referenceComparison is None:
            return _("No reference segment chosen.")
        return self.referenceComparison.describe()

    @staticmethod
    def _storeResultNodes(parameters, result) -> None:
        nodes = (
            (None, None, None) if result is None else (result.heatmapNode, result.candidateNode, result.sliceTableNode)
        )
        if parameters.heatmapVolume is not nodes[0]:
            parameters.heatmapVolume = nodes[0]
        if parameters.candidateSegmentation is not nodes[1]:
            parameters.candidateSegmentation = nodes[1]
        if parameters.sliceTable is not nodes[2]:
            parameters.sliceTable = nodes[2]

    def _updateKnownTumorComparison(self, parameters, result) -> None:
        points = parameters.knownTumorPoints
        comparison = self.knownTumorComparison
        if result is None or not points:
            if comparison is not None:
                comparison.cleanup()
                self.knownTumorComparison = None
            return
        threshold = float(parameters.thresholdPercent) / 100.0
        tolerance = float(parameters.hitToleranceMm)
        if (
            comparison is None
            or comparison.pointsNode is not points
            or comparison.heatmapNode is not result.heatmapNode
        ):
            if comparison is not None:
                comparison.cleanup()
            table = sceneLib.knownTumorTableNode(parameters.inputVolume)
            self.knownTumorComparison = KnownTumorComparison(points, result.heatmapNode, table, threshold, tolerance)
            if parameters.knownTumorTable is not table:
                parameters.knownTumorTable = table
        else:
            comparison.setThreshold(threshold)
            comparison.setTolerance(tolerance)

    def jumpToPeak(self, parameters):
        """Center the views on the engine's strongest ranked peak (the first candidate)."""
        result = self.result(parameters)
        if result is None:
            return None
        self.candidateNavigator.current = 0
        return sceneLib.jumpToPeak(result.heatmapNode, result)

    def nextCandidate(self, parameters):
        return self.candidateNavigator.next(parameters.inputVolume.GetScene()) if parameters.inputVolume else None

    def previousCandidate(self, parameters):
        return self.candidateNavigator.previous(parameters.inputVolume.GetScene()) if parameters.inputVolume else None

    def jumpToCandidate(self, parameters, row: int):
        return self.candidateNavigator.jump(parameters.inputVolume.GetScene(), row) if parameters.inputVolume else None

    def jumpToSliceRow(self, parameters, row: int):
        result = self.result(parameters)
        return None if result is None else findings.jumpToSliceRow(result, row)

    def probabilityChart(self, parameters):
        """The p(tumor)-per-slice plot of the current result (None without one)."""
        result = self.result(parameters)
        return None if result is None else sceneLib.probabilityPlot(parameters.inputVolume, result.sliceTableNode)

    def deviceDescription(self, device: Device) -> str:
        """What the device choice runs on (GPU name and memory); the GPUs are looked up once."""
        if self._gpus is None:
            self._gpus = devices.findGpus()
        return devices.describeDeviceChoice(device.value, self._gpus)


#
# PancDiffSlicerTest
#


class PancDiffSlicerTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Developer mode: Reload and Test) on the shipped sample CT and pancreas label.

    The end-to-end detection (minutes on a CPU) runs when ``testLogic`` is True, as in the
    SlicerMONAIAuto3DSeg / TotalSegmentator tests; set PANCDIFF_TEST_LOGIC=0 to skip it.
    """

    testLogic = os.environ.get("PANCDIFF_TEST_LOGIC", "1") != "0"

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_PancDiffSlicer_sampleDataRegisteredWithChecksums()
        self.setUp()
        self.test_PancDiffSlicer_importedResultsFollowTheSettings()
        if self.testLogic:
            self.setUp()
            self.test_PancDiffSlicer_detectOnSampleCtWithPancreasMask()
        else:
            self.delayDisplay("End-to-end detection skipped (PANCDIFF_TEST_LOGIC=0)")

    def test_PancDiffSlicer_sampleDataRegisteredWithChecksums(self) -> None:
        import SampleData

        registerSampleData()
        nodes = SampleData.downloadSample("PancDiffSamplePancreas")
        node = nodes[0] if isinstance(nodes, (list, tuple)) else nodes
        self.assertTrue(node.IsA("vtkMRMLLabelMapVolumeNode"))
        self.delayDisplay("Sample data loads through SampleData with its SHA-256")

    @staticmethod
    def sampleDataPath(fileName: str) -> Path:
        path = Path(__file__).resolve().parent / "Resources" / "SampleData" / fileName
        if not path.exists():
            raise FileNotFoundError(f"{path}: sample data not found; reinstall the PancDiff extension")
        return path

    def _loadSample(self):
        """The sample CT and its pancreas label through SampleData (checksums verified), else from disk."""
        try:
            import SampleData

            registerSampleData()
            ct = SampleData.downloadSample("PancDiffSampleCT")
            pancreas = SampleData.downloadSample("PancDiffSamplePancreas")
            return (ct[0] if isinstance(ct, (list, tuple)) else ct), (
                pancreas[0] if isinstance(pancreas, (list, tuple)) else pancreas
            )
        except ImportError:
            ct = slicer.util.loadVolume(str(self.sampleDataPath("example_ct_sm.nii.gz")))
            pancreas = slicer.util.loadLabelVolume(str(self.sampleDataPath("pancreas.nii.gz")))
            return ct, pancreas

    def test_PancDiffSlicer_importedResultsFollowTheSettings(self) -> None:
        """Scene logic in the real application, on engine outputs written here (no model needed)."""
        import tempfile

        import numpy as np

        self.delayDisplay("Importing synthetic results for the sample CT")
        ct, pancreas = self._loadSample()
        ctArray = slicer.util.arrayFromVolume(ct)
        heatmap = np.zeros(ctArray.shape, np.float32)
        mask = slicer.util.arrayFromVolume(pancreas) > 0
        heatmap[mask] = np.linspace(0.0, 1.0, int(mask.sum()), dtype=np.float32)
        with tempfile.TemporaryDirectory() as folder:
            sceneLib.writeVolumeFile(ct, Path(folder) / contract.HEATMAP_FILE, heatmap, compress=True)
            contract.writeTabularOutputs(folder, 0.5, [contract.SliceRow(0, 0.5, 1.0, None, None)])
            logic = PancDiffSlicerLogic()
            parameters = logic.getParameterNode()
            parameters.inputVolume = ct
            sceneLib.importResults(ct, folder, threshold=0.35, settingsKey="")
        logic.applyParameters(parameters)
        result = logic.result(parameters)
        self.assertIsNotNone(result)
        self.assertTrue(sceneLib.sameGeometry(result.heatmapNode, ct))
        before = slicer.util.arrayFromVolume(result.heatmapNode).copy()
        parameters.thresholdPercent = 80
        parameters.heatmapOpacity = 0.3
        logic.applyParameters(parameters)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(result.heatmapNode), before)
        segmentArray = slicer.util.arrayFromSegmentBinaryLabelmap(
            result.candidateNode, sceneLib.CANDIDATE_SEGMENT_ID, ct
        )
        self.assertEqual(int(segmentArray.sum()), int((before >= 0.8).sum()))
        self.assertTrue(logic.isStale(parameters))  # made with other settings than the current ones
        self.delayDisplay("Imported results follow the threshold and opacity")

    def test_PancDiffSlicer_detectOnSampleCtWithPancreasMask(self) -> None:
        """The whole flow: Detect on the sample CT with its pancreas mask, on the CPU."""
        import numpy as np

        self.delayDisplay("Running PancDiff on the sample CT (CPU, fast quality)")
        ct, pancreas = self._loadSample()
        logic = PancDiffSlicerLogic()
        parameters = logic.getParameterNode()
        parameters.inputVolume = ct
        parameters.pancreasSource = PancreasSource.LABELMAP  # the shipped label: no TotalSegmentator needed
        parameters.pancreasLabelmap = pancreas
        missing = logic.missingDependencies(parameters)
        if missing:
            logic.installDependencies(missing)
        parameters.device = Device.CPU
        parameters.quality = Quality.FAST
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.runDetection(parameters, timeoutSeconds=1800)
        self.assertEqual(job.state, JobState.SUCCEEDED, job.errorMessage)
        result = logic.result(parameters)
        self.assertTrue(sceneLib.sameGeometry(result.heatmapNode, ct))
        heatmap = slicer.util.arrayFromVolume(result.heatmapNode)
        self.assertGreaterEqual(float(heatmap.min()), 0.0)
        self.assertLessEqual(float(heatmap.max()), 1.0)
        self.assertEqual(parameters.sliceTable, result.sliceTableNode)

        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
        peak, _value = sceneLib.peakPosition(result.heatmapNode)
        points.AddControlPoint(*peak.tolist(), "at peak")
        parameters.knownTumorPoints = points
        logic.applyParameters(parameters)
        table = parameters.knownTumorTable
        self.assertEqual(table.GetNumberOfRows(), 1)
        self.assertEqual(float(table.GetCellText(0, table.GetColumnIndex("Distance to peak"))), 0.0)

        nodesAfterFirst = slicer.mrmlScene.GetNumberOfNodes()
        self.assertGreater(nodesAfterFirst, nodesBefore)
        parameters.guidanceScale = 3.0
        self.assertTrue(logic.isStale(parameters))
        job = logic.runDetection(parameters, timeoutSeconds=1800)
        self.assertEqual(job.state, JobState.SUCCEEDED, job.errorMessage)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesAfterFirst)  # replaced, not piled up
        self.assertFalse(logic.isStale(parameters))
        firstPeak = sceneLib.summaryOf(result).peaks[0]
        np.testing.assert_allclose(
            logic.jumpToPeak(parameters), sceneLib.peakWorld(result.heatmapNode, firstPeak), atol=1e-6
        )
        self.delayDisplay("Detection test passed")

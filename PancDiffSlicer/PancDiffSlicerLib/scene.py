"""PancDiff results in the MRML scene: geometry, nodes, display, thresholds, jump to peak.

Importable without the Slicer GUI: only MRML classes (``slicer-core`` provides the same ones as
Slicer), ``vtk``, ``numpy`` and SimpleITK (bundled with Slicer). Every function takes the nodes
or scene it works on; nothing reads ``slicer.mrmlScene``.

Geometry: ITK/NIfTI files are in LPS, MRML in RAS. A file's voxel (i, j, k) is at
``LPS = origin + direction @ diag(spacing) @ (i, j, k)``, so the node's IJK->RAS matrix is
``diag(-1, -1, 1) @ direction @ diag(spacing)`` with translation ``diag(-1, -1, 1) @ origin``.
numpy arrays of volumes are indexed ``[k, j, i]`` (VTK's memory order).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from . import contract

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

ROLE_ATTRIBUTE = "PancDiff.Role"
CONFIDENCE_ATTRIBUTE = "PancDiff.Confidence"
SETTINGS_ATTRIBUTE = "PancDiff.SettingsKey"
ANALYZED_EXTENT_ATTRIBUTE = "PancDiff.AnalyzedExtent"
SOURCE_VOLUME_REFERENCE = "pancDiffSourceVolume"

HEATMAP_ROLE = "heatmap"
CANDIDATES_ROLE = "candidates"
SLICE_TABLE_ROLE = "sliceTable"
SUMMARY_ROLE = "summary"
KNOWN_TUMOR_TABLE_ROLE = "knownTumorTable"
CANDIDATE_TABLE_ROLE = "candidateTable"
REFERENCE_TABLE_ROLE = "referenceTable"
PLOT_CHART_ROLE = "probabilityChart"
PLOT_SERIES_ROLE = "probabilitySeries"
PANCREAS_ROLE = "pancreas"
FOLDER_ROLE = "folder"

CANDIDATE_SEGMENT_ID = "tumorCandidate"
CANDIDATE_COLOR = (0.1, 0.9, 1.0)  # cyan: stands out against the Inferno heatmap
PANCREAS_SEGMENT_ID = "pancreas"
PANCREAS_COLOR = (0.35, 0.85, 0.35)
GEOMETRY_TOLERANCE_MM = 1e-3
# Heatmap values below this are transparent: the zeros outside the analyzed pancreas slices. The
# display window is the map's full range [0, 1]; the candidate threshold is a separate outline.
HEATMAP_VISIBLE_MINIMUM = 1e-3

# DICOM terminology (SNOMED CT), so the segments export as DICOM SEG with proper codes. Format:
# context~category~type~type modifier~anatomic context~anatomic region~region modifier.
PANCREAS_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^15776009^Pancreas~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)
CANDIDATE_TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~^^"
    "~Anatomic codes - DICOM master list~SCT^15776009^Pancreas~^^"
)

# matplotlib's Inferno at 17 evenly spaced positions; 256 colors are interpolated from them.
_INFERNO_KEYS = (
    (0.0015, 0.0005, 0.0139), (0.0423, 0.0281, 0.1411), (0.1293, 0.0473, 0.2908), (0.2383, 0.0366, 0.3964),
    (0.3415, 0.0623, 0.4294), (0.4412, 0.0993, 0.4316), (0.5409, 0.1347, 0.4151), (0.6401, 0.1714, 0.3811),
    (0.7357, 0.2159, 0.3302), (0.8224, 0.2752, 0.2661), (0.8943, 0.3534, 0.1936), (0.9470, 0.4492, 0.1153),
    (0.9784, 0.5579, 0.0349), (0.9879, 0.6753, 0.0653), (0.9746, 0.7977, 0.2063), (0.9476, 0.9174, 0.4107),
    (0.9884, 0.9984, 0.6449),
)  # fmt: skip
INFERNO_SINGLETON_TAG = "PancDiffInferno"


class ResultError(ValueError):
    """The engine's output does not fit the CT (a broken contract, not a user mistake)."""


class MaskError(ValueError):
    """The pancreas mask the user chose cannot be used; the message says why and what to do."""


# -- geometry and voxels ------------------------------------------------------------------------


def ijkToRasFromItk(origin, spacing, direction) -> np.ndarray:
    """IJK->RAS (4x4) of an ITK image given its LPS origin, spacing and row-major 3x3 direction."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(origin, float)
    return matrix


def itkGeometryFromIjkToRas(ijkToRas: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in ITK's LPS convention, the inverse of ``ijkToRasFromItk``."""
    linear = LPS_TO_RAS @ np.asarray(ijkToRas, float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = LPS_TO_RAS @ np.asarray(ijkToRas, float)[:3, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def vtkMatrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def arrayFromVtkMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def ijkToRas(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromVtkMatrix(matrix)


def sameGeometry(nodeA, nodeB, toleranceMm: float = GEOMETRY_TOLERANCE_MM) -> bool:
    """Same voxel grid: dimensions equal and IJK->RAS equal within ``toleranceMm``."""
    imageA, imageB = nodeA.GetImageData(), nodeB.GetImageData()
    if imageA is None or imageB is None or imageA.GetDimensions() != imageB.GetDimensions():
        return False
    return bool(np.allclose(ijkToRas(nodeA), ijkToRas(nodeB), atol=toleranceMm, rtol=0))


def arrayFromVolume(volumeNode) -> np.ndarray:
    """The voxels as a numpy view indexed [k, j, i]; writing to it changes the node's voxels."""
    image = volumeNode.GetImageData()
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def setVolumeArray(volumeNode, array: np.ndarray, ijkToRasMatrix: np.ndarray) -> None:
    """Replace the node's voxels (a copy of ``array``, indexed [k, j, i]) and its geometry."""
    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    volumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(ijkToRasMatrix))
    volumeNode.SetAndObserveImageData(image)


def ijkToWorld(volumeNode, ijk) -> np.ndarray:
    """World RAS of a voxel index, through the node's parent transforms if it has any."""
    ras = ijkToRas(volumeNode) @ np.array([*map(float, ijk), 1.0])
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        toWorld = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(toWorld)
        return np.array(toWorld.TransformPoint(ras[:3]))
    return ras[:3]


def worldToIjk(volumeNode, world) -> np.ndarray:
    """Continuous voxel index (i, j, k) of a world RAS point."""
    ras = np.asarray(world, float)
    parent = volumeNode.GetParentTransformNode()
    if parent is not None:
        fromWorld = vtk.vtkGeneralTransform()
        parent.GetTransformFromWorld(fromWorld)
        ras = np.array(fromWorld.TransformPoint(ras))
    return (np.linalg.inv(ijkToRas(volumeNode)) @ np.array([*ras, 1.0]))[:3]


# -- files --------------------------------------------------------------------------------------


def readImageFile(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(voxels [k, j, i], IJK->RAS) of a NIfTI/NRRD/MHA file."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ResultError(
            f"{path}: expected a 3D scalar image, got {image.GetDimension()}D "
            f"with {image.GetNumberOfComponentsPerPixel()} components"
        )
    return sitk.GetArrayFromImage(image), ijkToRasFromItk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def loadVolumeFile(scene, path: str | Path, name: str | None = None, className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node read from ``path`` with exactly the file's geometry (see the module doc)."""
    array, matrix = readImageFile(path)
    node = scene.AddNewNodeByClass(className, name or Path(path).name.split(".")[0])
    setVolumeArray(node, array, matrix)
    node.CreateDefaultDisplayNodes()
    return node


def writeVolumeFile(volumeNode, path: str | Path, array: np.ndarray | None = None, compress: bool = False) -> None:
    """Write the node's voxels (or ``array`` on the node's grid) with the node's geometry in LPS."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(arrayFromVolume(volumeNode) if array is None else array))
    origin, spacing, direction = itkGeometryFromIjkToRas(ijkToRas(volumeNode))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), compress)


def pancreasMaskArray(ctNode, segmentationNode=None, segmentId: str | None = None, labelmapNode=None) -> np.ndarray:
    """A 0/1 uint8 mask on the CT's voxel grid from a segment or a label map (nonzero = pancreas).

    A label map on another grid, and any segmentation, is resampled to the CT through a temporary
    segmentation export (nearest neighbour); every node that makes is removed again.
    """
    scene = ctNode.GetScene()
    if labelmapNode is not None and sameGeometry(labelmapNode, ctNode):
        return (arrayFromVolume(labelmapNode) > 0).astype(np.uint8)
    nodesBefore = {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}
    try:
        if labelmapNode is not None:
            ensureSegmentationConverters()
            segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "PancDiff temporary mask")
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmapNode, segmentationNode
            ):
                raise MaskError(f"Label map '{labelmapNode.GetName()}' could not be read as a segmentation.")
            segmentIds = vtk.vtkStringArray()
            segmentationNode.GetSegmentation().GetSegmentIDs(segmentIds)
        elif segmentationNode is not None:
            if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
                raise MaskError(f"Choose the pancreas segment in '{segmentationNode.GetName()}'.")
            segmentIds = vtk.vtkStringArray()
            segmentIds.InsertNextValue(segmentId)
        else:
            raise MaskError("Choose a pancreas segmentation or label map, or let TotalSegmentator find it.")
        exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "PancDiff temporary mask")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentationNode, segmentIds, exported, ctNode
        ):
            raise MaskError(f"The pancreas mask could not be resampled to '{ctNode.GetName()}'.")
        if exported.GetImageData() is None:
            return np.zeros(arrayFromVolume(ctNode).shape, np.uint8)
        return (arrayFromVolume(exported) > 0).astype(np.uint8)
    finally:  # the temporary nodes and what they brought along (display nodes, color tables)
        added = [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in nodesBefore:
                scene.RemoveNode(node)


def segmentMaskArray(referenceVolumeNode, segmentationNode, segmentId: str) -> np.ndarray:
    """A 0/1 uint8 mask of one segment on ``referenceVolumeNode``'s voxel grid (e.g. a reference lesion)."""
    if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise MaskError(f"Segment '{segmentId}' is not in '{segmentationNode.GetName()}': choose another segment.")
    return pancreasMaskArray(referenceVolumeNode, segmentationNode=segmentationNode, segmentId=segmentId)


def writePancreasMask(
    ctNode, path: str | Path, segmentationNode=None, segmentId: str | None = None, labelmapNode=None
) -> int:
    """Write the chosen pancreas mask on the CT's grid to ``path``; returns its voxel count."""
    mask = pancreasMaskArray(ctNode, segmentationNode, segmentId, labelmapNode)
    count = int(mask.sum())
    if count == 0:
        raise MaskError("The chosen pancreas mask is empty inside the CT. Choose another segment or label map.")
    writeVolumeFile(ctNode, path, mask, compress=True)
    return count


# -- result nodes -------------------------------------------------------------------------------


@dataclass
class DetectionResult:
    """The nodes of one detection on one CT; a rerun updates these same nodes."""

    heatmapNode: object
    candidateNode: object
    sliceTableNode: object
    summaryNode: object

    @property
    def confidence(self) -> float:
        value = self.heatmapNode.GetAttribute(CONFIDENCE_ATTRIBUTE)
        return float(value) if value else math.nan

    @property
    def settingsKey(self) -> str:
        return self.heatmapNode.GetAttribute(SETTINGS_ATTRIBUTE) or ""

    def nodes(self) -> list:
        return [self.heatmapNode, self.candidateNode, self.sliceTableNode, self.summaryNode]


def _resultNodes(ctNode) -> dict[str, object]:
    """Nodes in the scene that hold results for ``ctNode``, by role (found via node references)."""
    found = {}
    scene = ctNode.GetScene()
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        role = node.GetAttribute(ROLE_ATTRIBUTE)
        if role and node.GetNodeReferenceID(SOURCE_VOLUME_REFERENCE) == ctNode.GetID():
            found.setdefault(role, node)
    return found


def findResult(ctNode) -> DetectionResult | None:
    """The complete result already in the scene for this CT, or None."""
    found = _resultNodes(ctNode)
    roles = (HEATMAP_ROLE, CANDIDATES_ROLE, SLICE_TABLE_ROLE, SUMMARY_ROLE)
    if not all(role in found for role in roles):
        return None
    return DetectionResult(*(found[role] for role in roles))


def _resultNode(ctNode, found: dict, role: str, className: str, name: str):
    node = found.get(role)
    if node is None:
        node = ctNode.GetScene().AddNewNodeByClass(className, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE, ctNode.GetID())
    return node


def resultTableNode(ctNode, role: str, title: str):
    """This CT's table node for ``role`` (created on first use, in the CT's PancDiff folder)."""
    node = _resultNode(ctNode, _resultNodes(ctNode), role, "vtkMRMLTableNode", f"{ctNode.GetName()} PancDiff {title}")
    placeInStudyFolder(ctNode, [node])
    return node


def knownTumorTableNode(ctNode):
    """The known-tumor comparison table of this CT (created on first use)."""
    return resultTableNode(ctNode, KNOWN_TUMOR_TABLE_ROLE, "known tumors")


def importResults(
    ctNode, outputDir: str | Path, threshold: float, opacity: float = 0.5, settingsKey: str = ""
) -> DetectionResult:
    """Load a ``pancdiff detect`` output folder for ``ctNode`` into the scene and show it.

    Reuses this CT's result nodes from a previous run (a rerun replaces, never piles up). Shows the
    heatmap as foreground over the CT in every slice view.

    Raises:
        ResultError: the heatmap's voxel grid is not the CT's.
    """
    outputDir = Path(outputDir)
    array, matrix = readImageFile(outputDir / contract.HEATMAP_FILE)
    ctArray = arrayFromVolume(ctNode)
    if array.shape != ctArray.shape or not np.allclose(matrix, ijkToRas(ctNode), atol=GEOMETRY_TOLERANCE_MM, rtol=0):
        raise ResultError(
            f"{outputDir / contract.HEATMAP_FILE} is not on the voxel grid of '{ctNode.GetName()}' "
            f"(shape {array.shape} vs {ctArray.shape}); rerun Detect."
        )
    summary = contract.readSummary(outputDir / contract.SUMMARY_FILE)
    sliceRows = contract.readSliceRows(outputDir / contract.SLICES_FILE)

    found = _resultNodes(ctNode)
    name = ctNode.GetName()
    heatmapNode = _resultNode(ctNode, found, HEATMAP_ROLE, "vtkMRMLScalarVolumeNode", f"{name} PancDiff heatmap")
    candidateNode = _resultNode(
        ctNode, found, CANDIDATES_ROLE, "vtkMRMLSegmentationNode", f"{name} PancDiff candidates"
    )
    sliceTableNode = _resultNode(ctNode, found, SLICE_TABLE_ROLE, "vtkMRMLTableNode", f"{name} PancDiff slices")
    summaryNode = _resultNode(ctNode, found, SUMMARY_ROLE, "vtkMRMLTextNode", f"{name} PancDiff summary")
    result = DetectionResult(heatmapNode, candidateNode, sliceTableNode, summaryNode)

    # The CT's own matrix, not the file's float32 copy of it: the grids are identical by contract.
    setVolumeArray(heatmapNode, array.astype(np.float32, copy=False), ijkToRas(ctNode))
    heatmapNode.SetAttribute(CONFIDENCE_ATTRIBUTE, repr(summary.confidence))
    heatmapNode.SetAttribute(SETTINGS_ATTRIBUTE, settingsKey)
    heatmapNode.SetAttribute(ANALYZED_EXTENT_ATTRIBUTE, " ".join(map(str, _nonzeroExtent(array))))
    parentTransformId = ctNode.GetTransformNodeID()
    for node in (heatmapNode, candidateNode):
        node.SetAndObserveTransformNodeID(parentTransformId)
    _configureHeatmapDisplay(heatmapNode)
    _configureCandidateDisplay(candidateNode, ctNode)
    updateCandidates(result, threshold)
    _fillSliceTable(sliceTableNode, sliceRows, ctNode)
    summaryNode.SetText(json.dumps(summary.raw, indent=2))
    placeInStudyFolder(ctNode, result.nodes())
    showHeatmap(ctNode, heatmapNode, opacity)
    return result


def _nonzeroExtent(array: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """(i0, i1, j0, j1, k0, k1) bounding the analyzed (nonzero) voxels; thresholds only look there."""
    nonzero = [np.flatnonzero(array.any(axis=axes)) for axes in ((0, 1), (0, 2), (1, 2))]
    if any(indices.size == 0 for indices in nonzero):
        return (0, 0, 0, 0, 0, 0)
    (i0, i1), (j0, j1), (k0, k1) = ((int(ix[0]), int(ix[-1])) for ix in nonzero)
    return (i0, i1, j0, j1, k0, k1)


def analyzedExtent(heatmapNode) -> tuple[int, int, int, int, int, int]:
    value = heatmapNode.GetAttribute(ANALYZED_EXTENT_ATTRIBUTE)
    if value:
        return tuple(int(v) for v in value.split())
    return _nonzeroExtent(arrayFromVolume(heatmapNode))


# -- display ------------------------------------------------------------------------------------


def heatmapColorNode(scene):
    """Slicer's Inferno color table where the scene has it, else an equivalent PancDiff table."""
    for className in ("vtkMRMLColorTableNode", "vtkMRMLProceduralColorNode"):
        nodes = scene.GetNodesByClassByName(className, "Inferno")
        if nodes.GetNumberOfItems() > 0:
            return nodes.GetItemAsObject(0)
    existing = scene.GetSingletonNode(INFERNO_SINGLETON_TAG, "vtkMRMLColorTableNode")
    if existing is not None:
        return existing
    node = slicer.vtkMRMLColorTableNode()
    node.SetName("PancDiff Inferno")
    node.SetSingletonTag(INFERNO_SINGLETON_TAG)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    keys = np.asarray(_INFERNO_KEYS)
    positions = np.linspace(0.0, 1.0, len(keys))
    for index, x in enumerate(np.linspace(0.0, 1.0, 256)):
        r, g, b = (float(np.interp(x, positions, keys[:, channel])) for channel in range(3))
        node.SetColor(index, f"{x:.3f}", r, g, b, 1.0)
    node.SetAttribute("Category", "PancDiff")
    scene.AddNode(node)
    return node


def _configureHeatmapDisplay(heatmapNode) -> None:
    """Inferno over the map's full range; only the zeros outside the analyzed slices are hidden."""
    displayNode = heatmapNode.GetDisplayNode()
    if displayNode is None:
        heatmapNode.CreateDefaultDisplayNodes()
        displayNode = heatmapNode.GetDisplayNode()
    with _modifying(displayNode):
        displayNode.SetAndObserveColorNodeID(heatmapColorNode(heatmapNode.GetScene()).GetID())
        displayNode.AutoWindowLevelOff()
        displayNode.SetWindowLevelMinMax(0.0, 1.0)
        displayNode.SetInterpolate(1)
        displayNode.AutoThresholdOff()
        displayNode.ApplyThresholdOn()
        displayNode.SetThreshold(HEATMAP_VISIBLE_MINIMUM, 1.0)


def setHeatmapWindow(heatmapNode, low: float, high: float) -> None:
    """The heatmap's own color window [low, high] (0..1); independent of the candidate threshold."""
    low, high = float(low), float(high)
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"Heatmap window must satisfy 0 <= low < high <= 1, got {low:g}..{high:g}")
    displayNode = heatmapNode.GetDisplayNode()
    if displayNode is not None:
        displayNode.SetWindowLevelMinMax(low, high)


def _configureCandidateDisplay(candidateNode, ctNode) -> None:
    ensureSegmentationConverters()
    if candidateNode.GetDisplayNode() is None:
        candidateNode.CreateDefaultDisplayNodes()
    _codedSegment(
        candidateNode, ctNode, CANDIDATE_SEGMENT_ID, "Tumor candidate", CANDIDATE_COLOR, CANDIDATE_TERMINOLOGY
    )
    displayNode = candidateNode.GetDisplayNode()
    with _modifying(displayNode):
        displayNode.SetVisibility2DFill(False)  # the heatmap shows through; the outline marks the candidate
        displayNode.SetVisibility2DOutline(True)
        displayNode.SetSliceIntersectionThickness(2)


def _codedSegment(segmentationNode, ctNode, segmentId: str, name: str, color, terminology: str) -> None:
    """The segment (made on first use) with its DICOM terminology, on the CT's geometry.

    The node reference to the CT is what DICOM SEG export follows to the source series.
    """
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(ctNode)
    segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(), ctNode.GetID())
    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        segmentation.AddEmptySegment(segmentId, name, list(color))
    segment = segmentation.GetSegment(segmentId)
    segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)


class _modifying:
    """``StartModify``/``EndModify`` as a context: one Modified event for many property changes."""

    def __init__(self, node) -> None:
        self.node = node

    def __enter__(self):
        self.wasModifying = self.node.StartModify()

    def __exit__(self, *exc) -> None:
        self.node.EndModify(self.wasModifying)


def ensureSegmentationConverters() -> None:
    """Register the labelmap <-> surface conversion rules where no Segmentations module did (slicer-core)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def candidateMask(heatmapArray: np.ndarray, threshold: float) -> np.ndarray:
    """The rule that makes a candidate, shared with the engine: heatmap >= threshold."""
    return heatmapArray >= threshold


def setThreshold(result: DetectionResult, threshold: float) -> None:
    """Make the candidate segment (the cyan outline) exactly the voxels with heatmap >= threshold.

    Changes the candidate segmentation only: the heatmap keeps its own window and its voxels.
    """
    updateCandidates(result, threshold)


def updateCandidates(result: DetectionResult, threshold: float) -> None:
    """Replace the candidate segment with heatmap >= threshold (within the analyzed extent)."""
    heatmapNode = result.heatmapNode
    i0, i1, j0, j1, k0, k1 = analyzedExtent(heatmapNode)
    values = arrayFromVolume(heatmapNode)[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1]
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(i0, i1, j0, j1, k0, k1)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(values.shape)
    voxels[:] = candidateMask(values, threshold)
    labelmap.SetImageToWorldMatrix(vtkMatrixFromArray(ijkToRas(heatmapNode)))
    segmentationLogic = slicer.vtkSlicerSegmentationsModuleLogic
    if not segmentationLogic.SetBinaryLabelmapToSegment(
        labelmap, result.candidateNode, CANDIDATE_SEGMENT_ID, segmentationLogic.MODE_REPLACE, labelmap.GetExtent()
    ):
        raise RuntimeError("Updating the tumor candidate segment failed")


def setCandidate3DVisible(result: DetectionResult, visible: bool) -> None:
    """Show the candidate as a 3D surface (made on first request) or hide it."""
    if visible:
        result.candidateNode.CreateClosedSurfaceRepresentation()
    displayNode = result.candidateNode.GetDisplayNode()
    if displayNode is not None:
        displayNode.SetVisibility3D(visible)


def _compositeNodes(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]


def showHeatmap(ctNode, heatmapNode, opacity: float) -> None:
    """CT as background and heatmap as foreground in every slice view."""
    for compositeNode in _compositeNodes(ctNode.GetScene()):
        with _modifying(compositeNode):
            compositeNode.SetBackgroundVolumeID(ctNode.GetID())
            compositeNode.SetForegroundVolumeID(heatmapNode.GetID())
            compositeNode.SetForegroundOpacity(opacity)


def setOpacity(heatmapNode, opacity: float) -> None:
    """Heatmap opacity in the slice views showing it (a view property; voxels untouched)."""
    for compositeNode in _compositeNodes(heatmapNode.GetScene()):
        if compositeNode.GetForegroundVolumeID() == heatmapNode.GetID():
            compositeNode.SetForegroundOpacity(opacity)


def peakPosition(heatmapNode) -> tuple[np.ndarray, float]:
    """(world RAS of the strongest voxel, its value)."""
    array = arrayFromVolume(heatmapNode)
    k, j, i = np.unravel_index(int(np.argmax(array)), array.shape)
    return ijkToWorld(heatmapNode, (i, j, k)), float(array[k, j, i])


def summaryOf(result: DetectionResult) -> contract.Summary:
    """The engine's ``summary.json`` of this result (kept in the summary text node)."""
    return contract.summaryFromDict(json.loads(result.summaryNode.GetText() or "{}"))


def peakWorld(heatmapNode, peak: contract.Peak) -> np.ndarray:
    """World RAS of one of the engine's peaks: its voxel through the node's transforms, else its RAS."""
    if peak.peakIjk is not None:
        return ijkToWorld(heatmapNode, peak.peakIjk)
    return np.asarray(peak.peakRas, float)


def jumpTo(scene, ras) -> np.ndarray:
    """Center every slice view on a world RAS point."""
    ras = np.asarray(ras, float)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *ras.tolist(), slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return ras


def jumpToPeak(heatmapNode, result: DetectionResult | None = None) -> np.ndarray:
    """Center the slice views on the engine's strongest ranked peak (its first ``summary.json`` peak).

    Without a result, or when the engine reported no peak, on the heatmap's maximum instead.
    """
    peaks = summaryOf(result).peaks if result is not None else []
    ras = peakWorld(heatmapNode, peaks[0]) if peaks else peakPosition(heatmapNode)[0]
    return jumpTo(heatmapNode.GetScene(), ras)


# -- tables and subject hierarchy ---------------------------------------------------------------


def setTableColumns(tableNode, columns: list[tuple[str, str, list]]) -> None:
    """Replace the table's contents with (name, "int"|"double"|"string", values) columns."""
    table = vtk.vtkTable()
    for name, kind, values in columns:
        array = {"int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray, "string": vtk.vtkStringArray}[kind]()
        array.SetName(name)
        array.SetNumberOfValues(len(values))
        for index, value in enumerate(values):
            array.SetValue(index, value)
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)


def _fillSliceTable(tableNode, rows: list[contract.SliceRow], ctNode) -> None:
    """Per-slice tumor probability and peak position (RAS, mm) of the engine's ``slices.csv``."""
    peaks = []
    for row in rows:
        if row.peakRas is not None:
            peaks.append(row.peakRas)
        elif row.peakIjk is not None:
            peaks.append(tuple((ijkToRas(ctNode) @ np.array([*row.peakIjk, 1.0]))[:3].tolist()))
        else:
            peaks.append((math.nan,) * 3)
    setTableColumns(
        tableNode,
        [
            ("Slice", "int", [row.sliceIndex for row in rows]),
            ("Tumor probability", "double", [row.tumorProbability for row in rows]),
            ("Map max", "double", [row.mapMax for row in rows]),
            ("Peak R", "double", [p[0] for p in peaks]),
            ("Peak A", "double", [p[1] for p in peaks]),
            ("Peak S", "double", [p[2] for p in peaks]),
        ],
    )
    for column in ("Peak R", "Peak A", "Peak S"):
        tableNode.SetColumnUnitLabel(column, "mm")
    tableNode.SetColumnDescription("Tumor probability", "Classifier's probability that the slice shows a tumor")
    tableNode.SetColumnDescription("Map max", "Largest anomaly-map value in the slice (0..1)")


def _studyFolder(shNode, ctNode) -> int:
    """The PancDiff folder beside the CT in its study (or wherever the CT sits), made on first use."""
    ctItem = shNode.GetItemByDataNode(ctNode) or shNode.CreateItem(shNode.GetSceneItemID(), ctNode)
    parentItem = shNode.GetItemParent(ctItem) or shNode.GetSceneItemID()
    children = vtk.vtkIdList()
    shNode.GetItemChildren(parentItem, children)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if (
            shNode.GetItemAttribute(item, ROLE_ATTRIBUTE) == FOLDER_ROLE
            and shNode.GetItemAttribute(item, SOURCE_VOLUME_REFERENCE) == ctNode.GetID()
        ):
            return item
    folder = shNode.CreateFolderItem(parentItem, f"PancDiff: {ctNode.GetName()}")
    shNode.SetItemAttribute(folder, ROLE_ATTRIBUTE, FOLDER_ROLE)
    shNode.SetItemAttribute(folder, SOURCE_VOLUME_REFERENCE, ctNode.GetID())
    return folder


def placeInStudyFolder(ctNode, nodes: list) -> int:
    """Group ``nodes`` in the CT's PancDiff folder (in the CT's study); returns the folder item."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    folder = _studyFolder(shNode, ctNode)
    for node in nodes:
        item = shNode.GetItemByDataNode(node)
        if item:
            shNode.SetItemParent(item, folder)
        else:
            shNode.CreateItem(folder, node)
    return folder


# -- the pancreas as an editable segment ----------------------------------------------------------


def findPancreasSegment(ctNode) -> tuple | None:
    """(segmentation node, segment id) of the CT's PancDiff pancreas segment, or None before the first run."""
    node = _resultNodes(ctNode).get(PANCREAS_ROLE)
    if node is None or node.GetSegmentation().GetSegment(PANCREAS_SEGMENT_ID) is None:
        return None
    return node, PANCREAS_SEGMENT_ID


def importPancreasMask(ctNode, maskPath: str | Path) -> tuple:
    """Show the pancreas mask a run used as the CT's editable pancreas segment (made once, then replaced).

    Returns (segmentation node, segment id). The segment carries the SNOMED terminology of the
    pancreas and refers to the CT, so it can be edited in Segment Editor and exported as DICOM SEG.
    """
    array, matrix = readImageFile(maskPath)
    if array.shape != arrayFromVolume(ctNode).shape:
        raise ResultError(f"{maskPath} is not on the voxel grid of '{ctNode.GetName()}'")
    found = _resultNodes(ctNode)
    node = _resultNode(ctNode, found, PANCREAS_ROLE, "vtkMRMLSegmentationNode", f"{ctNode.GetName()} pancreas")
    ensureSegmentationConverters()
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.SetAndObserveTransformNodeID(ctNode.GetTransformNodeID())
    _codedSegment(node, ctNode, PANCREAS_SEGMENT_ID, "Pancreas", PANCREAS_COLOR, PANCREAS_TERMINOLOGY)
    labelmap = slicer.vtkOrientedImageData()
    nk, nj, ni = array.shape
    labelmap.SetExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(array.shape)[:] = array > 0
    labelmap.SetImageToWorldMatrix(vtkMatrixFromArray(ijkToRas(ctNode)))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(labelmap, node, PANCREAS_SEGMENT_ID, logic.MODE_REPLACE):
        raise RuntimeError("Updating the pancreas segment failed")
    displayNode = node.GetDisplayNode()
    with _modifying(displayNode):
        displayNode.SetVisibility2DFill(False)
        displayNode.SetVisibility2DOutline(True)
    placeInStudyFolder(ctNode, [node])
    return node, PANCREAS_SEGMENT_ID


# -- p(tumor) per slice as a plot -----------------------------------------------------------------


def probabilityPlot(ctNode, sliceTableNode):
    """A plot chart of the slice table's tumor probability against slice index (made once per CT)."""
    found = _resultNodes(ctNode)
    name = ctNode.GetName()
    series = _resultNode(ctNode, found, PLOT_SERIES_ROLE, "vtkMRMLPlotSeriesNode", f"{name} p(tumor)")
    series.SetAndObserveTableNodeID(sliceTableNode.GetID())
    series.SetXColumnName("Slice")
    series.SetYColumnName("Tumor probability")
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetColor(*CANDIDATE_COLOR)
    chart = _resultNode(ctNode, found, PLOT_CHART_ROLE, "vtkMRMLPlotChartNode", f"{name} p(tumor) per slice")
    chart.SetAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Classifier p(tumor) per slice")
    chart.SetXAxisTitle("Slice (k)")
    chart.SetYAxisTitle("p(tumor)")
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetYAxisRangeAuto(False)
    chart.SetLegendVisibility(False)
    placeInStudyFolder(ctNode, [chart, series])
    return chart

"""The Slicer module's scene logic against real MRML (``slicer-core``), without the Slicer GUI.

Synthetic CTs have non-trivial geometry (non-zero origin, anisotropic spacing, a direction matrix
with a rotation and a flip); the engine's outputs are written here in the CLI's format, so nothing
depends on trained models or on the CLI itself. Also: the background-process runner with real child
processes, and a whole Detect run against a stand-in engine.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
sitk = pytest.importorskip("SimpleITK")
import vtk

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
sys.path.insert(0, str(MODULE_DIR))

from PancDiffSlicerLib import contract, scene
from PancDiffSlicerLib.job import DetectionJob, JobState
from PancDiffSlicerLib.markups import KnownTumorComparison, localPeaks
from PancDiffSlicerLib.process import BackgroundProcess, ExitCode, readableError

# A CT grid no axis-aligned shortcut gets right: rotated 30 degrees about S, the j axis flipped.
SIZE_IJK = (20, 16, 12)
SPACING = (0.8, 1.1, 2.5)
ORIGIN_LPS = (-30.5, 12.25, 101.0)
_c, _s = math.cos(math.radians(30)), math.sin(math.radians(30))
DIRECTION = tuple((np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.diag([1, -1, 1])).ravel().tolist())
ANALYZED_K = range(3, 9)
PEAK_IJK = (12, 7, 5)
SECOND_PEAK_IJK = (4, 10, 7)


# -- fixtures ------------------------------------------------------------------------------------


def _newScene():
    """A scene set up like Slicer's: default colors, subject hierarchy, segmentation converters."""
    mrmlScene = slicer.vtkMRMLScene()
    colorLogic = slicer.vtkMRMLColorLogic()
    colorLogic.SetMRMLScene(mrmlScene)
    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(mrmlScene)
    scene.ensureSegmentationConverters()
    mrmlScene._keepAlive = colorLogic  # the logic must outlive the test
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(mrmlScene)
    for layout, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        sliceNode = mrmlScene.CreateNodeByClass("vtkMRMLSliceNode")  # a copy of the default: has the presets
        sliceNode.SetName(layout)
        sliceNode.SetLayoutName(layout)
        sliceNode.SetSingletonTag(layout)
        sliceNode.SetOrientation(orientation)
        mrmlScene.AddNode(sliceNode)
        compositeNode = slicer.vtkMRMLSliceCompositeNode()
        compositeNode.SetLayoutName(layout)
        compositeNode.SetSingletonTag(layout)
        mrmlScene.AddNode(compositeNode)
    return mrmlScene


def _ctImage() -> sitk.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(-200, 300, size=SIZE_IJK[::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN_LPS)
    image.SetDirection(DIRECTION)
    return image


def _heatmapArray(scale: float = 1.0) -> np.ndarray:
    """Two Gaussian blobs (peaks 1.0 and 0.6 before ``scale``) on the analyzed slices, 0 elsewhere."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE_IJK[::-1]), indexing="ij")
    blob = np.exp(-((i - PEAK_IJK[0]) ** 2 + (j - PEAK_IJK[1]) ** 2 + (k - PEAK_IJK[2]) ** 2) / 6.0)
    blob2 = 0.6 * np.exp(
        -((i - SECOND_PEAK_IJK[0]) ** 2 + (j - SECOND_PEAK_IJK[1]) ** 2 + (k - SECOND_PEAK_IJK[2]) ** 2) / 3.0
    )
    heatmap = np.maximum(blob, blob2) * scale
    heatmap[[kk not in ANALYZED_K for kk in range(SIZE_IJK[2])]] = 0
    return heatmap.astype(np.float32)


def _writeEngineOutputs(
    outputDir: Path, ctImage: sitk.Image, heatmap: np.ndarray, threshold: float = 0.35, confidence: float = 0.87
) -> None:
    """The files ``pancdiff detect`` writes, in its format (columns as the engine writes them)."""
    outputDir.mkdir(parents=True, exist_ok=True)
    heatmapImage = sitk.GetImageFromArray(heatmap)
    heatmapImage.CopyInformation(ctImage)
    sitk.WriteImage(heatmapImage, str(outputDir / contract.HEATMAP_FILE), True)
    candidates = sitk.GetImageFromArray((heatmap >= threshold).astype(np.uint8))
    candidates.CopyInformation(ctImage)
    sitk.WriteImage(candidates, str(outputDir / contract.CANDIDATES_FILE), True)
    with open(outputDir / contract.SLICES_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "slice_index",
                "tumor_probability",
                "map_max",
                "anomaly_max",
                "peak_i",
                "peak_j",
                "peak_k",
                "peak_lps_x_mm",
                "peak_lps_y_mm",
                "peak_lps_z_mm",
            ]
        )
        for k in ANALYZED_K:
            j, i = np.unravel_index(int(np.argmax(heatmap[k])), heatmap[k].shape)
            lps = ctImage.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
            writer.writerow([k, 0.1 * k, heatmap[k].max(), 0.5, i, j, k, *lps])
    peakLps = ctImage.TransformIndexToPhysicalPoint(PEAK_IJK)
    summary = {
        "overall_confidence": confidence,
        "settings": {"scale": 7.0},
        "model_id": "synthetic",
        "peaks": [{"slice_index": PEAK_IJK[2], "value": 1.0, "peak_lps_mm": list(peakLps)}],
    }
    (outputDir / contract.SUMMARY_FILE).write_text(json.dumps(summary))


def _ctToRas(index) -> np.ndarray:
    """RAS of a voxel of ``_ctImage`` computed by ITK (LPS) and flipped: the reference geometry."""
    x, y, z = _ctImage().TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
    return np.array([-x, -y, z])


@pytest.fixture
def mrmlScene():
    return _newScene()


@pytest.fixture
def ctFile(tmp_path) -> Path:
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ctImage(), str(path))
    return path


@pytest.fixture
def ctNode(mrmlScene, ctFile):
    return scene.loadVolumeFile(mrmlScene, ctFile, "Abdomen CT")


@pytest.fixture
def outputDir(tmp_path) -> Path:
    path = tmp_path / "out"
    _writeEngineOutputs(path, _ctImage(), _heatmapArray())
    return path


@pytest.fixture
def result(ctNode, outputDir):
    return scene.importResults(ctNode, outputDir, threshold=0.35, opacity=0.5, settingsKey="S=7")


def _storageNodeRead(mrmlScene, path: Path):
    """Slicer's own reader (ITK through vtkITK): the independent reference for our geometry."""
    storageNode = slicer.vtkMRMLVolumeArchetypeStorageNode()
    mrmlScene.AddNode(storageNode)
    node = slicer.vtkMRMLScalarVolumeNode()
    mrmlScene.AddNode(node)
    storageNode.SetFileName(str(path))
    assert storageNode.ReadData(node)
    return node


def _assertSameVoxelsInSpace(node, reference) -> None:
    """Every voxel of ``node`` sits on a voxel centre of ``reference`` holding the same value.

    Slicer's reader may store an equivalent grid (it reverses k for left-handed directions), so
    grids are compared by where their voxels are, not by their matrices.
    """
    array, referenceArray = scene.arrayFromVolume(node), scene.arrayFromVolume(reference)
    assert array.size == referenceArray.size
    kji = np.indices(array.shape).reshape(3, -1)
    ijk1 = np.vstack([kji[::-1], np.ones(kji.shape[1])])
    toReference = np.linalg.inv(scene.ijkToRas(reference)) @ scene.ijkToRas(node)
    referenceIjk = (toReference @ ijk1)[:3]
    rounded = np.rint(referenceIjk).astype(int)
    np.testing.assert_allclose(referenceIjk, rounded, atol=1e-3)
    np.testing.assert_array_equal(referenceArray[rounded[2], rounded[1], rounded[0]], array.ravel())


def _exportedCandidates(result, referenceNode) -> np.ndarray:
    labelmap = referenceNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(scene.CANDIDATE_SEGMENT_ID)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        result.candidateNode, ids, labelmap, referenceNode
    )
    array = scene.arrayFromVolume(labelmap).copy()
    referenceNode.GetScene().RemoveNode(labelmap)
    return array


def _countNodes(mrmlScene) -> dict[str, int]:
    counts: dict[str, int] = {}
    for index in range(mrmlScene.GetNumberOfNodes()):
        name = mrmlScene.GetNthNode(index).GetClassName()
        counts[name] = counts.get(name, 0) + 1
    return counts


# -- geometry ------------------------------------------------------------------------------------


def test_nifti_loaded_through_simpleitk_has_slicers_own_geometry(mrmlScene, ctFile, ctNode):
    _assertSameVoxelsInSpace(ctNode, _storageNodeRead(mrmlScene, ctFile))


def test_voxel_positions_match_itk_physical_points_flipped_to_ras(ctNode):
    for index in [(0, 0, 0), (19, 15, 11), (3, 14, 7)]:
        np.testing.assert_allclose(scene.ijkToWorld(ctNode, index), _ctToRas(index), atol=1e-4)
    # LPS->RAS flips two axes, which keeps the handedness: this grid is left-handed in both.
    assert np.sign(np.linalg.det(scene.ijkToRas(ctNode)[:3, :3])) == np.sign(
        np.linalg.det(np.reshape(DIRECTION, (3, 3)))
    )


def test_itk_geometry_round_trips_through_ijk_to_ras():
    matrix = scene.ijkToRasFromItk(ORIGIN_LPS, SPACING, DIRECTION)
    origin, spacing, direction = scene.itkGeometryFromIjkToRas(matrix)
    np.testing.assert_allclose(origin, ORIGIN_LPS, atol=1e-12)
    np.testing.assert_allclose(spacing, SPACING, atol=1e-12)
    np.testing.assert_allclose(direction, DIRECTION, atol=1e-12)


def test_volume_written_for_the_engine_reads_back_identically(mrmlScene, ctNode, tmp_path):
    path = tmp_path / "written.nrrd"
    scene.writeVolumeFile(ctNode, path)
    _assertSameVoxelsInSpace(ctNode, _storageNodeRead(mrmlScene, path))
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN_LPS, atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), DIRECTION, atol=1e-6)


# -- results in the scene ------------------------------------------------------------------------


def test_heatmap_node_geometry_equals_the_ct_nodes(mrmlScene, ctNode, result, outputDir):
    np.testing.assert_array_equal(scene.ijkToRas(result.heatmapNode), scene.ijkToRas(ctNode))
    assert result.heatmapNode.GetImageData().GetDimensions() == ctNode.GetImageData().GetDimensions()
    _assertSameVoxelsInSpace(result.heatmapNode, _storageNodeRead(mrmlScene, outputDir / contract.HEATMAP_FILE))
    np.testing.assert_array_equal(scene.arrayFromVolume(result.heatmapNode), _heatmapArray())


def test_heatmap_shown_over_its_full_range_in_inferno_not_cut_at_the_candidate_threshold(ctNode, result):
    display = result.heatmapNode.GetDisplayNode()
    assert display.GetColorNode().GetName() in ("Inferno", "PancDiff Inferno")
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert not display.GetAutoWindowLevel()
    # Only the zeros outside the analyzed slices are transparent; 0.35 is the candidate threshold.
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(scene.HEATMAP_VISIBLE_MINIMUM)
    composites = ctNode.GetScene().GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        assert composite.GetBackgroundVolumeID() == ctNode.GetID()
        assert composite.GetForegroundVolumeID() == result.heatmapNode.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    color = display.GetColorNode()
    assert color.GetNumberOfColors() >= 256
    first, last = [0.0] * 4, [0.0] * 4
    color.GetColor(0, first)
    color.GetColor(color.GetNumberOfColors() - 1, last)
    assert sum(first[:3]) < 0.1 and sum(last[:3]) > 2.5  # perceptual ramp: black to pale yellow


def test_threshold_and_opacity_change_only_display_properties(ctNode, result):
    heatmapBefore = scene.arrayFromVolume(result.heatmapNode).copy()
    imageData = result.heatmapNode.GetImageData()
    imageMTime = imageData.GetMTime()
    scene.setThreshold(result, 0.7)
    scene.setOpacity(result.heatmapNode, 0.2)
    assert result.heatmapNode.GetImageData() is imageData and imageData.GetMTime() == imageMTime
    np.testing.assert_array_equal(scene.arrayFromVolume(result.heatmapNode), heatmapBefore)
    composite = ctNode.GetScene().GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundOpacity() == pytest.approx(0.2)


def test_heatmap_window_is_independent_of_the_candidate_threshold(ctNode, result):
    display = result.heatmapNode.GetDisplayNode()
    scene.setThreshold(result, 0.8)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    assert display.GetLowerThreshold() == pytest.approx(scene.HEATMAP_VISIBLE_MINIMUM)
    candidatesAt08 = _exportedCandidates(result, result.heatmapNode).copy()
    scene.setHeatmapWindow(result.heatmapNode, 0.2, 0.6)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.2, 0.6))
    np.testing.assert_array_equal(_exportedCandidates(result, result.heatmapNode), candidatesAt08)
    scene.setThreshold(result, 0.3)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.2, 0.6))
    np.testing.assert_array_equal(_exportedCandidates(result, result.heatmapNode), _heatmapArray() >= 0.3)
    with pytest.raises(ValueError, match="low < high"):
        scene.setHeatmapWindow(result.heatmapNode, 0.6, 0.2)


@pytest.mark.parametrize("threshold", [0.35, 0.05, 0.55, 0.95])
def test_candidate_segmentation_matches_thresholded_map_voxel_for_voxel(ctNode, result, threshold):
    scene.setThreshold(result, threshold)
    expected = (_heatmapArray() >= threshold).astype(np.uint8)
    np.testing.assert_array_equal(_exportedCandidates(result, result.heatmapNode), expected)


def test_candidate_display_is_an_outline_and_3d_surface_on_request(result):
    display = result.candidateNode.GetDisplayNode()
    assert display.GetVisibility2DOutline() and not display.GetVisibility2DFill()
    assert not result.candidateNode.GetSegmentation().ContainsRepresentation("Closed surface")
    scene.setCandidate3DVisible(result, True)
    surface = vtk.vtkPolyData()
    result.candidateNode.GetClosedSurfaceRepresentation(scene.CANDIDATE_SEGMENT_ID, surface)
    assert surface.GetNumberOfPoints() > 0 and display.GetVisibility3D()


def test_rerun_replaces_results_instead_of_piling_up_nodes(ctNode, result, tmp_path):
    countsAfterFirst = _countNodes(ctNode.GetScene())
    secondOutput = tmp_path / "second"
    _writeEngineOutputs(secondOutput, _ctImage(), _heatmapArray(scale=0.5), confidence=0.2)
    second = scene.importResults(ctNode, secondOutput, threshold=0.35, settingsKey="S=3")
    assert _countNodes(ctNode.GetScene()) == countsAfterFirst
    assert [n.GetID() for n in second.nodes()] == [n.GetID() for n in result.nodes()]
    np.testing.assert_array_equal(scene.arrayFromVolume(second.heatmapNode), _heatmapArray(scale=0.5))
    np.testing.assert_array_equal(_exportedCandidates(second, ctNode), (_heatmapArray(0.5) >= 0.35).astype(np.uint8))
    assert second.confidence == pytest.approx(0.2) and second.settingsKey == "S=3"
    assert scene.findResult(ctNode).heatmapNode is result.heatmapNode


def test_results_of_another_ct_are_kept_apart(mrmlScene, ctNode, result, ctFile, outputDir):
    otherCt = scene.loadVolumeFile(mrmlScene, ctFile, "Other CT")
    other = scene.importResults(otherCt, outputDir, threshold=0.35)
    assert other.heatmapNode.GetID() != result.heatmapNode.GetID()
    assert scene.findResult(ctNode).heatmapNode is result.heatmapNode


def test_results_grouped_in_the_cts_study(mrmlScene, ctFile):
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrmlScene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Patient 1")
    study = shNode.CreateStudyItem(patient, "Abdomen study")
    ct = scene.loadVolumeFile(mrmlScene, ctFile, "CT")
    shNode.CreateItem(study, ct)
    outputDir = ctFile.parent / "grouped"
    _writeEngineOutputs(outputDir, _ctImage(), _heatmapArray())
    result = scene.importResults(ct, outputDir, threshold=0.35)
    folders = {shNode.GetItemParent(shNode.GetItemByDataNode(node)) for node in result.nodes()}
    assert len(folders) == 1
    folder = folders.pop()
    assert shNode.GetItemParent(folder) == study
    assert shNode.GetItemAttribute(folder, scene.ROLE_ATTRIBUTE) == scene.FOLDER_ROLE


def test_confidence_and_slice_table_from_the_engines_files(ctNode, result):
    assert result.confidence == pytest.approx(0.87)
    table = result.sliceTableNode
    assert table.GetNumberOfRows() == len(ANALYZED_K)
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names[:3] == ["Slice", "Tumor probability", "Map max"]
    heatmap = _heatmapArray()
    for row, k in enumerate(ANALYZED_K):
        assert int(table.GetCellText(row, 0)) == k
        j, i = np.unravel_index(int(np.argmax(heatmap[k])), heatmap[k].shape)
        peak = [float(table.GetCellText(row, names.index(c))) for c in ("Peak R", "Peak A", "Peak S")]
        np.testing.assert_allclose(peak, _ctToRas((i, j, k)), atol=1e-3)


def test_jump_to_peak_centers_slice_views_on_the_strongest_voxel(mrmlScene, result):
    ras = scene.jumpToPeak(result.heatmapNode)
    np.testing.assert_allclose(ras, _ctToRas(PEAK_IJK), atol=1e-4)
    red = mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    sliceToRas = red.GetSliceToRAS()
    np.testing.assert_allclose([sliceToRas.GetElement(r, 3) for r in range(3)], ras, atol=1e-4)


def test_jump_to_peak_follows_a_parent_transform(mrmlScene, ctNode, outputDir):
    transform = mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 15.0)
    transform.SetMatrixTransformToParent(matrix)
    ctNode.SetAndObserveTransformNodeID(transform.GetID())
    result = scene.importResults(ctNode, outputDir, threshold=0.35)
    assert result.heatmapNode.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(scene.jumpToPeak(result.heatmapNode), _ctToRas(PEAK_IJK) + [15.0, 0, 0], atol=1e-4)


def test_heatmap_on_another_grid_is_refused(ctNode, tmp_path):
    shifted = _ctImage()
    shifted.SetOrigin((0.0, 0.0, 0.0))
    _writeEngineOutputs(tmp_path / "bad", shifted, _heatmapArray())
    with pytest.raises(scene.ResultError, match="voxel grid"):
        scene.importResults(ctNode, tmp_path / "bad", threshold=0.35)


# -- pancreas masks for the engine ---------------------------------------------------------------


def _pancreasArray() -> np.ndarray:
    mask = np.zeros(SIZE_IJK[::-1], np.uint8)
    mask[4:8, 5:11, 6:15] = 7  # TotalSegmentator's pancreas label: any nonzero value counts
    return mask


def test_pancreas_label_map_on_the_ct_grid_is_written_with_the_ct_geometry(mrmlScene, ctNode, tmp_path):
    labelmap = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "pancreas")
    scene.setVolumeArray(labelmap, _pancreasArray(), scene.ijkToRas(ctNode))
    path = tmp_path / "mask.nii.gz"
    assert scene.writePancreasMask(ctNode, path, labelmapNode=labelmap) == int((_pancreasArray() > 0).sum())
    written = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), (_pancreasArray() > 0).astype(np.uint8))
    np.testing.assert_allclose(written.GetOrigin(), ORIGIN_LPS, atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), DIRECTION, atol=1e-5)


def test_pancreas_label_map_on_a_cropped_grid_is_resampled_to_the_ct(mrmlScene, ctNode, tmp_path):
    crop = _pancreasArray()[2:10, 3:13, 4:17]  # a sub-volume starting at voxel (4, 3, 2) of the CT
    matrix = scene.ijkToRas(ctNode).copy()
    matrix[:3, 3] = scene.ijkToWorld(ctNode, (4, 3, 2))
    labelmap = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "cropped pancreas")
    scene.setVolumeArray(labelmap, crop, matrix)
    nodesBefore = mrmlScene.GetNumberOfNodes()
    mask = scene.pancreasMaskArray(ctNode, labelmapNode=labelmap)
    np.testing.assert_array_equal(mask, (_pancreasArray() > 0).astype(np.uint8))
    assert mrmlScene.GetNumberOfNodes() == nodesBefore  # temporary nodes removed


def test_pancreas_segment_is_exported_on_the_ct_grid(mrmlScene, ctNode):
    labelmap = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    scene.setVolumeArray(labelmap, (_pancreasArray() > 0).astype(np.uint8), scene.ijkToRas(ctNode))
    segmentation = mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)
    mask = scene.pancreasMaskArray(ctNode, segmentationNode=segmentation, segmentId=segmentId)
    np.testing.assert_array_equal(mask, (_pancreasArray() > 0).astype(np.uint8))
    with pytest.raises(scene.MaskError, match="segment"):
        scene.pancreasMaskArray(ctNode, segmentationNode=segmentation, segmentId="nonexistent")


def test_empty_pancreas_mask_is_refused_with_a_reason(mrmlScene, ctNode, tmp_path):
    labelmap = mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    scene.setVolumeArray(labelmap, np.zeros(SIZE_IJK[::-1], np.uint8), scene.ijkToRas(ctNode))
    with pytest.raises(scene.MaskError, match="empty"):
        scene.writePancreasMask(ctNode, tmp_path / "m.nii.gz", labelmapNode=labelmap)


# -- known tumor locations -----------------------------------------------------------------------


def _tableRow(tableNode, row: int) -> dict[str, str]:
    return {tableNode.GetColumnName(c): tableNode.GetCellText(row, c) for c in range(tableNode.GetNumberOfColumns())}


def test_local_peaks_are_the_two_blob_centres():
    peaks = {tuple(p) for p in localPeaks(_heatmapArray(), 0.35)}
    assert peaks == {PEAK_IJK, SECOND_PEAK_IJK}


def test_known_tumor_table_distances_for_points_at_known_positions(mrmlScene, ctNode, result):
    points = mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    points.AddControlPoint(*_ctToRas(PEAK_IJK), "on peak")
    outsideIjk = (PEAK_IJK[0], PEAK_IJK[1], 10)  # 5 slices (12.5 mm) above the peak, outside the map
    points.AddControlPoint(*_ctToRas(outsideIjk), "above")
    table = scene.knownTumorTableNode(ctNode)
    comparison = KnownTumorComparison(points, result.heatmapNode, table, threshold=0.35, toleranceMm=10.0)

    heatmap = _heatmapArray()
    candidates = np.argwhere(heatmap >= 0.35)[:, ::-1]
    expectedToCandidate = min(np.linalg.norm(_ctToRas(c) - _ctToRas(outsideIjk)) for c in candidates)
    onPeak, above = _tableRow(table, 0), _tableRow(table, 1)
    assert onPeak["Point"] == "on peak"
    assert float(onPeak["Heatmap value"]) == pytest.approx(1.0)
    assert float(onPeak["Distance to candidate"]) == 0.0
    assert float(onPeak["Distance to peak"]) == pytest.approx(0.0, abs=1e-4)
    assert onPeak["Hit (<= 10 mm)"] == "hit"
    assert float(above["Heatmap value"]) == 0.0
    assert float(above["Distance to candidate"]) == pytest.approx(expectedToCandidate, abs=1e-3)
    expectedToPeak = min(np.linalg.norm(_ctToRas(p) - _ctToRas(outsideIjk)) for p in (PEAK_IJK, SECOND_PEAK_IJK))
    assert expectedToPeak < 12.5  # the second blob is nearer than the main peak straight below (5 x 2.5 mm)
    assert float(above["Distance to peak"]) == pytest.approx(expectedToPeak, abs=1e-3)
    assert above["Hit (<= 10 mm)"] == ("hit" if expectedToCandidate <= 10 else "miss")
    comparison.cleanup()


def test_known_tumor_table_updates_when_points_are_moved_added_or_removed(mrmlScene, ctNode, result):
    points = mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    points.AddControlPoint(*_ctToRas((0, 0, 0)), "T1")
    table = scene.knownTumorTableNode(ctNode)
    comparison = KnownTumorComparison(points, result.heatmapNode, table, threshold=0.35, toleranceMm=5.0)
    assert _tableRow(table, 0)["Hit (<= 5 mm)"] == "miss"

    points.SetNthControlPointPosition(0, *_ctToRas(SECOND_PEAK_IJK))  # moved onto the second blob
    row = _tableRow(table, 0)
    assert row["Hit (<= 5 mm)"] == "hit" and float(row["Heatmap value"]) == pytest.approx(0.6, abs=1e-6)
    assert float(row["Distance to peak"]) == pytest.approx(0.0, abs=1e-4)

    points.AddControlPoint(*_ctToRas(PEAK_IJK), "T2")
    assert table.GetNumberOfRows() == 2 and _tableRow(table, 1)["Point"] == "T2"
    points.RemoveNthControlPoint(0)
    assert table.GetNumberOfRows() == 1 and _tableRow(table, 0)["Point"] == "T2"

    comparison.setThreshold(0.95)  # only the main peak's voxel is left: T2 still a hit
    assert _tableRow(table, 0)["Hit (<= 5 mm)"] == "hit"
    comparison.setTolerance(2.0)
    assert "Hit (<= 2 mm)" in _tableRow(table, 0)
    comparison.cleanup()
    points.AddControlPoint(0.0, 0.0, 0.0, "after cleanup")
    assert table.GetNumberOfRows() == 1  # no observers left


def test_known_tumor_table_is_reused_by_a_rerun(ctNode, result, outputDir):
    first = scene.knownTumorTableNode(ctNode)
    scene.importResults(ctNode, outputDir, threshold=0.35)
    assert scene.knownTumorTableNode(ctNode) is first


# -- background process --------------------------------------------------------------------------


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_child_json_progress_lines_are_parsed(tmp_path):
    child = _script(
        tmp_path,
        "child.py",
        """
        import json, sys
        print(json.dumps({"event": "stage", "stage": "detect", "message": "6 slices"}), flush=True)
        for done in (1, 2, 3):
            print(json.dumps({"event": "progress", "stage": "detect", "done": done, "total": 3,
                              "elapsed_s": done * 0.5, "eta_s": (3 - done) * 0.5}), flush=True)
        print("a warning on stderr", file=sys.stderr, flush=True)
        print("plain text on stdout", flush=True)
        print(json.dumps({"event": "done", "exit_code": 0}), flush=True)
    """,
    )
    process = BackgroundProcess([sys.executable, str(child)])
    process.start()
    events = process.wait(timeout=20)
    kinds = [e.kind for e in events]
    assert kinds.count("progress") == 3 and "stage" in kinds and "done" in kinds
    progress = [e for e in events if e.kind == "progress"]
    assert [e.fraction for e in progress] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert progress[0].etaSeconds == pytest.approx(1.0) and progress[-1].elapsedSeconds == pytest.approx(1.5)
    assert {"a warning on stderr", "plain text on stdout"} <= set(process.logTail)
    assert process.exitCode == ExitCode.SUCCESS


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, ExitCode.SUCCESS),
        (2, ExitCode.BAD_INPUT),
        (3, ExitCode.MISSING_DEPENDENCY),
        (130, ExitCode.CANCELLED),
        (1, ExitCode.FAILED),
        (77, ExitCode.FAILED),
    ],
)
def test_exit_codes_are_mapped(tmp_path, code, expected):
    child = _script(
        tmp_path,
        "exit.py",
        f"""
        import json, sys
        print(json.dumps({{"event": "error", "message": "weights not found: model.safetensors", "exit_code": {code}}}))
        sys.exit({code})
    """,
    )
    process = BackgroundProcess([sys.executable, str(child)])
    process.start()
    process.wait(timeout=20)
    assert process.exitCode == expected
    if code:
        assert process.lastError.message == "weights not found: model.safetensors"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def _launcherWithStubbornGrandchild(tmp_path, **options) -> tuple[BackgroundProcess, int]:
    """A launcher (like PythonSlicer) whose grandchild does the work and ignores Ctrl-C; started."""
    grandchild = _script(
        tmp_path,
        "grandchild.py",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(60)
    """,
    )
    launcher = _script(
        tmp_path,
        "launcher.py",
        f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, {str(grandchild)!r}])
        print(json.dumps({{"event": "info", "message": str(child.pid)}}), flush=True)
        child.wait()
    """,
    )
    process = BackgroundProcess([sys.executable, str(launcher)], **options)
    process.start()
    deadline = time.monotonic() + 20
    events = []
    while not any(e.kind == "info" for e in events):
        events += process.poll()
        assert time.monotonic() < deadline, "launcher did not report its child"
        time.sleep(0.05)
    grandchildPid = int(next(e.message for e in events if e.kind == "info"))
    assert _alive(grandchildPid)
    return process, grandchildPid


def test_cancel_kills_the_child_and_its_grandchild(tmp_path):
    process, grandchildPid = _launcherWithStubbornGrandchild(tmp_path)
    start = time.monotonic()
    process.cancel(graceSeconds=0.5)
    process.wait(timeout=15)
    assert time.monotonic() - start < 10
    assert not _alive(process.pid) and not _alive(grandchildPid)
    assert process.exitCode == ExitCode.CANCELLED


def test_windows_cancel_kills_the_tree_at_once_with_psutil(tmp_path):
    """Windows' path (no console, so no Ctrl-Break): the whole tree dies at once, without the grace wait."""
    pytest.importorskip("psutil")
    process, grandchildPid = _launcherWithStubbornGrandchild(tmp_path, platform="win32")
    start = time.monotonic()
    process.cancel(graceSeconds=30)
    process.wait(timeout=10)
    assert time.monotonic() - start < 5  # not the 30 s grace period
    assert not _alive(process.pid) and not _alive(grandchildPid)
    assert process.exitCode == ExitCode.CANCELLED


def test_cancel_lets_a_cooperative_child_exit_cleanly(tmp_path):
    marker = tmp_path / "rolled_back"
    child = _script(
        tmp_path,
        "child.py",
        f"""
        import json, time
        try:
            print(json.dumps({{"event": "stage", "stage": "detect", "message": ""}}), flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            open({str(marker)!r}, "w").close()
            raise SystemExit(130)
    """,
    )
    process = BackgroundProcess([sys.executable, str(child)])
    process.start()
    deadline = time.monotonic() + 20
    while not any(e.kind == "stage" for e in process.poll()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.cancel(graceSeconds=10)
    process.wait(timeout=15)
    assert marker.exists() and process.returnCode == 130 and process.exitCode == ExitCode.CANCELLED


def test_readable_errors_name_the_fix():
    oom = readableError(ExitCode.FAILED, "", ["RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"])
    assert "CPU" in oom and "batch" in oom.lower() and "Traceback" not in oom
    missing = readableError(ExitCode.MISSING_DEPENDENCY, "weights not found: /models/ddpm.safetensors")
    assert "weights not found" in missing and "Install" in missing
    bad = readableError(ExitCode.BAD_INPUT, "ct.nrrd: not a CT (HU range 0..255)")
    assert "rejected" in bad and "not a CT" in bad
    crash = readableError(ExitCode.FAILED, "", ["Traceback (most recent call last):", "ValueError: boom"], 1)
    assert "ValueError: boom" in crash and "exit code 1" in crash
    assert "cancelled" in readableError(ExitCode.CANCELLED).lower()


# -- a whole Detect run against a stand-in engine ------------------------------------------------

_FAKE_ENGINE = """
import argparse, csv, json, sys, time
from pathlib import Path
import numpy as np
import SimpleITK as sitk

parser = argparse.ArgumentParser()
parser.add_argument("command"); parser.add_argument("ct"); parser.add_argument("--out", required=True)
parser.add_argument("--pancreas-mask"); parser.add_argument("--totalseg-full", action="store_true")
for name in ("--scale", "--noise", "--steps", "--threshold", "--device", "--progress", "--batch-size",
             "--encoding-cache"):
    parser.add_argument(name)
args = parser.parse_args()
with open(Path(__file__).parents[1] / "calls.log", "a") as log:  # which commands ran, for the tests
    log.write(" ".join(sys.argv[1:]) + "\\n")
mode = Path(args.ct).parents[2].name  # the test picks the behaviour by naming the scratch root's parent
ct = sitk.ReadImage(args.ct)
print(json.dumps({"event": "stage", "stage": "read", "message": args.ct}), flush=True)
if args.command == "pancreas":  # stands in for TotalSegmentator: a box on the CT's grid
    mask = np.zeros(sitk.GetArrayFromImage(ct).shape, np.uint8)
    mask[3:9, 4:12, 5:15] = 1
    image = sitk.GetImageFromArray(mask); image.CopyInformation(ct)
    sitk.WriteImage(image, args.out)
    print(json.dumps({"event": "done", "exit_code": 0}), flush=True)
    sys.exit(0)
if mode == "missing":
    print(json.dumps({"event": "error", "message": "weights not found: ddpm.safetensors", "exit_code": 3}), flush=True)
    sys.exit(3)
if mode == "slow":
    try:
        print(json.dumps({"event": "progress", "stage": "detect", "done": 1, "total": 100, "elapsed_s": 1,
                          "eta_s": 99}), flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(130)
if args.encoding_cache:  # stands in for the engine's cache: one entry per noise level, hit or miss logged
    entry = Path(args.encoding_cache) / f"N{args.noise}.x_n"
    with open(Path(args.encoding_cache) / "runs.log", "a") as log:
        log.write(("hit" if entry.exists() else "miss") + "\\n")
    entry.write_text("")
mask = sitk.GetArrayFromImage(sitk.ReadImage(args.pancreas_mask))
heatmap = np.zeros(mask.shape, np.float32)
heatmap[mask > 0] = np.linspace(0, 1, int((mask > 0).sum()), dtype=np.float32)
out = Path(args.out); out.mkdir(parents=True)
image = sitk.GetImageFromArray(heatmap); image.CopyInformation(ct)
sitk.WriteImage(image, str(out / "heatmap.nii.gz"))
candidates = sitk.GetImageFromArray((heatmap >= float(args.threshold)).astype(np.uint8))
candidates.CopyInformation(ct)
sitk.WriteImage(candidates, str(out / "candidates.nii.gz"))
with open(out / "slices.csv", "w", newline="") as f:
    csv.writer(f).writerows([["slice_index", "tumor_probability", "map_max"], [5, 0.9, 1.0]])
k, j, i = (int(v) for v in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))
peaks = [{"rank": 1, "slice_index": k, "peak_voxel_ijk": [i, j, k], "tumor_probability": 0.9, "map_max": 1.0}]
(out / "summary.json").write_text(json.dumps({"overall_confidence": 0.9, "settings": vars(args), "model_id": "fake",
                                              "peaks": peaks}))
for done in (1, 2):
    print(json.dumps({"event": "progress", "stage": "detect", "done": done, "total": 2, "elapsed_s": 0.1,
                      "eta_s": 0.0}), flush=True)
print(json.dumps({"event": "done", "exit_code": 0}), flush=True)
"""


@pytest.fixture
def fakeEngineDir(tmp_path) -> Path:
    package = tmp_path / "engine" / "pancdiff"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(_FAKE_ENGINE)
    return package.parent


def _job(ctNode, engineDir: Path, temporaryRoot: Path, **settings) -> DetectionJob:
    labelmap = ctNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "pancreas")
    scene.setVolumeArray(labelmap, _pancreasArray(), scene.ijkToRas(ctNode))
    temporaryRoot.mkdir(parents=True, exist_ok=True)
    detectionSettings = contract.DetectionSettings(pancreasSource=contract.PancreasSource.LABELMAP, **settings)
    return DetectionJob(
        ctNode, detectionSettings, sys.executable, engineDir, labelmapNode=labelmap, temporaryRoot=temporaryRoot
    )


def test_detection_job_runs_the_engine_and_imports_its_results(ctNode, fakeEngineDir, tmp_path):
    job = _job(ctNode, fakeEngineDir, tmp_path / "ok" / "runs", threshold=0.5)
    job.start()
    assert job.state == JobState.RUNNING
    assert job.wait(timeout=60) == JobState.SUCCEEDED, job.errorMessage
    heatmap = scene.arrayFromVolume(job.result.heatmapNode)
    mask = _pancreasArray() > 0
    assert heatmap[~mask].max() == 0 and heatmap[mask].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(scene.ijkToRas(job.result.heatmapNode), scene.ijkToRas(ctNode))
    np.testing.assert_array_equal(_exportedCandidates(job.result, ctNode), (heatmap >= 0.5).astype(np.uint8))
    assert job.result.confidence == pytest.approx(0.9)
    assert job.result.settingsKey == job.settings.rerunKey()
    assert list((tmp_path / "ok" / "runs").iterdir()) == []  # scratch files removed


def test_cancelled_detection_leaves_the_scene_as_it_was(ctNode, fakeEngineDir, tmp_path):
    job = _job(ctNode, fakeEngineDir, tmp_path / "slow" / "runs")
    nodesBefore = _countNodes(ctNode.GetScene())
    job.start()
    deadline = time.monotonic() + 30
    while job.progress.fraction is None:
        job.poll()
        assert time.monotonic() < deadline, "no progress from the engine"
        time.sleep(0.05)
    assert "left" in job.progress.describe()
    job.cancel(graceSeconds=5)
    assert job.wait(timeout=30) == JobState.CANCELLED
    assert _countNodes(ctNode.GetScene()) == nodesBefore
    assert scene.findResult(ctNode) is None
    assert list((tmp_path / "slow" / "runs").iterdir()) == []


def test_failed_detection_reports_a_readable_message(ctNode, fakeEngineDir, tmp_path):
    job = _job(ctNode, fakeEngineDir, tmp_path / "missing" / "runs")
    job.start()
    assert job.wait(timeout=60) == JobState.FAILED
    assert job.exitCode == ExitCode.MISSING_DEPENDENCY
    assert "weights not found" in job.errorMessage and "Traceback" not in job.errorMessage
    assert scene.findResult(ctNode) is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_exit_of_python_counts_as_cancelled():
    assert ExitCode.fromReturnCode(-signal.SIGINT) == ExitCode.CANCELLED
    assert ExitCode.fromReturnCode(-signal.SIGKILL) == ExitCode.FAILED
    assert ExitCode.fromReturnCode(-signal.SIGKILL, cancelRequested=True) == ExitCode.CANCELLED


# -- the module's logic class, with stand-ins for Slicer's GUI-only packages ---------------------


@pytest.fixture
def moduleLogic(monkeypatch, mrmlScene, fakeEngineDir, tmp_path):
    """``PancDiffSlicerLogic`` imported from PancDiffSlicer.py with minimal stand-ins for ``qt``,
    ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule`` (the real
    ones need the Slicer application); MRML, the Lib and the child process are all real."""
    import enum
    import importlib
    import types

    def module(name, **attributes):
        stub = types.ModuleType(name)
        stub.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, stub)
        return stub

    def parameterNodeWrapper(cls):
        annotations = dict(cls.__annotations__)

        class Wrapper:
            def __init__(self, parameterNode):
                self.parameterNode = parameterNode
                for name in annotations:
                    setattr(self, name, getattr(cls, name, None))

            def __setattr__(self, name, value):  # the real wrapper validates types too
                if name != "parameterNode":
                    declared = annotations[name]
                    declared = getattr(declared, "__origin__", declared)
                    if isinstance(declared, type) and issubclass(declared, enum.Enum) and value is not None:
                        assert isinstance(value, declared), (name, value)
                object.__setattr__(self, name, value)

        return Wrapper

    class Base:
        def __init__(self, *args) -> None:
            pass

    class Logic(Base):
        def getParameterNode(self):
            return mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    module("qt", QTimer=object)
    module("slicer.i18n", tr=lambda text: text)
    module(
        "slicer.parameterNodeWrapper",
        parameterNodeWrapper=parameterNodeWrapper,
        WithinRange=lambda low, high: (low, high),
    )
    module(
        "slicer.ScriptedLoadableModule",
        ScriptedLoadableModule=type("Module", (Base,), {}),
        ScriptedLoadableModuleWidget=type("Widget", (Base,), {}),
        ScriptedLoadableModuleLogic=Logic,
        ScriptedLoadableModuleTest=type("Test", (Base,), {}),
    )
    temporaryRoot = tmp_path / "ok" / "runs"
    temporaryRoot.mkdir(parents=True)
    monkeypatch.setattr(
        slicer,
        "app",
        types.SimpleNamespace(temporaryPath=str(temporaryRoot), processEvents=lambda: None),
        raising=False,
    )
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "PancDiffSlicer", raising=False)
    moduleFile = importlib.import_module("PancDiffSlicer")
    monkeypatch.setattr(moduleFile.PancDiffSlicerLogic, "pythonExecutable", staticmethod(lambda: sys.executable))
    monkeypatch.setattr(moduleFile.PancDiffSlicerLogic, "engineDir", staticmethod(lambda: str(fakeEngineDir)))
    monkeypatch.setattr(moduleFile.PancDiffSlicerLogic, "childEnvironment", staticmethod(lambda: None))
    yield moduleFile.PancDiffSlicerLogic()
    sys.modules.pop("PancDiffSlicer", None)


def test_module_logic_detects_then_follows_settings_without_rerunning(moduleLogic, ctNode):
    logic = moduleLogic
    parameters = logic.getParameterNode()
    assert "Choose the CT" in logic.inputProblem(parameters)
    parameters.inputVolume = ctNode
    parameters.pancreasSource = contract.PancreasSource.LABELMAP
    assert "label map" in logic.inputProblem(parameters)
    labelmap = ctNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "pancreas")
    scene.setVolumeArray(labelmap, _pancreasArray(), scene.ijkToRas(ctNode))
    parameters.pancreasLabelmap = labelmap
    parameters.device = contract.Device.CPU
    assert logic.inputProblem(parameters) == ""
    assert logic.result(parameters) is None

    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state == JobState.SUCCEEDED, job.errorMessage
    result = logic.result(parameters)
    assert parameters.heatmapVolume is result.heatmapNode and parameters.sliceTable is result.sliceTableNode
    text = logic.confidenceText(result)
    assert text.startswith("Tumor probability: 90 % (uncalibrated)\nModel fake: no validation figures for this model")
    assert not logic.isStale(parameters)
    nodeCount = ctNode.GetScene().GetNumberOfNodes()

    voxels = scene.arrayFromVolume(result.heatmapNode).copy()
    parameters.thresholdPercent = 80.0
    parameters.heatmapOpacity = 0.25
    parameters.showCandidate3D = True
    logic.applyParameters(parameters)
    np.testing.assert_array_equal(scene.arrayFromVolume(result.heatmapNode), voxels)
    np.testing.assert_array_equal(_exportedCandidates(result, ctNode), (voxels >= 0.8).astype(np.uint8))
    display = result.heatmapNode.GetDisplayNode()
    assert display.GetLowerThreshold() == pytest.approx(scene.HEATMAP_VISIBLE_MINIMUM)  # not the threshold
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 1.0))
    parameters.heatmapWindowLowPercent, parameters.heatmapWindowHighPercent = 10.0, 70.0
    logic.applyParameters(parameters)
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.1, 0.7))
    np.testing.assert_array_equal(_exportedCandidates(result, ctNode), (voxels >= 0.8).astype(np.uint8))
    assert result.candidateNode.GetDisplayNode().GetVisibility3D()
    assert not logic.isStale(parameters)  # threshold and opacity never ask for a rerun

    points = ctNode.GetScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    peak, _value = scene.peakPosition(result.heatmapNode)
    points.AddControlPoint(*peak.tolist(), "T1")
    parameters.knownTumorPoints = points
    logic.applyParameters(parameters)
    table = parameters.knownTumorTable
    assert table.GetNumberOfRows() == 1 and table.GetCellText(0, table.GetColumnIndex("Hit (<= 10 mm)")) == "hit"
    np.testing.assert_allclose(logic.jumpToPeak(parameters), peak)

    parameters.guidanceScale = 3.0
    assert logic.isStale(parameters)
    nodeCount = ctNode.GetScene().GetNumberOfNodes()
    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state == JobState.SUCCEEDED, job.errorMessage
    assert ctNode.GetScene().GetNumberOfNodes() == nodeCount  # the rerun replaced its nodes
    assert not logic.isStale(parameters) and logic.result(parameters).heatmapNode is result.heatmapNode
    logic.cleanup()


def test_module_logic_reruns_with_another_scale_reuse_the_sessions_encoding_cache(moduleLogic, ctNode, fakeEngineDir):
    logic = moduleLogic
    parameters = logic.getParameterNode()
    parameters.inputVolume = ctNode
    parameters.pancreasSource = contract.PancreasSource.LABELMAP
    parameters.pancreasLabelmap = ctNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "pancreas")
    scene.setVolumeArray(parameters.pancreasLabelmap, _pancreasArray(), scene.ijkToRas(ctNode))
    for scale in (20.0, 3.0, 12.0):  # the S slider moves between Detect clicks
        parameters.guidanceScale = scale
        assert logic.runDetection(parameters, timeoutSeconds=60).state == JobState.SUCCEEDED
    detects = [line.split() for line in (fakeEngineDir / "calls.log").read_text().splitlines()]
    folders = {command[command.index("--encoding-cache") + 1] for command in detects}
    assert len(detects) == 3 and len(folders) == 1
    cacheDir = Path(folders.pop())
    assert cacheDir.parent == Path(slicer.app.temporaryPath)  # Slicer's temporary folder, not a run's scratch
    assert (cacheDir / "runs.log").read_text().split() == ["miss", "hit", "hit"]
    logic.cleanup()  # scene close, module reload, application exit
    assert not cacheDir.exists()


def test_module_logic_settings_map_sliders_to_the_engine(moduleLogic):
    parameters = moduleLogic.getParameterNode()
    parameters.guidanceScale, parameters.noiseLevel, parameters.thresholdPercent = 12.5, 449.6, 42.0
    parameters.quality = contract.Quality.PAPER_EXACT
    settings = moduleLogic.settingsFrom(parameters)
    assert (settings.guidanceScale, settings.noiseLevel, settings.steps, settings.threshold) == (12.5, 450, 450, 0.42)
    defaults = moduleLogic.settingsFrom(moduleLogic.getParameterNode())
    assert defaults == contract.DetectionSettings()  # the widget's defaults are the engine-side defaults


# -- the real engine (slow: runs untrained models on the CPU) ------------------------------------

SAMPLE_DIR = MODULE_DIR / "Resources" / "SampleData"


@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE_DIR / "pancreas.nii.gz").exists(), reason="sample CT not in Resources/SampleData")
def test_real_engine_outputs_import_voxel_for_voxel(mrmlScene, tmp_path):
    """The module's command line against the real ``pancdiff detect`` (random weights, 2 steps)."""
    import subprocess

    ctNode = scene.loadVolumeFile(mrmlScene, SAMPLE_DIR / "example_ct_sm.nii.gz", "Sample CT")
    labelmap = scene.loadVolumeFile(mrmlScene, SAMPLE_DIR / "pancreas.nii.gz", "pancreas", "vtkMRMLLabelMapVolumeNode")
    scene.writeVolumeFile(ctNode, tmp_path / "ct.nrrd")
    scene.writePancreasMask(ctNode, tmp_path / "pancreas.nii.gz", labelmapNode=labelmap)
    settings = contract.DetectionSettings(
        noiseLevel=100, threshold=0.35, device=contract.Device.CPU, pancreasSource=contract.PancreasSource.LABELMAP
    )
    command = contract.detectCommandLine(
        sys.executable, tmp_path / "ct.nrrd", tmp_path / "out", settings, tmp_path / "pancreas.nii.gz"
    )
    command[command.index("--steps") + 1] = "2"
    completed = subprocess.run(
        [*command, "--random-weights"], cwd=MODULE_DIR, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    events = [contract.parseEventLine(line) for line in completed.stdout.splitlines()]
    assert events[-1].kind == "done" and any(e.kind == "progress" for e in events)
    result = scene.importResults(ctNode, tmp_path / "out", threshold=0.35)
    engineCandidates = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / contract.CANDIDATES_FILE)))
    np.testing.assert_array_equal(_exportedCandidates(result, ctNode), engineCandidates)
    for row in contract.readSliceRows(tmp_path / "out" / contract.SLICES_FILE):
        if row.peakIjk is not None:
            np.testing.assert_allclose(scene.ijkToWorld(ctNode, row.peakIjk), row.peakRas, atol=1e-2)

"""What the radiologist sees (issue 10, item 5) against real MRML (``slicer-core``).

The pancreas as an editable segment that a rerun reuses, the engine's ranked candidates, the
comparison with a reference segmentation (figures computed by hand), CSV export, DICOM-ready
segments, the p(tumor) plot and what the confidence says about itself. The CT and result fixtures
and the stand-in engine are those of ``test_slicer_scene``.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("scipy")

from test_slicer_scene import (  # noqa: F401  fixtures: pytest finds them here and passes them by name
    MODULE_DIR,
    PEAK_IJK,
    SECOND_PEAK_IJK,
    _ctImage,
    _ctToRas,
    _exportedCandidates,
    _heatmapArray,
    _writeEngineOutputs,
    ctFile,
    ctNode,
    fakeEngineDir,
    moduleLogic,
    mrmlScene,
    outputDir,
    result,
)

sys.path.insert(0, str(MODULE_DIR))
from PancDiffSlicerLib import contract, dependencies, findings, scene
from PancDiffSlicerLib.markups import KnownTumorComparison


def _setSegmentArray(segmentationNode, segmentId: str, array: np.ndarray, referenceNode) -> None:
    """Replace a segment's voxels as Segment Editor does (a binary labelmap on the CT's grid)."""
    from vtk.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    nk, nj, ni = array.shape
    labelmap.SetExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    labelmap.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR
    numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(array.shape)[:] = array
    labelmap.SetImageToWorldMatrix(scene.vtkMatrixFromArray(scene.ijkToRas(referenceNode)))
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, segmentationNode, segmentId, logic.MODE_REPLACE)


def _terminology(segment) -> str:
    import vtk

    value = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


def _segmentArray(segmentationNode, segmentId: str, referenceNode) -> np.ndarray:
    return scene.segmentMaskArray(referenceNode, segmentationNode, segmentId)


# -- the pancreas segment: created once, reused, corrections honoured ------------------------------


def _calls(fakeEngineDir) -> list[str]:
    log = fakeEngineDir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_pancreas_segment_is_created_then_reused_and_a_corrected_mask_is_honoured(
    moduleLogic, ctNode, fakeEngineDir
):
    logic = moduleLogic
    parameters = logic.getParameterNode()
    parameters.inputVolume = ctNode
    parameters.pancreasSource = contract.PancreasSource.TOTALSEGMENTATOR_FAST
    parameters.device = contract.Device.AUTO
    parameters.thresholdPercent = 50.0
    assert dependencies.TOTALSEGMENTATOR_PACKAGE in logic.missingDependencies(parameters)

    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    calls = _calls(fakeEngineDir)
    assert [c.split()[0] for c in calls] == ["pancreas", "detect"]  # TotalSegmentator, then detection
    assert "--device" in calls[0] and "mps" not in calls[0].split()
    assert "--pancreas-mask" in calls[1]
    found = scene.findPancreasSegment(ctNode)
    assert found is not None
    segmentationNode, segmentId = found
    box = np.zeros(scene.arrayFromVolume(ctNode).shape, np.uint8)
    box[3:9, 4:12, 5:15] = 1
    np.testing.assert_array_equal(_segmentArray(segmentationNode, segmentId, ctNode), box)
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    assert "SCT^15776009^Pancreas" in _terminology(segment)
    heatmap = scene.arrayFromVolume(logic.result(parameters).heatmapNode)
    np.testing.assert_array_equal(heatmap > 0, box[...] & (heatmap > 0))  # the map lies in the mask
    assert dependencies.TOTALSEGMENTATOR_PACKAGE not in logic.missingDependencies(parameters)

    corrected = box.copy()
    corrected[:, :, 10:] = 0  # the radiologist trims the segment
    _setSegmentArray(segmentationNode, segmentId, corrected, ctNode)
    nodes = ctNode.GetScene().GetNumberOfNodes()
    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    calls = _calls(fakeEngineDir)
    assert [c.split()[0] for c in calls] == ["pancreas", "detect", "detect"]  # no second TotalSegmentator
    heatmap = scene.arrayFromVolume(logic.result(parameters).heatmapNode)
    assert not (heatmap[corrected == 0] > 0).any() and (heatmap[corrected > 0] > 0).sum() == corrected.sum() - 1
    np.testing.assert_array_equal(_segmentArray(segmentationNode, segmentId, ctNode), corrected)  # kept
    assert ctNode.GetScene().GetNumberOfNodes() == nodes
    logic.cleanup()


def _labelmapParameters(logic, ctNode):
    """Parameters for a Detect with a pancreas label map (a box) on the CT's grid; returns them and the box."""
    parameters = logic.getParameterNode()
    parameters.inputVolume = ctNode
    parameters.pancreasSource = contract.PancreasSource.LABELMAP
    labelmap = ctNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "pancreas")
    mask = np.zeros(scene.arrayFromVolume(ctNode).shape, np.uint8)
    mask[4:8, 5:10, 6:12] = 1
    scene.setVolumeArray(labelmap, mask, scene.ijkToRas(ctNode))
    parameters.pancreasLabelmap = labelmap
    return parameters, mask


def test_labelmap_source_shows_the_mask_as_a_pancreas_segment(moduleLogic, ctNode):
    logic = moduleLogic
    parameters, mask = _labelmapParameters(logic, ctNode)
    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    segmentationNode, segmentId = scene.findPancreasSegment(ctNode)
    np.testing.assert_array_equal(_segmentArray(segmentationNode, segmentId, ctNode), mask)
    logic.cleanup()


def test_totalsegmentator_never_gets_mps():
    for device in contract.Device:
        for source in (contract.PancreasSource.TOTALSEGMENTATOR_FAST, contract.PancreasSource.TOTALSEGMENTATOR_FULL):
            settings = contract.DetectionSettings(device=device, pancreasSource=source)
            command = contract.pancreasCommandLine("python", "ct.nrrd", "m.nii.gz", settings, platform="darwin")
            assert command[command.index("--device") + 1] in ("cpu", "cuda")
    settings = contract.DetectionSettings(device=contract.Device.GPU)
    command = contract.pancreasCommandLine("python", "ct.nrrd", "m.nii.gz", settings, platform="linux")
    assert command[command.index("--device") + 1] == "cuda"


def test_segments_carry_terminology_and_refer_to_the_ct_for_dicom_seg(ctNode, result):
    node = result.candidateNode
    role = node.GetReferenceImageGeometryReferenceRole()
    assert node.GetNodeReferenceID(role) == ctNode.GetID()
    segment = node.GetSegmentation().GetSegment(scene.CANDIDATE_SEGMENT_ID)
    tag = _terminology(segment)
    assert "SCT^108369006^Neoplasm" in tag and "SCT^15776009^Pancreas" in tag


# -- ranked candidates: the engine's order, not the map's argmax -----------------------------------


def _engineSummaryWithPeaks(outputDir, ctImage) -> None:
    """The engine ranks by tumor probability: here the weaker blob first, on purpose."""
    summary = json.loads((outputDir / contract.SUMMARY_FILE).read_text())
    summary["peaks"] = [
        {"rank": 1, "slice_index": SECOND_PEAK_IJK[2], "tumor_probability": 0.7, "map_max": 0.6,
         "peak_voxel_ijk": list(SECOND_PEAK_IJK),
         "peak_lps_mm": list(ctImage.TransformIndexToPhysicalPoint(SECOND_PEAK_IJK))},
        {"rank": 2, "slice_index": PEAK_IJK[2], "tumor_probability": 0.4, "map_max": 1.0,
         "peak_voxel_ijk": list(PEAK_IJK), "peak_lps_mm": list(ctImage.TransformIndexToPhysicalPoint(PEAK_IJK))},
    ]  # fmt: skip
    (outputDir / contract.SUMMARY_FILE).write_text(json.dumps(summary))


def test_ranked_candidates_follow_the_engines_peaks_with_value_size_slice_and_distance(ctNode, tmp_path):
    _writeEngineOutputs(tmp_path / "out", _ctImage(), _heatmapArray())
    _engineSummaryWithPeaks(tmp_path / "out", _ctImage())
    result = scene.importResults(ctNode, tmp_path / "out", threshold=0.5)
    points = ctNode.GetScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    points.AddControlPoint(*_ctToRas(PEAK_IJK).tolist(), "T1")

    candidates = findings.rankedCandidates(result, 0.5, points)
    assert [c.rank for c in candidates] == [1, 2]
    assert [c.sliceIndex for c in candidates] == [SECOND_PEAK_IJK[2], PEAK_IJK[2]]
    np.testing.assert_allclose(candidates[0].peakRas, _ctToRas(SECOND_PEAK_IJK), atol=1e-4)
    assert candidates[0].value == pytest.approx(0.6, abs=1e-4) and candidates[1].value == pytest.approx(1.0)
    # By hand: at 0.5 the weak blob is its centre voxel alone (largest extent: 1 voxel x 2.5 mm in k);
    # the strong one is the ball d^2 <= 4 voxels: 5 voxels along each axis, 5 x 2.5 mm in k.
    assert candidates[0].sizeMm == pytest.approx(2.5) and candidates[1].sizeMm == pytest.approx(12.5)
    assert candidates[1].distanceToPointMm == pytest.approx(0.0, abs=1e-4)
    expected = np.linalg.norm(_ctToRas(SECOND_PEAK_IJK) - _ctToRas(PEAK_IJK))
    assert candidates[0].distanceToPointMm == pytest.approx(expected, abs=1e-4)
    assert findings.rankedCandidates(result, 0.7, None)[0].sizeMm == 0.0  # under the threshold: no region

    table = findings.candidateTableNode(ctNode)
    findings.fillCandidateTable(table, candidates)
    assert table.GetNumberOfRows() == 2 and table.GetCellText(0, table.GetColumnIndex("Rank")) == "1"
    assert table.GetColumnUnitLabel("Size") == "mm"
    # A user hovering the column learns that a size is the candidate's, not the tumor's.
    assert "Not a tumor measurement" in table.GetColumnDescription("Size")

    # Jump to peak goes to the engine's first peak, not to the map's maximum.
    np.testing.assert_allclose(scene.jumpToPeak(result.heatmapNode, result), _ctToRas(SECOND_PEAK_IJK), atol=1e-4)
    navigator = findings.CandidateNavigator()
    navigator.setCandidates(candidates)
    assert navigator.next(ctNode.GetScene()).rank == 1
    assert navigator.next(ctNode.GetScene()).rank == 2
    assert navigator.next(ctNode.GetScene()).rank == 1  # wraps around
    assert navigator.previous(ctNode.GetScene()).rank == 2
    red = ctNode.GetScene().GetSingletonNode("Red", "vtkMRMLSliceNode")
    center = [red.GetSliceToRAS().GetElement(row, 3) for row in range(3)]
    np.testing.assert_allclose(center, _ctToRas(PEAK_IJK), atol=1e-3)  # the views are centred there


def test_slice_table_row_jumps_to_that_slices_peak(ctNode, result):
    table = result.sliceTableNode
    row = next(r for r in range(table.GetNumberOfRows()) if table.GetCellText(r, 0) == str(PEAK_IJK[2]))
    np.testing.assert_allclose(findings.jumpToSliceRow(result, row), _ctToRas(PEAK_IJK), atol=1e-3)
    assert findings.jumpToSliceRow(result, 999) is None


def test_probability_plot_shows_the_slice_tables_tumor_probability(ctNode, result):
    chart = scene.probabilityPlot(ctNode, result.sliceTableNode)
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is result.sliceTableNode
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("Slice", "Tumor probability")
    assert scene.probabilityPlot(ctNode, result.sliceTableNode) is chart  # made once


# -- comparison with a reference segmentation -------------------------------------------------------


def test_reference_comparison_figures_on_a_hand_computed_case():
    candidates = np.zeros((1, 6, 6), bool)
    candidates[0, 0:2, 0:2] = True  # region A: 4 voxels
    candidates[0, 4, 4] = True  # region B: 1 voxel, touches no lesion
    reference = np.zeros((1, 6, 6), bool)
    reference[0, 1:3, 1:3] = True  # lesion 1: 4 voxels, overlaps A in one voxel (1, 1)
    reference[0, 5, 0] = True  # lesion 2: missed
    comparison = findings.compareMasks(candidates, reference, voxelMl=0.5, threshold=0.4)
    assert [(r.voxels, r.overlapVoxels, r.hit) for r in comparison.lesions] == [(4, 1, True), (1, 0, False)]
    assert comparison.lesions[0].volumeMl == pytest.approx(2.0)
    assert comparison.dice == pytest.approx(2 * 1 / (5 + 5))
    assert (comparison.candidateRegions, comparison.falsePositiveRegions, comparison.lesionsHit) == (2, 1, 1)
    assert "1 of 2 reference lesion(s) hit" in comparison.describe()
    empty = findings.compareMasks(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool), 1.0, 0.5)
    assert math.isnan(empty.dice) and empty.lesions == []


def test_reference_segment_compared_with_the_candidates_on_the_ct(ctNode, result):
    reference = np.zeros(scene.arrayFromVolume(ctNode).shape, np.uint8)
    k, j, i = PEAK_IJK[2], PEAK_IJK[1], PEAK_IJK[0]
    reference[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 1  # a 27-voxel lesion on the strong blob
    reference[8, 1, 1] = 1  # a lesion the map misses
    labelmap = ctNode.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "reference")
    scene.setVolumeArray(labelmap, reference, scene.ijkToRas(ctNode))
    segmentation = ctNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", "Radiologist")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)

    comparison = findings.compareWithReference(result, 0.5, segmentation, segmentId)
    # By hand: candidates at 0.5 are the strong blob's ball d^2 <= 4 (33 voxels) and the weak blob's
    # centre (1): 34 voxels in 2 regions. The 27-voxel cube lies inside the ball.
    assert [(r.voxels, r.overlapVoxels, r.hit) for r in comparison.lesions] == [(27, 27, True), (1, 0, False)]
    assert comparison.dice == pytest.approx(2 * 27 / (34 + 28))
    assert (comparison.candidateRegions, comparison.falsePositiveRegions) == (2, 1)

    table = findings.referenceTableNode(ctNode)
    findings.fillReferenceTable(table, comparison)
    assert table.GetNumberOfRows() == 2 and table.GetCellText(1, table.GetColumnIndex("Result")) == "miss"
    assert float(table.GetAttribute("PancDiff.Dice")) == pytest.approx(comparison.dice)


# -- CSV export -------------------------------------------------------------------------------------


def test_known_tumor_table_exports_to_csv_with_units(ctNode, result, tmp_path):
    points = ctNode.GetScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    points.AddControlPoint(*_ctToRas(PEAK_IJK).tolist(), "T1")
    points.AddControlPoint(*(_ctToRas(PEAK_IJK) + [30.0, 0.0, 0.0]).tolist(), "T2")
    table = scene.knownTumorTableNode(ctNode)
    comparison = KnownTumorComparison(points, result.heatmapNode, table, threshold=0.35, toleranceMm=10.0)
    path = findings.exportTableCsv(table, tmp_path / "known.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["Point", "R [mm]"] and "Distance to peak [mm]" in rows[0]
    assert [r[0] for r in rows[1:]] == ["T1", "T2"]
    assert rows[1][-1] == "hit" and rows[2][-1] == "miss"
    for row in range(2):
        assert rows[row + 1] == [table.GetCellText(row, c) for c in range(table.GetNumberOfColumns())]
    with pytest.raises(ValueError, match=r"\.csv"):
        findings.exportTableCsv(table, tmp_path / "known.xlsx")
    comparison.cleanup()


# -- what the confidence says about itself ---------------------------------------------------------


def test_confidence_names_the_model_its_held_out_auroc_and_uncalibrated():
    bundled = contract.readModelCard(MODULE_DIR)
    assert bundled, "the bundled model card ships with the module"
    card = {k: v for k, v in bundled.items() if k != "confidence_calibration"}
    summary = contract.summaryFromDict(
        {"overall_confidence": 0.57, "model_id": card["model_id"], "model": {"untrained": False}}
    )
    text = contract.confidenceText(summary, card)
    auroc = card["validation"]["classifier"]["auroc"]
    assert text.startswith("Tumor probability: 57 % (uncalibrated)")
    assert card["model_id"] in text and f"slice AUROC {auroc:.2f}" in text and "held-out" in text
    real = card["validation"]["localization"]["real"]
    chance = 100 * real["trivial"]["peak_in_tumor_chance"]
    assert f"real MSD tumors Dice {real['pancdiff']['dice']:.2f}" in text and f"(chance {chance:.0f} %)" in text
    assert "simulated dark lesions Dice" in text
    ranged = json.loads(json.dumps(card))
    ranged["validation"]["localization"]["real"]["pancdiff"].update(dice_ci=[0.11, 0.42], n_cases=17)
    assert "(0.11-0.42 over 17 patients)" in contract.confidenceText(summary, ranged)
    other = contract.summaryFromDict({"overall_confidence": 0.57, "model_id": "my-own-model"})
    assert "no validation figures" in contract.confidenceText(other, card)
    assert "Heatmap" not in contract.confidenceText(other, card)  # another model's figures are not quoted
    untrained = contract.summaryFromDict({"overall_confidence": 0.5, "model": {"model_id": "x", "untrained": True}})
    assert "UNTRAINED" in contract.confidenceText(untrained, card)
    calibrated = dict(card, confidence_calibration={"a": 0.5, "b": 0.1, "test": {"ece_calibrated": 0.043}})
    text = contract.confidenceText(summary, calibrated)
    assert "uncalibrated" not in text and "held-out calibration error 0.04" in text


def test_module_load_says_clearly_when_slicer_is_too_old(moduleLogic):
    module = sys.modules["PancDiffSlicer"]
    assert module.slicerVersionProblem(5, 8) == "" and module.slicerVersionProblem(5, 10) == ""
    message = module.slicerVersionProblem(5, 6)
    assert "needs 3D Slicer 5.8 or newer" in message and "this is 5.6" in message


def test_module_logic_keeps_the_candidate_table_in_step_with_threshold_and_points(moduleLogic, ctNode):
    logic = moduleLogic
    parameters, mask = _labelmapParameters(logic, ctNode)
    parameters.thresholdPercent = 90.0
    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    table = parameters.candidateTable
    assert table is not None and table.GetNumberOfRows() == 1  # the stand-in engine reports one peak
    sizeAt90 = float(table.GetCellText(0, table.GetColumnIndex("Size")))
    parameters.thresholdPercent = 10.0
    logic.applyParameters(parameters)
    assert float(table.GetCellText(0, table.GetColumnIndex("Size"))) > sizeAt90  # a larger region
    assert table.GetCellText(0, table.GetColumnIndex("Distance to point")) == "nan"

    points = ctNode.GetScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Known tumors")
    parameters.knownTumorPoints = points
    logic.applyParameters(parameters)
    peak = np.array(logic.candidateNavigator.candidates[0].peakRas)
    points.AddControlPoint(*(peak + [0.0, 0.0, 7.5]).tolist(), "T1")  # observed: no applyParameters call
    assert float(table.GetCellText(0, table.GetColumnIndex("Distance to point"))) == pytest.approx(7.5, abs=1e-3)
    points.SetNthControlPointPosition(0, *(peak + [3.0, 4.0, 0.0]).tolist())
    assert float(table.GetCellText(0, table.GetColumnIndex("Distance to point"))) == pytest.approx(5.0, abs=1e-3)
    np.testing.assert_allclose(logic.nextCandidate(parameters).peakRas, peak)
    logic.cleanup()


@pytest.mark.slow
def test_real_engine_ranked_candidates_and_confidence_through_the_module_logic(moduleLogic, mrmlScene, monkeypatch):
    """The module's logic with the real engine and the bundled models on the sample CT (about a minute)."""
    module = sys.modules["PancDiffSlicer"]
    monkeypatch.setattr(module.PancDiffSlicerLogic, "engineDir", staticmethod(lambda: str(MODULE_DIR)))
    logic = moduleLogic
    sample = MODULE_DIR / "Resources" / "SampleData"
    ct = scene.loadVolumeFile(mrmlScene, sample / "example_ct_sm.nii.gz", "Sample CT")
    labelmap = scene.loadVolumeFile(mrmlScene, sample / "pancreas.nii.gz", "pancreas", "vtkMRMLLabelMapVolumeNode")
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.pancreasLabelmap = ct, labelmap
    parameters.pancreasSource, parameters.device = contract.PancreasSource.LABELMAP, contract.Device.CPU
    job = logic.runDetection(parameters, timeoutSeconds=600)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    result = logic.result(parameters)
    summary = scene.summaryOf(result)
    card = contract.readModelCard(MODULE_DIR)
    assert summary.modelId == card["model_id"] and not summary.untrained
    calibrated = "calibration error" if card.get("confidence_calibration") else "(uncalibrated)"
    assert card["model_id"] in logic.confidenceText(result) and calibrated in logic.confidenceText(result)
    table = parameters.candidateTable
    ranks = [int(table.GetCellText(r, table.GetColumnIndex("Rank"))) for r in range(table.GetNumberOfRows())]
    assert ranks == [p.rank for p in summary.peaks] and ranks
    slices = [int(table.GetCellText(r, table.GetColumnIndex("Slice"))) for r in range(table.GetNumberOfRows())]
    assert slices == [p.sliceIndex for p in summary.peaks]
    np.testing.assert_allclose(logic.jumpToPeak(parameters), scene.peakWorld(result.heatmapNode, summary.peaks[0]))
    segmentationNode, segmentId = scene.findPancreasSegment(ct)
    np.testing.assert_array_equal(
        _segmentArray(segmentationNode, segmentId, ct), (scene.arrayFromVolume(labelmap) > 0).astype(np.uint8)
    )
    logic.cleanup()


def test_module_logic_reports_reference_comparison_and_a_bad_reference_in_words(moduleLogic, ctNode):
    logic = moduleLogic
    parameters, mask = _labelmapParameters(logic, ctNode)
    job = logic.runDetection(parameters, timeoutSeconds=60)
    assert job.state.name == "SUCCEEDED", job.errorMessage
    assert logic.referenceText(parameters) == "No reference segment chosen."
    reference = ctNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", "Radiologist")
    reference.GetSegmentation().AddEmptySegment("lesion", "Lesion")
    _setSegmentArray(reference, "lesion", mask, ctNode)
    parameters.referenceSegmentation, parameters.referenceSegmentId = reference, "lesion"
    logic.applyParameters(parameters)
    assert "1 of 1 reference lesion(s) hit" in logic.referenceText(parameters)
    assert parameters.referenceTable.GetNumberOfRows() == 1
    parameters.referenceSegmentId = "gone"
    logic.applyParameters(parameters)
    assert logic.referenceText(parameters) == "Segment 'gone' is not in 'Radiologist': choose another segment."
    logic.cleanup()

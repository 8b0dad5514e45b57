"""What a radiologist reads off a result: the engine's ranked candidates, a comparison with a reference
segmentation, and tables exported as CSV.

- ``rankedCandidates``: the engine's peaks (``summary.json``, strongest first) with the heatmap value
  at each, the size of the candidate region around it at the current threshold, its slice, and the
  distance to the nearest known-tumor point.
- ``compareWithReference``: lesion-level hit / miss (a reference lesion is hit when a candidate voxel
  overlaps it), voxel Dice of candidates vs. reference, and candidate regions that touch no lesion
  (false positives). Regions are 26-connected.

Pure MRML + numpy (scipy for connected regions, installed with the engine): no GUI.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from . import scene as sceneLib

SIZE_DESCRIPTION = (
    "Largest extent of the candidate region around the peak at the threshold. Not a tumor measurement: on real"
    " tumors a candidate usually covers only the darkest core (the model card's known limits)"
)
"""A radiologist reads a size as the lesion's; the shipped bundle under-segments real tumors (recall about a
third on the tuning half, ``docs/model_known_limits.md``)."""


CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-neighbourhood


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask, structure=CONNECTIVITY)


# -- ranked candidates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One of the engine's ranked peaks, as the candidate list shows it."""

    rank: int
    sliceIndex: int | None
    peakRas: tuple[float, float, float]
    value: float
    sizeMm: float
    tumorProbability: float
    distanceToPointMm: float


class RegionSizes:
    """Largest extent in mm (voxel count x spacing, per axis) of the candidate region holding a voxel.

    The regions are labelled once, inside the bounding box of the candidates (cheap on a full CT).

    Args:
        mask: (K, J, I) bool candidates.
        spacing: (i, j, k) voxel size in mm.
    """

    def __init__(self, mask: np.ndarray, spacing) -> None:
        self.spacing = np.asarray(spacing, float)
        found = np.argwhere(mask)
        self.low = found.min(axis=0) if len(found) else np.zeros(3, int)
        high = found.max(axis=0) + 1 if len(found) else np.zeros(3, int)
        box = mask[self.low[0] : high[0], self.low[1] : high[1], self.low[2] : high[2]]
        self.labels, _ = _label(box) if box.size else (np.zeros((0, 0, 0), int), 0)

    def sizeMm(self, kji: tuple[int, int, int]) -> float:
        """0 when voxel (k, j, i) is not a candidate."""
        local = tuple(np.asarray(kji) - self.low)
        if any(v < 0 or v >= n for v, n in zip(local, self.labels.shape)) or self.labels[local] == 0:
            return 0.0
        voxels = np.argwhere(self.labels == self.labels[local])
        extent = voxels.max(axis=0) - voxels.min(axis=0) + 1  # (k, j, i) voxels
        return float(max(extent[2] * self.spacing[0], extent[1] * self.spacing[1], extent[0] * self.spacing[2]))


def _pointsWorld(pointsNode) -> np.ndarray:
    points = []
    if pointsNode is not None:
        position = [0.0, 0.0, 0.0]
        for index in range(pointsNode.GetNumberOfControlPoints()):
            if pointsNode.GetNthControlPointPositionStatus(index) == slicer.vtkMRMLMarkupsNode.PositionDefined:
                pointsNode.GetNthControlPointPositionWorld(index, position)
                points.append(list(position))
    return np.asarray(points, float).reshape(-1, 3)


def rankedCandidates(result: sceneLib.DetectionResult, threshold: float, pointsNode=None) -> list[Candidate]:
    """The engine's ranked peaks in its order, measured on the heatmap at ``threshold``."""
    heatmapNode = result.heatmapNode
    array = sceneLib.arrayFromVolume(heatmapNode)
    spacing = np.linalg.norm(sceneLib.ijkToRas(heatmapNode)[:3, :3], axis=0)
    sizes = RegionSizes(sceneLib.candidateMask(array, threshold), spacing)
    rasToIjk = np.linalg.inv(sceneLib.ijkToRas(heatmapNode))
    points = _pointsWorld(pointsNode)
    candidates = []
    for peak in sceneLib.summaryOf(result).peaks:
        world = sceneLib.peakWorld(heatmapNode, peak)
        if peak.peakIjk is not None:
            i, j, k = peak.peakIjk
        else:
            i, j, k = (int(v) for v in np.rint((rasToIjk @ np.array([*peak.peakRas, 1.0]))[:3]))
        inside = all(0 <= a < n for a, n in zip((k, j, i), array.shape))
        distance = float(np.sqrt(((points - world) ** 2).sum(axis=1)).min()) if len(points) else math.nan
        candidates.append(
            Candidate(
                rank=peak.rank,
                sliceIndex=peak.sliceIndex if peak.sliceIndex is not None else (k if inside else None),
                peakRas=tuple(float(v) for v in world),
                value=float(array[k, j, i]) if inside else math.nan,
                sizeMm=sizes.sizeMm((k, j, i)) if inside else 0.0,
                tumorProbability=peak.tumorProbability,
                distanceToPointMm=distance,
            )
        )
    return candidates


def fillCandidateTable(tableNode, candidates: list[Candidate]) -> None:
    sceneLib.setTableColumns(
        tableNode,
        [
            ("Rank", "int", [c.rank for c in candidates]),
            ("Value", "double", [c.value for c in candidates]),
            ("Size", "double", [c.sizeMm for c in candidates]),
            ("Slice", "int", [-1 if c.sliceIndex is None else c.sliceIndex for c in candidates]),
            ("p(tumor)", "double", [c.tumorProbability for c in candidates]),
            ("Distance to point", "double", [c.distanceToPointMm for c in candidates]),
            ("R", "double", [c.peakRas[0] for c in candidates]),
            ("A", "double", [c.peakRas[1] for c in candidates]),
            ("S", "double", [c.peakRas[2] for c in candidates]),
        ],
    )
    for name in ("Size", "Distance to point", "R", "A", "S"):
        tableNode.SetColumnUnitLabel(name, "mm")
    tableNode.SetColumnDescription("Value", "Heatmap value at the peak (0..1)")
    tableNode.SetColumnDescription("Size", SIZE_DESCRIPTION)
    tableNode.SetColumnDescription("Distance to point", "Distance to the nearest known-tumor point")


def candidateTableNode(ctNode):
    return sceneLib.resultTableNode(ctNode, sceneLib.CANDIDATE_TABLE_ROLE, "candidates")


class CandidateNavigator:
    """Next / Previous / click-to-jump through the ranked candidates; wraps around."""

    def __init__(self) -> None:
        self.candidates: list[Candidate] = []
        self.current = -1

    def setCandidates(self, candidates: list[Candidate]) -> None:
        if [c.rank for c in candidates] != [c.rank for c in self.candidates]:
            self.current = -1
        self.candidates = candidates

    def jump(self, scene, index: int) -> Candidate | None:
        if not self.candidates:
            return None
        self.current = index % len(self.candidates)
        candidate = self.candidates[self.current]
        sceneLib.jumpTo(scene, candidate.peakRas)
        return candidate

    def next(self, scene) -> Candidate | None:
        return self.jump(scene, self.current + 1)

    def previous(self, scene) -> Candidate | None:
        return self.jump(scene, self.current - 1 if self.current >= 0 else -1)


def jumpToSliceRow(result: sceneLib.DetectionResult, row: int) -> np.ndarray | None:
    """Center the views on the peak of one row of the slice table (None where that slice has no peak)."""
    table = result.sliceTableNode
    if not 0 <= row < table.GetNumberOfRows():
        return None
    ras = [float(table.GetCellText(row, table.GetColumnIndex(n)) or "nan") for n in ("Peak R", "Peak A", "Peak S")]
    if any(math.isnan(v) for v in ras):
        return None
    world = ras
    parent = result.heatmapNode.GetParentTransformNode()
    if parent is not None:
        import vtk

        toWorld = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(toWorld)
        world = list(toWorld.TransformPoint(ras))
    return sceneLib.jumpTo(result.heatmapNode.GetScene(), world)


# -- comparison with a reference segmentation ------------------------------------------------------


@dataclass(frozen=True)
class LesionRow:
    label: str
    voxels: int
    volumeMl: float
    overlapVoxels: int
    hit: bool


@dataclass(frozen=True)
class ReferenceComparison:
    """Candidates (heatmap >= threshold) against a reference segment on the heatmap's grid."""

    lesions: list[LesionRow]
    dice: float
    candidateRegions: int
    falsePositiveRegions: int
    threshold: float

    @property
    def lesionsHit(self) -> int:
        return sum(row.hit for row in self.lesions)

    def describe(self) -> str:
        return (
            f"{self.lesionsHit} of {len(self.lesions)} reference lesion(s) hit; Dice {self.dice:.3f}; "
            f"{self.falsePositiveRegions} of {self.candidateRegions} candidate region(s) touch no lesion "
            f"(threshold {100 * self.threshold:.0f} %)"
        )


def compareMasks(
    candidates: np.ndarray, reference: np.ndarray, voxelMl: float, threshold: float
) -> ReferenceComparison:
    """The figures for two (K, J, I) bool masks on the same grid."""
    lesionLabels, lesionCount = _label(reference)
    candidateLabels, candidateCount = _label(candidates)
    lesions = []
    for n in range(1, lesionCount + 1):
        lesion = lesionLabels == n
        overlap = int((lesion & candidates).sum())
        voxels = int(lesion.sum())
        lesions.append(LesionRow(f"Lesion {n}", voxels, voxels * voxelMl, overlap, overlap > 0))
    touching = set(np.unique(candidateLabels[reference & candidates]).tolist()) - {0}
    total = int(candidates.sum()) + int(reference.sum())
    dice = 2.0 * int((candidates & reference).sum()) / total if total else math.nan
    return ReferenceComparison(lesions, dice, candidateCount, candidateCount - len(touching), threshold)


def compareWithReference(
    result: sceneLib.DetectionResult, threshold: float, referenceNode, segmentId: str
) -> ReferenceComparison:
    """Compare the candidates with a reference segment (e.g. a radiologist's outline), resampled to the map."""
    heatmap = sceneLib.arrayFromVolume(result.heatmapNode)
    reference = sceneLib.segmentMaskArray(result.heatmapNode, referenceNode, segmentId) > 0
    voxelMl = float(np.prod(np.linalg.norm(sceneLib.ijkToRas(result.heatmapNode)[:3, :3], axis=0))) / 1000.0
    return compareMasks(sceneLib.candidateMask(heatmap, threshold), reference, voxelMl, threshold)


def fillReferenceTable(tableNode, comparison: ReferenceComparison) -> None:
    rows = comparison.lesions
    sceneLib.setTableColumns(
        tableNode,
        [
            ("Lesion", "string", [r.label for r in rows]),
            ("Volume", "double", [r.volumeMl for r in rows]),
            ("Voxels", "int", [r.voxels for r in rows]),
            ("Overlap voxels", "int", [r.overlapVoxels for r in rows]),
            ("Result", "string", ["hit" if r.hit else "miss" for r in rows]),
        ],
    )
    tableNode.SetColumnUnitLabel("Volume", "ml")
    tableNode.SetAttribute("PancDiff.Dice", repr(comparison.dice))
    tableNode.SetAttribute("PancDiff.FalsePositiveRegions", str(comparison.falsePositiveRegions))
    tableNode.SetAttribute("PancDiff.CandidateRegions", str(comparison.candidateRegions))


def referenceTableNode(ctNode):
    return sceneLib.resultTableNode(ctNode, sceneLib.REFERENCE_TABLE_ROLE, "vs reference")


# -- CSV -----------------------------------------------------------------------------------------


def exportTableCsv(tableNode, path: str | Path) -> Path:
    """Write a table node as CSV: a header of column names (with the unit, e.g. "Distance to peak [mm]")."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: export as a .csv file")
    table = tableNode.GetTable()
    header = []
    for column in range(table.GetNumberOfColumns()):
        name = table.GetColumnName(column)
        unit = tableNode.GetColumnUnitLabel(name)
        header.append(f"{name} [{unit}]" if unit else name)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in range(tableNode.GetNumberOfRows()):
            writer.writerow([tableNode.GetCellText(row, column) for column in range(table.GetNumberOfColumns())])
    return path

"""Compare the heatmap with tumor locations the user knows (a markups point list).

For each control point: the heatmap value there, the distance in mm to the nearest candidate voxel
(heatmap >= threshold) and to the nearest local peak of the map, and hit / miss at a stated
tolerance. ``KnownTumorComparison`` keeps a table node up to date while points are added, moved or
removed. Pure MRML + numpy: importable without the Slicer GUI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from . import scene as sceneLib


@dataclass(frozen=True)
class KnownTumorRow:
    label: str
    positionRas: tuple[float, float, float]
    heatmapValue: float
    distanceToCandidateMm: float
    distanceToPeakMm: float
    hit: bool


def localPeaks(heatmapArray: np.ndarray, minimumValue: float) -> np.ndarray:
    """(M, 3) voxel indices (i, j, k) of local maxima (26-neighbourhood, plateaus kept) >= ``minimumValue``.

    Only the bounding box of voxels >= ``minimumValue`` is searched, so this is cheap on a full CT.
    """
    above = np.argwhere(heatmapArray >= minimumValue)
    if above.size == 0:
        return np.zeros((0, 3), int)
    low = np.maximum(above.min(axis=0) - 1, 0)
    high = np.minimum(above.max(axis=0) + 2, heatmapArray.shape)
    box = heatmapArray[low[0] : high[0], low[1] : high[1], low[2] : high[2]].astype(np.float64)
    padded = np.pad(box, 1, constant_values=-np.inf)
    neighbourMax = np.full(box.shape, -np.inf)
    nk, nj, ni = box.shape
    for dk in (0, 1, 2):
        for dj in (0, 1, 2):
            for di in (0, 1, 2):
                if (dk, dj, di) != (1, 1, 1):
                    np.maximum(neighbourMax, padded[dk : dk + nk, dj : dj + nj, di : di + ni], out=neighbourMax)
    peaksKji = np.argwhere((box >= neighbourMax) & (box >= minimumValue)) + low
    return peaksKji[:, ::-1]


def _voxelsToRas(ijkToRas: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ ijkToRas[:3, :3].T + ijkToRas[:3, 3]


class HeatmapSampler:
    """Distances and values on one heatmap at one threshold (candidate voxels and peaks cached)."""

    def __init__(self, heatmapArray: np.ndarray, ijkToRas: np.ndarray, threshold: float) -> None:
        self.array = heatmapArray
        self.ijkToRas = np.asarray(ijkToRas, float)
        self.rasToIjk = np.linalg.inv(self.ijkToRas)
        self.threshold = threshold
        candidatesIjk = np.argwhere(sceneLib.candidateMask(heatmapArray, threshold))[:, ::-1]
        self.candidatesRas = _voxelsToRas(self.ijkToRas, candidatesIjk.astype(float))
        self.peaksRas = _voxelsToRas(self.ijkToRas, localPeaks(heatmapArray, threshold).astype(float))

    def voxelIndex(self, ras) -> tuple[int, int, int] | None:
        """Nearest voxel (i, j, k) to a RAS point, or None outside the volume."""
        ijk = np.rint((self.rasToIjk @ np.array([*ras, 1.0]))[:3]).astype(int)
        nk, nj, ni = self.array.shape
        if not (0 <= ijk[0] < ni and 0 <= ijk[1] < nj and 0 <= ijk[2] < nk):
            return None
        return int(ijk[0]), int(ijk[1]), int(ijk[2])

    def value(self, ras) -> float:
        index = self.voxelIndex(ras)
        return math.nan if index is None else float(self.array[index[2], index[1], index[0]])

    def distanceToCandidate(self, ras) -> float:
        """0 inside a candidate voxel, else the distance to the nearest candidate voxel centre."""
        if not math.isnan(value := self.value(ras)) and value >= self.threshold:
            return 0.0
        return self._nearest(self.candidatesRas, ras)

    def distanceToPeak(self, ras) -> float:
        return self._nearest(self.peaksRas, ras)

    @staticmethod
    def _nearest(pointsRas: np.ndarray, ras) -> float:
        if len(pointsRas) == 0:
            return math.nan
        return float(np.sqrt(((pointsRas - np.asarray(ras, float)) ** 2).sum(axis=1).min()))

    def compare(self, label: str, ras, toleranceMm: float) -> KnownTumorRow:
        distance = self.distanceToCandidate(ras)
        return KnownTumorRow(
            label=label,
            positionRas=tuple(float(c) for c in ras),
            heatmapValue=self.value(ras),
            distanceToCandidateMm=distance,
            distanceToPeakMm=self.distanceToPeak(ras),
            hit=not math.isnan(distance) and distance <= toleranceMm,
        )


def hitColumnName(toleranceMm: float) -> str:
    return f"Hit (<= {toleranceMm:g} mm)"


def fillKnownTumorTable(tableNode, rows: list[KnownTumorRow], toleranceMm: float) -> None:
    columns = [
        ("Point", "string", [row.label for row in rows]),
        ("R", "double", [row.positionRas[0] for row in rows]),
        ("A", "double", [row.positionRas[1] for row in rows]),
        ("S", "double", [row.positionRas[2] for row in rows]),
        ("Heatmap value", "double", [row.heatmapValue for row in rows]),
        ("Distance to candidate", "double", [row.distanceToCandidateMm for row in rows]),
        ("Distance to peak", "double", [row.distanceToPeakMm for row in rows]),
        (hitColumnName(toleranceMm), "string", ["hit" if row.hit else "miss" for row in rows]),
    ]
    sceneLib.setTableColumns(tableNode, columns)
    for name in ("R", "A", "S", "Distance to candidate", "Distance to peak"):
        tableNode.SetColumnUnitLabel(name, "mm")


class KnownTumorComparison:
    """Keeps ``tableNode`` equal to the comparison of ``pointsNode`` with the heatmap.

    Observes the point list (points added, moved, removed) and the heatmap's voxels; call
    ``setThreshold`` / ``setTolerance`` when those settings change, ``cleanup`` when done.
    """

    POINT_EVENTS = (
        slicer.vtkMRMLMarkupsNode.PointAddedEvent,
        slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
        slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
        slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
        slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent,
        slicer.vtkMRMLTransformableNode.TransformModifiedEvent,
    )

    def __init__(self, pointsNode, heatmapNode, tableNode, threshold: float, toleranceMm: float = 10.0) -> None:
        self.pointsNode = pointsNode
        self.heatmapNode = heatmapNode
        self.tableNode = tableNode
        self.threshold = threshold
        self.toleranceMm = toleranceMm
        self.rows: list[KnownTumorRow] = []
        self._sampler: HeatmapSampler | None = None
        self._observations = [
            (pointsNode, pointsNode.AddObserver(event, self._onPointsChanged)) for event in self.POINT_EVENTS
        ]
        self._observations.append(
            (heatmapNode, heatmapNode.AddObserver(slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, self._onMapChanged))
        )
        self.update()

    def cleanup(self) -> None:
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []

    def setThreshold(self, threshold: float) -> None:
        if threshold != self.threshold:
            self.threshold = threshold
            self._sampler = None
            self.update()

    def setTolerance(self, toleranceMm: float) -> None:
        if toleranceMm != self.toleranceMm:
            self.toleranceMm = toleranceMm
            self.update()

    def _onPointsChanged(self, caller, event) -> None:
        self.update()

    def _onMapChanged(self, caller, event) -> None:
        self._sampler = None
        self.update()

    def sampler(self) -> HeatmapSampler:
        """The heatmap in the points' frame: world RAS is mapped into the heatmap's RAS first."""
        if self._sampler is None:
            self._sampler = HeatmapSampler(
                sceneLib.arrayFromVolume(self.heatmapNode), sceneLib.ijkToRas(self.heatmapNode), self.threshold
            )
        return self._sampler

    def update(self) -> list[KnownTumorRow]:
        sampler = self.sampler()
        toHeatmap = vtk.vtkGeneralTransform()
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, self.heatmapNode.GetParentTransformNode(), toHeatmap)
        rows = []
        position = [0.0, 0.0, 0.0]
        for index in range(self.pointsNode.GetNumberOfControlPoints()):
            if self.pointsNode.GetNthControlPointPositionStatus(index) != slicer.vtkMRMLMarkupsNode.PositionDefined:
                continue  # being placed, or position cleared
            self.pointsNode.GetNthControlPointPositionWorld(index, position)
            ras = toHeatmap.TransformPoint(position)
            label = self.pointsNode.GetNthControlPointLabel(index) or f"Point {index + 1}"
            rows.append(sampler.compare(label, ras, self.toleranceMm))
        self.rows = rows
        fillKnownTumorTable(self.tableNode, rows, self.toleranceMm)
        return rows

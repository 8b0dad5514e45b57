"""Reference points (a radiologist's markups) against a detection: value, distance, hit or miss.

Pure functions: numpy arrays and image geometry in, numbers out, so the Slicer module can reuse
them on its own markups table. Everything physical is in **LPS millimetres**, the convention of
ITK, SimpleITK and DICOM (and of Slicer's markups *files*; Slicer's views show RAS, which differs
only in the sign of the first two axes).

Accepted marker files:

- Slicer markups JSON (``.mrk.json``): every defined control point of every markup; the
  ``coordinateSystem`` field ("LPS", Slicer's default when saving, or "RAS") is honoured.
- Slicer's older ``.fcsv``: the ``# CoordinateSystem = ...`` header line (0/RAS or 1/LPS) is honoured.
- A CSV with a header: ``x,y,z`` columns (or ``r,a,s`` meaning RAS, or ``l,p,s`` meaning LPS), an
  optional ``label`` column and an optional ``coordinate_system`` column (LPS or RAS per row).
  Rows that do not state their system use the ``default_system`` argument (LPS unless told).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_TOLERANCE_MM = 10.0
_LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])  # the same flip both ways


@dataclass(frozen=True)
class ImageGrid:
    """Where an image's voxels lie in space (ITK conventions).

    A voxel index ``(i, j, k)`` (column, row, slice; the array is indexed ``[k, j, i]``) sits at
    ``origin + direction @ (spacing * (i, j, k))`` in LPS mm. The direction may be oblique, which is
    why distances are measured in physical space and not with a per-axis spacing.

    Attributes:
        origin: (3,) LPS mm of voxel (0, 0, 0).
        spacing: (3,) mm along i, j, k.
        direction: (3, 3) unit column vectors of the i, j, k axes in LPS.
        size: (3,) voxels along i, j, k (the array shape reversed).
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    size: tuple[int, int, int]

    @classmethod
    def from_image(cls, image) -> ImageGrid:
        """From a ``SimpleITK.Image`` (duck-typed, so this module imports no SimpleITK)."""
        return cls(
            origin=tuple(float(v) for v in image.GetOrigin()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            direction=tuple(float(v) for v in image.GetDirection()),
            size=tuple(int(v) for v in image.GetSize()),
        )

    def _matrix(self) -> np.ndarray:
        """(3, 3) index -> LPS offset: direction with each column scaled by its spacing."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3) * np.asarray(self.spacing, dtype=float)

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """(P, 3) voxel indices (i, j, k), integer or continuous -> (P, 3) LPS mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self._matrix().T + np.asarray(self.origin, dtype=float)

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        """(P, 3) LPS mm -> (P, 3) continuous voxel indices (i, j, k)."""
        lps = np.atleast_2d(np.asarray(lps, dtype=float))
        return np.linalg.solve(self._matrix(), (lps - np.asarray(self.origin, dtype=float)).T).T

    def contains(self, ijk: np.ndarray) -> np.ndarray:
        """(P,) bool: the rounded index lies inside the image."""
        idx = np.rint(np.atleast_2d(ijk)).astype(np.int64)
        return np.all((idx >= 0) & (idx < np.asarray(self.size)), axis=1)


@dataclass(frozen=True)
class Marker:
    """One reference point. ``position_lps``: (3,) mm."""

    label: str
    position_lps: tuple[float, float, float]

    @property
    def position_ras(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.asarray(self.position_lps) * _LPS_FROM_RAS)


def to_lps(xyz, system: str) -> tuple[float, float, float]:
    """A point given in ``system`` ("LPS" or "RAS", any case) as LPS mm."""
    system = system.strip().upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"coordinate system must be LPS or RAS, got {system!r}")
    point = np.asarray(xyz, dtype=float)
    if system == "RAS":
        point = point * _LPS_FROM_RAS
    return tuple(float(v) for v in point)


def read_markers(path: str | Path, default_system: str = "LPS") -> list[Marker]:
    """Markers of a ``.mrk.json``, ``.fcsv`` or CSV file (see the module docstring).

    Args:
        path: the file.
        default_system: "LPS" or "RAS", for CSV rows that do not state their system.

    Raises:
        InputError: missing or unreadable file, no points, non-numeric coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: markers file not found")
    name = path.name.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read markers file ({exc})") from None
    if name.endswith(".json"):
        markers = _parse_markups_json(text, path)
    elif name.endswith(".fcsv"):
        markers = _parse_fcsv(text, path)
    else:
        markers = _parse_csv(text, path, default_system)
    if not markers:
        raise InputError(f"{path}: no defined points in the markers file")
    return markers


def _parse_markups_json(text: str, path: Path) -> list[Marker]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("markups"), list):
        raise InputError(f"{path}: not a Slicer markups file (no 'markups' list)")
    markers = []
    for markup in doc["markups"]:
        # Slicer writes LPS unless told otherwise; the schema's default is LPS too.
        system = str(markup.get("coordinateSystem", "LPS"))
        for n, point in enumerate(markup.get("controlPoints", []), start=1):
            if point.get("positionStatus", "defined") != "defined":
                continue  # placed-but-not-confirmed points carry stale positions
            position = point.get("position")
            if not (isinstance(position, list) and len(position) == 3):
                raise InputError(f"{path}: control point {n} has no 3D position")
            label = str(point.get("label") or point.get("id") or f"point-{len(markers) + 1}")
            markers.append(Marker(label, to_lps(_floats(position, path), system)))
    return markers


def _parse_fcsv(text: str, path: Path) -> list[Marker]:
    system = "RAS"  # the format's default before Slicer 4.11 wrote the header line
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line.lstrip("# ").partition("=")
            if key.strip().lower() == "coordinatesystem":
                value = value.strip().upper()
                system = {"0": "RAS", "1": "LPS"}.get(value, value)
        elif line.strip():
            rows.append(next(csv.reader([line])))
    markers = []
    for n, row in enumerate(rows, start=1):
        if len(row) < 4:
            raise InputError(f"{path}: line {n} of the points has fewer than 4 columns (id,x,y,z)")
        label = row[11] if len(row) > 11 and row[11] else row[0] or f"point-{n}"
        markers.append(Marker(label, to_lps(_floats(row[1:4], path), system)))
    return markers


def _parse_csv(text: str, path: Path, default_system: str) -> list[Marker]:
    reader = csv.DictReader(text.splitlines())
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    for names, implied in (("xyz", None), ("ras", "RAS"), ("lps", "LPS")):
        if all(c in columns for c in names):
            keys, system_of_columns = [columns[c] for c in names], implied
            break
    else:
        raise InputError(
            f"{path}: CSV needs a header with columns x,y,z (or r,a,s / l,p,s) and optionally label, coordinate_system"
        )
    system_key = columns.get("coordinate_system") or columns.get("coordinatesystem")
    label_key = columns.get("label") or columns.get("name")
    markers = []
    for n, row in enumerate(reader, start=1):
        system = system_of_columns or (row.get(system_key) if system_key else None) or default_system
        label = (row.get(label_key) if label_key else None) or f"point-{n}"
        markers.append(Marker(label, to_lps(_floats([row[k] for k in keys], path), system)))
    return markers


def _floats(values, path: Path) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{path}: non-numeric coordinate in {values!r}") from None
    if not np.all(np.isfinite(out)):
        raise InputError(f"{path}: non-finite coordinate in {values!r}")
    return out


def distances_to_mask(points_lps: np.ndarray, mask: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """Physical distance from each point to the nearest True voxel of ``mask``.

    Distances run to voxel *centers*, except that a point inside a True voxel (its rounded index is
    True) is at distance 0 — so a marker placed anywhere on a candidate counts as on it.

    Args:
        points_lps: (P, 3) LPS mm.
        mask: (z, y, x) bool on ``grid``.
        grid: the mask's geometry (any direction, oblique included).

    Returns:
        (P,) float mm; ``inf`` where the mask is empty.
    """
    from scipy.spatial import cKDTree

    points = np.atleast_2d(np.asarray(points_lps, dtype=float))
    kji = np.argwhere(mask)
    if len(kji) == 0:
        return np.full(len(points), np.inf)
    distance, _ = cKDTree(grid.index_to_lps(kji[:, ::-1])).query(points)
    idx = np.rint(grid.lps_to_index(points)).astype(np.int64)
    inside = grid.contains(idx)
    on_mask = np.zeros(len(points), dtype=bool)
    on_mask[inside] = mask[idx[inside, 2], idx[inside, 1], idx[inside, 0]]
    return np.where(on_mask, 0.0, distance)


def values_at(points_lps: np.ndarray, volume: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """(P,) value of the nearest voxel of a (z, y, x) volume; NaN for points outside the image."""
    idx = np.rint(grid.lps_to_index(points_lps)).astype(np.int64)
    out = np.full(len(idx), np.nan)
    inside = grid.contains(idx)
    out[inside] = volume[idx[inside, 2], idx[inside, 1], idx[inside, 0]]
    return out


def fraction_within(region: np.ndarray, target: np.ndarray, grid: ImageGrid, radius_mm: float) -> float | None:
    """Fraction of ``region``'s voxels within ``radius_mm`` of a ``target`` voxel (centers, physical mm).

    With ``region`` the pancreas and ``target`` the candidates, this is the chance level of a hit: the
    probability that a point placed at random in the pancreas lies within the tolerance of a candidate.
    The distance transform runs on the region's bounding box grown by the radius only (a target
    farther out cannot be within the radius); exact for oblique grids, whose axes are orthogonal.

    Returns:
        The fraction in [0, 1], or None for an empty region.
    """
    from scipy import ndimage

    region, target = np.asarray(region, dtype=bool), np.asarray(target, dtype=bool)
    n = int(np.count_nonzero(region))
    if n == 0:
        return None
    if not target.any():
        return 0.0
    spacing_zyx = tuple(reversed(grid.spacing))
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_zyx]
    box = tuple(
        slice(max(int(idx.min()) - p, 0), min(int(idx.max()) + p + 1, size))
        for idx, p, size in zip(np.nonzero(region), pad, region.shape)
    )
    if not target[box].any():
        return 0.0
    distance = ndimage.distance_transform_edt(~target[box], sampling=spacing_zyx)
    return float(np.count_nonzero(region[box] & (distance <= radius_mm + 1e-6))) / n


CHANCE_LEVEL_DEFINITION = (
    "fraction of the pancreas mask's voxels within the tolerance of a candidate voxel: the hit rate of a "
    "point placed at random in the pancreas. A hit means little when this is high"
)


def score_markers(
    markers: list[Marker],
    heatmap: np.ndarray,
    candidates: np.ndarray,
    grid: ImageGrid,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    pancreas: np.ndarray | None = None,
) -> dict:
    """Per marker: heatmap value, distance to the nearest candidate, hit (distance <= tolerance).

    Args:
        markers: the reference points.
        heatmap: (z, y, x) float normalized map on ``grid``.
        candidates: (z, y, x) bool on ``grid``.
        tolerance_mm: largest distance that still counts as a hit.
        pancreas: (z, y, x) bool pancreas mask; when given, the result holds the chance level of a hit
            (``fraction_within``) and each point says whether its hit beats it.

    Returns:
        JSON-ready dict: ``tolerance_mm``, ``points`` (one dict each), ``hits``, ``n``, ``hit_rate``,
        and with ``pancreas``: ``chance_level`` and its definition.
    """
    points = np.array([m.position_lps for m in markers], dtype=float).reshape(-1, 3)
    distance = distances_to_mask(points, candidates, grid)
    chance = None if pancreas is None else fraction_within(pancreas, candidates, grid, tolerance_mm)
    value = values_at(points, heatmap, grid)
    index = grid.lps_to_index(points)
    rows = []
    for n, marker in enumerate(markers):
        finite = bool(np.isfinite(distance[n]))
        rows.append(
            {
                "label": marker.label,
                "position_lps_mm": [round(v, 3) for v in marker.position_lps],
                "position_ras_mm": [round(v, 3) for v in marker.position_ras],
                "voxel_ijk": [round(float(v), 2) for v in index[n]],
                "inside_image": bool(grid.contains(index[n : n + 1])[0]),
                "heatmap_value": None if np.isnan(value[n]) else round(float(value[n]), 4),
                "distance_to_candidate_mm": round(float(distance[n]), 3) if finite else None,
                "hit": bool(finite and distance[n] <= tolerance_mm),
            }
        )
        if chance is not None:
            rows[-1]["result"] = _verdict(rows[-1]["hit"], chance)
    hits = sum(r["hit"] for r in rows)
    out = {
        "tolerance_mm": float(tolerance_mm),
        "distance_definition": "mm from the point to the nearest candidate voxel center (0 inside a candidate voxel)",
        "n": len(rows),
        "hits": hits,
        "hit_rate": hits / len(rows) if rows else None,
        "points": rows,
    }
    if pancreas is not None:
        out["chance_level"] = None if chance is None else round(chance, 4)
        out["chance_level_definition"] = CHANCE_LEVEL_DEFINITION
    return out


def _verdict(hit: bool, chance: float) -> str:
    """'hit', 'miss', or a hit that any point in the pancreas would likely get, said as such."""
    if not hit:
        return "miss"
    if chance >= 0.5:
        return f"hit, but {chance:.0%} of the pancreas is as close to a candidate (uninformative)"
    return f"hit ({chance:.0%} of the pancreas is as close to a candidate)"


__all__ = [
    "CHANCE_LEVEL_DEFINITION",
    "DEFAULT_TOLERANCE_MM",
    "ImageGrid",
    "Marker",
    "distances_to_mask",
    "fraction_within",
    "read_markers",
    "score_markers",
    "to_lps",
    "values_at",
]

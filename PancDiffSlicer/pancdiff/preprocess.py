"""CT + pancreas mask -> model canvases, and canvas maps -> a volume on the CT's voxel grid.

One function for training and inference (``extract_slices``), and its inverse (``paste_back``).

Orientation: the CT array is viewed in LPS order, the orientation ``sitk.DICOMOrient(image, "LPS")``
gives, but as a transposed / flipped numpy *view* instead of a resampled copy (no interpolation, no
extra memory; a test checks the two agree). In that view axis 0 runs inferior -> superior, and each
axial slice is rows anterior -> posterior, columns patient right -> left: the radiological display,
so every crop looks the same whatever order the scanner stored the voxels in. ``paste_back`` writes
through the same view into an array of the CT's original shape, so maps land on the voxels they
came from without an inverse to get wrong. For an oblique CT the slices are its own (tilted) planes.

Per axial slice with pancreas, the *support* (what the model may see) is the pancreas bounding box
dilated by ``margin_mm`` (or, with ``remove_surroundings``, the mask itself dilated by
``margin_mm``). A support wider than ``support_mm`` is tiled: evenly spaced canvases, each seeing the
support inside a ``support_mm`` box around its center.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .canvas import CanvasTransform, pancreas_zone, to_model_input, window_hu, zone_margin_px
from .config import PreprocessConfig
from .ctio import CTVolume
from .errors import InputError

# ITK orientation letter -> (LPS world axis, sign): "L" means the index axis points to patient left.
_LETTERS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


@dataclass(frozen=True)
class Reorientation:
    """How a CT's (z, y, x) array becomes an LPS-ordered view (S, P, L), without copying voxels.

    Attributes:
        axes: for each LPS array axis (S, P, L), the original array axis it comes from.
        flips: whether that axis is reversed after transposing.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def from_image(cls, image: sitk.Image) -> Reorientation:
        """The closest axis-aligned orientation, as ``sitk.DICOMOrient`` chooses it."""
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        world = [_LETTERS[c] for c in code] if len(code) == 3 and set(code) <= set(_LETTERS) else []
        if sorted(w for w, _ in world) != [0, 1, 2]:
            world = _closest_orientation(np.asarray(image.GetDirection()).reshape(3, 3))
        axes, flips = [0, 0, 0], [False, False, False]
        for itk_axis, (w, sign) in enumerate(world):
            lps_axis = 2 - w  # LPS numpy order is (S, P, L) = world axes (2, 1, 0)
            axes[lps_axis] = 2 - itk_axis  # numpy axis of ITK index axis i is 2 - i
            flips[lps_axis] = sign < 0
        return cls(tuple(axes), tuple(flips))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """(z, y, x) array -> (S, P, L) view; writing into the view writes into ``array``."""
        view = np.transpose(array, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                view = np.flip(view, axis)
        return view

    def spacing(self, image: sitk.Image) -> tuple[float, float, float]:
        """Voxel size in mm along the LPS view's axes."""
        zyx = tuple(reversed(image.GetSpacing()))
        return tuple(float(zyx[a]) for a in self.axes)

    def original_slice_index(self, lps_index: int, shape: tuple[int, ...]) -> int:
        """Index along the CT array's axial axis (``axes[0]``) of LPS slice ``lps_index``."""
        n = shape[self.axes[0]]
        return n - 1 - lps_index if self.flips[0] else lps_index


def _closest_orientation(direction: np.ndarray) -> list[tuple[int, int]]:
    """Fallback for near-45-degree directions: the axis permutation with the largest cosines."""
    best = max(
        ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)),
        key=lambda perm: sum(abs(direction[perm[i], i]) for i in range(3)),
    )
    return [(best[i], 1 if direction[best[i], i] >= 0 else -1) for i in range(3)]


@dataclass(frozen=True, eq=False)
class TileSupport:
    """Where one canvas may see its slice: a bool crop of the LPS slice at (row0, col0)."""

    row0: int
    col0: int
    mask: np.ndarray

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.row0, self.row0 + h), slice(self.col0, self.col0 + w)


@dataclass(eq=False)
class SliceBatch:
    """Model inputs from one CT, with what is needed to paste maps back.

    Attributes:
        canvases: (B, S, S) float32 in [0, 1], HU windowed; ``fill`` outside ``valid``.
        valid: (B, S, S) bool, the support on the canvas.
        slice_index: (B,) int, index along the CT array's axial axis (axis 0 for axial scans).
        transforms: per canvas, the map between LPS-slice pixels (row, col) and canvas pixels.
        supports: per canvas, its support in the LPS slice.
        lps_index: (B,) int, the slice's index in the LPS view (inferior -> superior).
        reorientation: the CT array -> LPS view.
        shape: the CT array's shape (z, y, x).
        spacing_mm: (row, col) pixel size of the LPS slices.
    """

    canvases: np.ndarray
    valid: np.ndarray
    slice_index: np.ndarray
    transforms: list[CanvasTransform]
    supports: list[TileSupport]
    lps_index: np.ndarray
    reorientation: Reorientation
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float]

    def __len__(self) -> int:
        return len(self.transforms)


def extract_slices(ct: CTVolume, mask: np.ndarray, cfg: PreprocessConfig) -> SliceBatch:
    """One or more canvases per axial slice holding pancreas.

    Args:
        ct: the CT (its ``array`` in HU, its ``image`` for geometry).
        mask: (z, y, x) bool pancreas on the CT grid.
        cfg: canvas size, pixel spacing, HU window, support, tiling. A tile's side is
            ``support_mm``, capped one pixel inside the canvas so no support pixel falls off it.

    Returns:
        A ``SliceBatch`` ordered inferior -> superior, tiles row-major within a slice.

    Raises:
        InputError: the mask holds no pancreas.
    """
    if mask.shape != ct.array.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the CT's {ct.array.shape}")
    reo = Reorientation.from_image(ct.image)
    hu, pancreas = reo.apply(ct.array), reo.apply(np.asarray(mask, dtype=bool))
    spacing = reo.spacing(ct.image)[1:]
    side_mm = min(cfg.support_mm, (cfg.image_size - 2) * cfg.pixel_spacing_mm)
    canvases, valids, transforms, supports, lps_index = [], [], [], [], []
    for z in np.flatnonzero(pancreas.any(axis=(1, 2))):
        support = _slice_support(pancreas[z], spacing, cfg)
        for tile, center in _tiles(support, spacing, side_mm):
            rows, cols = _padded(tile, hu.shape[1:], pad=2)
            image = window_hu(hu[z, rows, cols], cfg.hu_window).astype(np.float32)
            crop_support = np.zeros(image.shape, dtype=bool)
            crop_support[
                tile.slices[0].start - rows.start : tile.slices[0].stop - rows.start,
                tile.slices[1].start - cols.start : tile.slices[1].stop - cols.start,
            ] = tile.mask
            transform = CanvasTransform(center, spacing, cfg.pixel_spacing_mm, cfg.image_size)
            local = dataclasses.replace(transform, center=(center[0] - rows.start, center[1] - cols.start))
            canvas, valid = to_model_input(image, crop_support, local, fill=cfg.fill)
            if not valid.any():
                continue
            canvases.append(canvas)
            valids.append(valid)
            transforms.append(transform)
            supports.append(tile)
            lps_index.append(int(z))
    if not transforms:
        raise InputError(f"{ct.path}: the pancreas mask is empty; nothing to analyse")
    lps = np.asarray(lps_index, dtype=np.int64)
    return SliceBatch(
        canvases=np.stack(canvases),
        valid=np.stack(valids),
        slice_index=np.asarray([reo.original_slice_index(z, ct.array.shape) for z in lps], dtype=np.int64),
        transforms=transforms,
        supports=supports,
        lps_index=lps,
        reorientation=reo,
        shape=tuple(ct.array.shape),
        spacing_mm=spacing,
    )


def paste_back(
    maps: np.ndarray,
    batch: SliceBatch,
    reduce: Literal["max", "mean"] = "max",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Canvas maps -> a (z, y, x) float32 volume on the CT's original voxel grid.

    Args:
        maps: (B, S, S) per-canvas maps (e.g. anomaly scores), aligned with ``batch``.
        batch: from ``extract_slices`` on that CT.
        reduce: how overlapping tiles combine ("max" or "mean").
        valid: (B, S, S) bool, the part of each canvas to use (e.g. ``postprocess.trusted_support``);
            a slice pixel takes a canvas's value only where at least half of its interpolation
            weight falls inside it, so a tile's untrusted edge leaves the pixel to an overlapping
            tile (or 0). None: the canvases' whole supports (``batch.valid``).

    Returns:
        (z, y, x) float32; 0 outside the analysed supports.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape != batch.canvases.shape:
        raise ValueError(f"maps shape {maps.shape} differs from the canvases' {batch.canvases.shape}")
    if valid is not None and np.shape(valid) != batch.canvases.shape:
        raise ValueError(f"valid shape {np.shape(valid)} differs from the canvases' {batch.canvases.shape}")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    out = np.zeros(batch.shape, dtype=np.float32)
    view = batch.reorientation.apply(out)
    slice_shape = view.shape[1:]
    for z in np.unique(batch.lps_index):
        acc = np.full(slice_shape, -np.inf if reduce == "max" else 0.0, dtype=np.float32)
        count = np.zeros(slice_shape, dtype=np.float32)
        for b in np.flatnonzero(batch.lps_index == z):
            tile, transform = batch.supports[b], batch.transforms[b]
            local = dataclasses.replace(
                transform, center=(transform.center[0] - tile.row0, transform.center[1] - tile.col0)
            )
            support = batch.valid[b] if valid is None else np.asarray(valid[b], dtype=bool)
            values, weight = _from_canvas_valid(local, maps[b], support, tile.mask.shape)
            cover = tile.mask if valid is None else tile.mask & (weight >= 0.5)
            region = acc[tile.slices]
            if reduce == "max":
                region[cover] = np.maximum(region[cover], values[cover])
            else:
                region[cover] += values[cover]
            count[tile.slices] += cover
        covered = count > 0
        result = acc / np.maximum(count, 1.0) if reduce == "mean" else acc
        view[z] = np.where(covered, result, 0.0)
    return out


def _from_canvas_valid(
    transform: CanvasTransform, values: np.ndarray, valid: np.ndarray, shape
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear canvas -> slice using valid canvas pixels only, so the fill outside never leaks in.

    Normalized interpolation: interpolate values * valid and valid, divide. Where no valid canvas
    pixel is near (a support sliver thinner than a canvas pixel) take the nearest canvas value.

    Returns:
        (values, weight): the slice map and the interpolated ``valid`` (how much of each slice
        pixel's interpolation fell inside it).
    """
    weight = transform.from_canvas(valid.astype(np.float32), shape, order=1)
    total = transform.from_canvas(np.where(valid, values, 0.0), shape, order=1)
    nearest = transform.from_canvas(values, shape, order=0)
    return np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), nearest).astype(np.float32), weight


def to_canvases(volume: np.ndarray, batch: SliceBatch, order: int = 0) -> np.ndarray:
    """Bring another volume on the CT grid (a tumor mask, a label map) onto the batch's canvases.

    Args:
        volume: (z, y, x) on the CT grid.
        order: 0 for labels, 1 for intensities.

    Returns:
        (B, S, S) float32, 0 outside each canvas's ``valid``.
    """
    if volume.shape != batch.shape:
        raise ValueError(f"volume shape {volume.shape} differs from the CT's {batch.shape}")
    view = batch.reorientation.apply(volume)
    out = np.zeros(batch.canvases.shape, dtype=np.float32)
    for b, (z, transform) in enumerate(zip(batch.lps_index, batch.transforms)):
        out[b] = transform.to_canvas(np.ascontiguousarray(view[z], dtype=np.float32), order=order, cval=0.0)
    out[~batch.valid] = 0.0
    return out


def pancreas_zones(mask: np.ndarray, batch: SliceBatch, cfg: PreprocessConfig) -> np.ndarray:
    """(B, S, S) bool: each canvas's pancreas dilated by ``margin_mm``, inside its support; the same
    zone training gives a zone-pooled classifier (``CropSampler.zone``)."""
    organ = to_canvases(np.asarray(mask, dtype=np.float32), batch, order=0) > 0.5
    margin = zone_margin_px(cfg)
    return np.stack([pancreas_zone(o, v, margin) for o, v in zip(organ, batch.valid)])


def _slice_support(pancreas: np.ndarray, spacing: tuple[float, float], cfg: PreprocessConfig) -> TileSupport:
    """The pancreas box (or mask) in one slice, dilated by ``margin_mm``, as a cropped bool array."""
    rows, cols = np.flatnonzero(pancreas.any(axis=1)), np.flatnonzero(pancreas.any(axis=0))
    margin = [math.floor(cfg.margin_mm / s + 1e-6) for s in spacing]
    r0, r1 = max(0, rows[0] - margin[0]), min(pancreas.shape[0], rows[-1] + margin[0] + 1)
    c0, c1 = max(0, cols[0] - margin[1]), min(pancreas.shape[1], cols[-1] + margin[1] + 1)
    if not cfg.remove_surroundings:
        return TileSupport(r0, c0, np.ones((r1 - r0, c1 - c0), dtype=bool))
    crop = np.asarray(pancreas[r0:r1, c0:c1])
    if cfg.margin_mm <= 0:
        return TileSupport(r0, c0, crop.copy())
    # Distance in mm from the nearest pancreas pixel; the crop holds every pixel within the margin.
    distance = ndimage.distance_transform_edt(~crop, sampling=spacing)
    return TileSupport(r0, c0, distance <= cfg.margin_mm + 1e-6)


def _tiles(support: TileSupport, spacing: tuple[float, float], side_mm: float):
    """Split a support wider than ``side_mm`` into evenly spaced boxes; yield (tile, center)."""
    h, w = support.mask.shape
    centers = [_centers(n, s, side_mm) for n, s in zip((h, w), spacing)]
    for cr in centers[0]:
        for cc in centers[1]:
            half = [side_mm / 2 / s for s in spacing]
            r_lo, r_hi = max(0, math.ceil(cr - half[0])), min(h, math.floor(cr + half[0]) + 1)
            c_lo, c_hi = max(0, math.ceil(cc - half[1])), min(w, math.floor(cc + half[1]) + 1)
            mask = np.zeros_like(support.mask)
            mask[r_lo:r_hi, c_lo:c_hi] = support.mask[r_lo:r_hi, c_lo:c_hi]
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if len(rows) == 0:
                continue
            tile = TileSupport(
                support.row0 + int(rows[0]),
                support.col0 + int(cols[0]),
                mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1],
            )
            yield tile, (support.row0 + float(cr), support.col0 + float(cc))


def _centers(n: int, spacing: float, side_mm: float) -> np.ndarray:
    """Tile centers (pixel coordinates within the support) along one axis of n pixels."""
    extent = n * spacing
    if extent <= side_mm:
        return np.array([(n - 1) / 2.0])
    count = math.ceil(extent / side_mm)
    half = side_mm / 2 / spacing
    return np.linspace(-0.5 + half, n - 0.5 - half, count)


def _padded(tile: TileSupport, shape: tuple[int, int], pad: int) -> tuple[slice, slice]:
    """The tile's box grown by ``pad`` pixels (for interpolation at its edge), clipped to the slice."""
    h, w = tile.mask.shape
    return (
        slice(max(0, tile.row0 - pad), min(shape[0], tile.row0 + h + pad)),
        slice(max(0, tile.col0 - pad), min(shape[1], tile.col0 + w + pad)),
    )


__all__ = ["Reorientation", "SliceBatch", "TileSupport", "extract_slices", "paste_back", "to_canvases"]

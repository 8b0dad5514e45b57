"""The one geometric step shared by training and inference: a 2D slice onto the model's canvas.

A slice (a CT axial slice, or a stored crop) with known pixel spacing is resampled to the model's
fixed pixel spacing, centered on a point, and everything outside a *support* (the pancreas box or
dilated mask) is set to a fill value. ``CanvasTransform`` also maps canvas maps back onto the slice
grid, so heatmaps land on the voxels they came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class CanvasTransform:
    """Affine map between slice pixels (row, col) and canvas pixels.

    Attributes:
        center: slice coordinates (row, col) that land on the canvas center.
        spacing: slice pixel spacing (row, col) in mm.
        canvas_spacing: canvas pixel spacing in mm (isotropic).
        size: canvas side in pixels.
    """

    center: tuple[float, float]
    spacing: tuple[float, float]
    canvas_spacing: float
    size: int

    def _scale(self) -> np.ndarray:
        return self.canvas_spacing / np.asarray(self.spacing, dtype=float)

    def _canvas_center(self) -> np.ndarray:
        return np.full(2, (self.size - 1) / 2.0)

    def to_canvas(self, image: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """(H, W) slice -> (size, size) canvas; slice pixel = center + (canvas - c) * scale."""
        scale = self._scale()
        offset = np.asarray(self.center, dtype=float) - self._canvas_center() * scale
        return ndimage.affine_transform(
            np.asarray(image, dtype=np.float32),
            scale,
            offset=offset,
            output_shape=(self.size, self.size),
            order=order,
            mode="constant",
            cval=cval,
        )

    def from_canvas(self, canvas: np.ndarray, shape: tuple[int, int], order: int = 1) -> np.ndarray:
        """(size, size) canvas map -> (H, W) slice map (0 where the canvas does not reach)."""
        inv = 1.0 / self._scale()
        offset = self._canvas_center() - np.asarray(self.center, dtype=float) * inv
        return ndimage.affine_transform(
            np.asarray(canvas, dtype=np.float32), inv, offset=offset, output_shape=shape, order=order, cval=0.0
        )


def window_hu(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """HU mapped linearly to [0, 1] over ``hu_window`` and clipped (the models' intensity scale)."""
    lo, hi = hu_window
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0)


def to_model_input(
    image: np.ndarray, support: np.ndarray, transform: CanvasTransform, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a [0, 1] slice and its support to the canvas; outside the support becomes ``fill``.

    Returns:
        (canvas, valid): (size, size) float32 in [0, 1] and its bool support.
    """
    canvas = np.clip(transform.to_canvas(image, order=1, cval=fill), 0.0, 1.0)
    valid = transform.to_canvas(support.astype(np.float32), order=0, cval=0.0) > 0.5
    canvas[~valid] = fill
    return canvas.astype(np.float32), valid


def zone_margin_px(cfg, margin_mm: float | None = None) -> int:
    """How far around the organ a tumor may reach, in canvas pixels: ``margin_mm`` or, by default,
    ``PreprocessConfig.margin_mm`` (the zone a zone-pooled classifier was trained on)."""
    return int(round((cfg.margin_mm if margin_mm is None else margin_mm) / cfg.pixel_spacing_mm))


def pancreas_zone(organ: np.ndarray | None, valid: np.ndarray, margin_px: int) -> np.ndarray:
    """(S, S) bool: the organ dilated by ``margin_px`` inside the support, or the support itself
    (where a tumor can be: what maps are scored in and what a zone-pooled classifier looks at)."""
    if organ is None or not organ.any():
        return valid.copy()
    return ndimage.binary_dilation(organ, iterations=max(0, margin_px)) & valid if margin_px else organ & valid

"""Canvas anomaly maps -> the heatmap users threshold: only where the model saw the tissue in context,
only where there is evidence, only where a tumor can be.

The networks see each canvas exactly as in training (``canvas.to_model_input``); nothing here changes
their input. What changes is which of their output pixels may speak:

- ``trusted_support``: the canvas support minus a band of ``edge_mm`` along its edge. At a crop
  border, a tile seam, the fill outside the support, or air (clipped to the bottom of the HU window,
  the same value as the fill), the model reconstructs a step it cannot know the far side of, and
  ``|x - x_hat|`` lights up there whatever the tissue. Measured with the first bundled models on the
  sample CT: the mean anomaly of the outermost support pixel is 2.2x the interior's, of the second
  1.4x, from the third on it is at the interior's level.
- ``evidence_maps``: the normalized map (per slice or calibrated, ``detection.normalize_maps``) on the
  trusted support only, so a border can no longer set a slice's maximum, and 0 where the smoothed
  anomaly is below ``min_anomaly``: per-slice normalization turns even pure noise into a 1.0, so a
  candidate needs the model to have changed the slice by a minimum amount too.
- ``peak_evidence``: what a slice's peak is the maximum of: the smoothed anomaly itself, unclipped,
  where the evidence map is not 0. The calibrated map is clipped at 1.0, and at the first shipped
  operating point 41 % of real and 56 % of simulated tuning slices had several zone pixels at 1.0, so
  its argmax was the first saturated pixel in raster order (peak in tumor 0.72 / 0.66 against 0.81 /
  0.76 unclipped; ``model_runs/20261126-map-postprocessing``).
- ``near_mask``: voxels within ``pancreas_margin_mm`` of the pancreas mask; the heatmap is 0 elsewhere.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .config import DetectConfig
from .detection import normalize_maps, smooth_maps

AIR_LEVEL = 0.01
"""Canvas values at or below this (the bottom 1 % of the HU window: air, lung) look like the fill."""


def trusted_support(canvases: np.ndarray, valid: np.ndarray, edge_px: float) -> np.ndarray:
    """Where a canvas's map may be used.

    Args:
        canvases: (B, S, S) model inputs in [0, 1].
        valid: (B, S, S) bool canvas supports.
        edge_px: width of the band dropped along the support's edge (the canvas border, the fill and
            air count as outside), in canvas pixels.

    Returns:
        (B, S, S) bool: valid, not air, and more than ``edge_px`` pixels from any such pixel.
    """
    informative = np.asarray(valid, dtype=bool) & (np.asarray(canvases) > AIR_LEVEL)
    if edge_px <= 0:
        return informative
    out = np.zeros_like(informative)
    for b, support in enumerate(informative):
        if support.any():
            # Distance to the nearest outside pixel; the padding makes the canvas border an outside.
            distance = ndimage.distance_transform_edt(np.pad(support, 1))[1:-1, 1:-1]
            out[b] = distance > edge_px
    return out


def evidence_maps(anomaly: np.ndarray, trusted: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """(B, S, S) maps in [0, 1] from raw anomalies, using only the trusted support.

    Args:
        anomaly: (B, S, S) raw ``|x - x_hat|`` (``DetectionResult.anomaly``).
        trusted: (B, S, S) bool from ``trusted_support``.
        cfg: normalization, smoothing and ``min_anomaly``.

    Returns:
        The normalized maps, 0 outside ``trusted`` and where the smoothed anomaly < ``cfg.min_anomaly``.
    """
    raw = np.where(trusted, anomaly, 0.0).astype(np.float32)
    maps = normalize_maps(raw, trusted, cfg)
    if cfg.min_anomaly > 0:
        maps = np.where(smooth_maps(raw, cfg.smooth_sigma_px) >= cfg.min_anomaly, maps, 0.0)
    return maps.astype(np.float32)


def peak_evidence(anomaly: np.ndarray, trusted: np.ndarray, maps: np.ndarray, cfg: DetectConfig) -> np.ndarray:
    """(B, S, S) scores whose per-slice argmax is the peak: the anomaly on the trusted support,
    smoothed at ``cfg.peak_sigma``, not normalized or clipped, 0 where ``maps`` (``evidence_maps``) is 0.

    Args:
        anomaly: (B, S, S) raw ``|x - x_hat|``.
        trusted: (B, S, S) bool from ``trusted_support`` (or the scoring zone).
        maps: (B, S, S) the evidence maps of the same slices; a peak never lies where they show nothing.
        cfg: ``peak_sigma``.
    """
    raw = np.where(trusted, anomaly, 0.0).astype(np.float32)
    return np.where(np.asarray(maps) > 0, smooth_maps(raw, cfg.peak_sigma), 0.0).astype(np.float32)


def near_mask(mask: np.ndarray, spacing_zyx: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """(z, y, x) bool: voxels within ``margin_mm`` of ``mask`` (physical distance, voxel centers).

    The distance transform runs on the mask's bounding box grown by the margin only, so a whole-body
    CT costs what its pancreas region costs. Exact for oblique grids too (their axes are orthogonal).
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    if margin_mm <= 0:
        out[mask] = True
        return out
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing_zyx]
    box = tuple(
        slice(max(int(idx.min()) - p, 0), min(int(idx.max()) + p + 1, n))
        for idx, p, n in zip(np.nonzero(mask), pad, mask.shape)
    )
    distance = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx)
    out[box] = distance <= margin_mm + 1e-6
    return out


__all__ = ["AIR_LEVEL", "evidence_maps", "near_mask", "peak_evidence", "trusted_support"]

"""Simulated pancreatic lesions: hypoattenuating, ill-defined blobs with known masks.

Real tumor masks are missing from our data, so inserted lesions in *healthy* slices are the honest
way to measure localization (and a same-site control for the classifier: only the lesion differs).
Intensities are in window units: 1.0 = the HU window width (400 HU by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LesionConfig:
    """Ranges sampled uniformly per lesion.

    Attributes:
        radius_mm: mean radius (ellipse semi-axes vary around it by ``elongation``).
        contrast_hu: how much darker than the surrounding tissue the lesion core is.
        edge_mm: Gaussian blur of the edge (ill-defined margin).
        elongation: max ratio between the ellipse semi-axes.
        tissue_window: HU range a lesion center must lie in (soft tissue, not fat or vessel).
        hu_window: the HU window of the slices (to turn HU into [0, 1] units).
    """

    radius_mm: tuple[float, float] = (4.0, 9.0)
    contrast_hu: tuple[float, float] = (30.0, 70.0)
    edge_mm: tuple[float, float] = (1.0, 2.5)
    elongation: float = 1.6
    tissue_window: tuple[float, float] = (0.0, 150.0)
    hu_window: tuple[float, float] = (-150.0, 250.0)


def insert_lesion(
    image: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    spacing_mm: float = 1.0,
    cfg: LesionConfig = LesionConfig(),
) -> tuple[np.ndarray, np.ndarray] | None:
    """Darken an elliptical, blurred region centered on soft tissue inside ``valid``.

    Args:
        image: (H, W) float32 in [0, 1], the windowed slice.
        valid: (H, W) bool, where the slice has tissue (the support).
        spacing_mm: pixel size, to turn mm ranges into pixels.

    Returns:
        (image with lesion, bool mask where the lesion is at least half its contrast), or None when
        no soft-tissue pixel lies far enough inside the support.
    """
    lo, hi = cfg.hu_window
    width = hi - lo
    radius = rng.uniform(*cfg.radius_mm) / spacing_mm
    tissue = (image >= (cfg.tissue_window[0] - lo) / width) & (image <= (cfg.tissue_window[1] - lo) / width)
    inner = ndimage.binary_erosion(valid, iterations=max(1, int(round(radius * 0.7))))
    candidates = np.argwhere(tissue & inner)
    if len(candidates) == 0:
        return None
    cy, cx = candidates[rng.integers(len(candidates))]
    ratio = rng.uniform(1.0, cfg.elongation)
    ry, rx = radius * ratio**0.5, radius / ratio**0.5
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    hard = ((u / ry) ** 2 + (v / rx) ** 2 <= 1.0).astype(np.float32)
    profile = ndimage.gaussian_filter(hard, rng.uniform(*cfg.edge_mm) / spacing_mm)
    profile /= max(float(profile.max()), 1e-6)
    contrast = rng.uniform(*cfg.contrast_hu) / width
    out = np.where(valid, np.clip(image - contrast * profile, 0.0, 1.0), image).astype(np.float32)
    mask = (profile >= 0.5) & valid
    return out, mask

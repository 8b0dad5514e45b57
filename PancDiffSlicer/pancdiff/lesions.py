"""Simulated pancreatic lesions: hypoattenuating, irregular, ill-defined blobs with known masks.

They serve two jobs: (1) the classifier's counterfactual training pairs (the same crop with and
without a lesion, so only the lesion explains the label), and (2) localization scores where the
truth is known pixel by pixel. Lesions are centred inside the pancreas when an organ mask is given
(a lesion in liver or fat teaches nothing about pancreatic tumors), sized 5-30 mm like the
adenocarcinomas a radiologist looks for, and 20-60 HU darker than the parenchyma at realistic
contrast. Intensities are in window units; the HU window comes from ``PreprocessConfig``, its only
owner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LesionConfig:
    """Ranges sampled uniformly per lesion.

    Attributes:
        diameter_mm: effective diameter of the lesion core.
        contrast_hu: how much darker (or, see ``bright_fraction``, brighter) than the surrounding tissue
            the lesion core is.
        edge_mm: Gaussian blur of the edge (ill-defined margin).
        elongation: max ratio between the lesion's long and short axes.
        irregularity: amplitude of the low-order radial perturbation (0 = an ellipse).
        heterogeneity: relative depth variation inside the lesion (smooth noise).
        tissue_hu: HU range a lesion centre must lie in (parenchyma, not fat or bright vessel).
        organ_margin_mm: how far beyond the organ mask a lesion may reach (tumors bulge a little).
        bright_fraction: share of lesions *brighter* than their surroundings by ``contrast_hu``
            (hyperenhancing tumors: neuroendocrine tumors make up part of MSD's tumor label). At 0
            no extra random number is drawn, so seeded lesion draws stay what they were.
    """

    diameter_mm: tuple[float, float] = (5.0, 30.0)
    contrast_hu: tuple[float, float] = (20.0, 60.0)
    edge_mm: tuple[float, float] = (0.7, 2.0)
    elongation: float = 1.6
    irregularity: float = 0.25
    heterogeneity: float = 0.3
    tissue_hu: tuple[float, float] = (0.0, 200.0)
    organ_margin_mm: float = 3.0
    bright_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.bright_fraction <= 1.0:
            raise ValueError(f"bright_fraction must be in [0, 1], got {self.bright_fraction}")


def lesion_hosts(candidates, organs) -> np.ndarray:
    """The ``candidates`` (indices into ``organs``) that may receive a simulated lesion: those with a
    pancreas mask whenever any has one (a lesion dropped anywhere in an unlabelled box, in bowel,
    vessel or fat, is not a pancreatic lesion), all of them when none has one."""
    candidates = np.asarray(candidates, dtype=int)
    outlined = [i for i in candidates if organs[i] is not None and organs[i].any()]
    return np.asarray(outlined, dtype=int) if outlined else candidates


def insert_lesion(
    image: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    spacing_mm: float = 1.0,
    cfg: LesionConfig = LesionConfig(),
    hu_window: tuple[float, float] = (-150.0, 250.0),
    organ: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Darken (or, for ``cfg.bright_fraction`` of lesions, brighten) an irregular, soft-edged region
    centred on parenchyma inside ``valid`` (and ``organ``).

    Args:
        image: (H, W) float32 in [0, 1], the windowed slice.
        valid: (H, W) bool, where the slice has tissue (the support).
        spacing_mm: pixel size, to turn mm ranges into pixels.
        hu_window: the HU window of ``image`` (``PreprocessConfig.hu_window``).
        organ: (H, W) bool pancreas mask, or None (anywhere in the support).

    Returns:
        (image with lesion, bool mask where the lesion is at least half its contrast), or None when
        no parenchyma pixel lies inside the support (and organ).
    """
    lo, hi = hu_window
    width = hi - lo
    radius = rng.uniform(*cfg.diameter_mm) / 2 / spacing_mm
    tissue = (image >= (cfg.tissue_hu[0] - lo) / width) & (image <= (cfg.tissue_hu[1] - lo) / width)
    inner = ndimage.binary_erosion(valid, iterations=2)
    allowed = tissue & inner
    if organ is not None:
        allowed &= organ
    candidates = np.argwhere(allowed)
    if len(candidates) == 0:
        return None
    cy, cx = candidates[rng.integers(len(candidates))]
    profile = _soft_shape(image.shape, (cy, cx), radius, rng, cfg, spacing_mm)
    if organ is not None:
        reach = ndimage.binary_dilation(organ, iterations=max(1, int(round(cfg.organ_margin_mm / spacing_mm))))
        profile *= ndimage.gaussian_filter(reach.astype(np.float32), 1.0)
    if cfg.heterogeneity > 0:
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), max(1.0, radius / 3))
        noise /= max(float(np.abs(noise).max()), 1e-6)
        profile *= 1.0 + cfg.heterogeneity * noise
    profile = np.clip(profile, 0.0, None)
    peak = float(profile.max())
    if peak <= 0:
        return None
    profile /= peak
    contrast = rng.uniform(*cfg.contrast_hu) / width
    if cfg.bright_fraction > 0 and rng.random() < cfg.bright_fraction:
        contrast = -contrast
    out = np.where(valid, np.clip(image - contrast * profile, 0.0, 1.0), image).astype(np.float32)
    mask = (profile >= 0.5) & valid
    if not mask.any():
        return None
    return out, mask


def _soft_shape(
    shape: tuple[int, int],
    centre: tuple[int, int],
    radius: float,
    rng: np.random.Generator,
    cfg: LesionConfig,
    spacing_mm: float,
) -> np.ndarray:
    """(H, W) float32 in [0, 1]: an elongated, lobulated disc (radius r(theta) with harmonics 2-4),
    Gaussian-blurred edge, scaled so its interior is 1."""
    ratio = rng.uniform(1.0, cfg.elongation)
    ry, rx = radius * ratio**0.5, radius / ratio**0.5
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    theta = np.arctan2(v / rx, u / ry)
    bumps = np.ones_like(theta)
    for k in (2, 3, 4):
        bumps += rng.uniform(0, cfg.irregularity / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    hard = (np.sqrt((u / ry) ** 2 + (v / rx) ** 2) <= np.maximum(bumps, 0.3)).astype(np.float32)
    if not hard.any():
        hard[centre[0], centre[1]] = 1.0
    soft = ndimage.gaussian_filter(hard, rng.uniform(*cfg.edge_mm) / spacing_mm)
    return soft / max(float(soft.max()), 1e-6)

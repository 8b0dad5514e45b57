"""The joint bilateral spread of rule.md: a raw map averaged over nearby pixels of similar intensity."""

import math

import numpy as np
import torch
from scipy import ndimage

HU_RANGE = 400.0  # the canvas window [-150, 250] HU spans 1.0


def spread(raw: np.ndarray, x: np.ndarray, zone: np.ndarray, sigma_px: float, sigma_hu: float, form: str) -> np.ndarray:
    """(B, S, S) ``raw`` spread along the intensities of ``x`` inside ``zone`` (rule.md's formula)."""
    guide = ndimage.gaussian_filter(np.asarray(x, np.float32), (0, 1.0, 1.0))
    r = math.ceil(2 * sigma_px)
    zone_t = torch.from_numpy(np.asarray(zone, np.float32))
    g = torch.from_numpy(guide)
    m = torch.from_numpy(np.asarray(raw, np.float32)) * zone_t
    pad = lambda t: torch.nn.functional.pad(t, (r, r, r, r))  # noqa: E731
    gp, mp, zp = pad(g), pad(m), pad(zone_t)
    num, den = torch.zeros_like(m), torch.zeros_like(m)
    inv_range = 1.0 / (2 * (sigma_hu / HU_RANGE) ** 2)
    h, w = m.shape[-2:]
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r:
                continue
            win = (slice(None), slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
            weight = math.exp(-(dy * dy + dx * dx) / (2 * sigma_px**2)) * torch.exp(-((g - gp[win]) ** 2) * inv_range)
            weight = weight * zp[win]
            num += weight * mp[win]
            den += weight
    out = torch.where(zone_t > 0, num / den.clamp_min(1e-12), torch.from_numpy(np.asarray(raw, np.float32)))
    out = out.numpy()
    return np.maximum(raw, out).astype(np.float32) if form == "max" else out.astype(np.float32)

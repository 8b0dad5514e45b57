"""Is this CT like the ones the models learned from? One measurable cue: fine texture in the pancreas.

Reconstruction kernel, slice thickness and dose set how much fine texture a slice has. The training
crops have about 22-24 HU of it; the bundled 3 mm sample CT from another hospital has 9.6, and a
classifier trained on two sites read that smoothness as tumor (overall confidence 0.93 on a
lesion-free CT; ``model_runs/20261126-blur-augmentation``), and on a simulated smoother scanner the
map flagged 3.6 times as much healthy tissue (``model_runs/20261126-texture-harmonization``). A CT
outside the range the release measured gets a warning next to its confidence, in every output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

MIN_ZONE_PX = 50
DEFINITION = (
    "fine texture: standard deviation of x - Gaussian(x, 1 canvas pixel) inside the pancreas zone, in HU; "
    "per CT the median over its canvases with at least 50 zone pixels"
)


def canvas_fine_texture_hu(
    canvases: np.ndarray, zones: np.ndarray, hu_window: tuple[float, float], min_zone_px: int = MIN_ZONE_PX
) -> np.ndarray:
    """(B,) fine texture of each canvas in HU; NaN where its zone has fewer than ``min_zone_px`` pixels."""
    width = float(hu_window[1] - hu_window[0])
    out = np.full(len(canvases), np.nan)
    for i, (x, zone) in enumerate(zip(np.asarray(canvases, np.float32), np.asarray(zones, bool))):
        if zone.sum() >= min_zone_px:
            out[i] = float(np.std((x - ndimage.gaussian_filter(x, 1.0))[zone])) * width
    return out


def fine_texture_hu(canvases: np.ndarray, zones: np.ndarray, hu_window: tuple[float, float]) -> float | None:
    """The CT's fine texture: the median over its canvases (None when no zone is large enough)."""
    values = canvas_fine_texture_hu(canvases, zones, hu_window)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def training_range(canvases: np.ndarray, zones: np.ndarray, hu_window: tuple[float, float]) -> dict[str, Any]:
    """The range a release stores in the model card: 1st-99th percentile over its tuning canvases."""
    values = canvas_fine_texture_hu(canvases, zones, hu_window)
    values = values[np.isfinite(values)]
    if not len(values):
        raise ValueError("no canvas has a pancreas zone large enough to measure its texture")
    low, median, high = np.percentile(values, [1, 50, 99])
    return {
        "fine_texture_hu": [round(float(low), 2), round(float(high), 2)],
        "median_hu": round(float(median), 2),
        "canvases": int(len(values)),
        "definition": DEFINITION + "; range: 1st-99th percentile over the tuning half's outlined canvases",
    }


def check(value: float | None, card_domain: dict | None) -> dict[str, Any]:
    """The summary's ``input_domain``: the CT's fine texture, the card's range, and whether it lies inside
    (None: the card has no range, or nothing could be measured)."""
    record: dict[str, Any] = {"fine_texture_hu": None if value is None else round(value, 2), "definition": DEFINITION}
    bounds = (card_domain or {}).get("fine_texture_hu")
    record["training_range_hu"] = bounds
    record["inside"] = None if value is None or not bounds else bool(bounds[0] <= value <= bounds[1])
    if record["inside"] is False:
        smoother = value < bounds[0]
        record["warning"] = (
            f"this CT is {'smoother' if smoother else 'grainier'} than the training data (fine texture {value:.1f} "
            f"HU, training {bounds[0]:.1f}-{bounds[1]:.1f} HU; slice thickness, kernel or dose differ): the "
            "confidence is not to be trusted here, and "
            + ("the map marks more healthy tissue on smoother CTs: read its candidates with care"
               if smoother else "the map was not validated on such CTs")
        )  # fmt: skip
    return record

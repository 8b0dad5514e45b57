"""Small synthetic data for engine tests: a slice folder whose tumor crops are smaller than healthy ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from pancdiff.config import NetworkConfig
from PIL import Image

TINY_NETWORK = NetworkConfig(
    image_size=64,
    channels=(8, 16, 16),
    attention_levels=(False, False, False),
    norm_num_groups=4,
    num_head_channels=8,
    classifier_channels=(8, 16, 16),
    classifier_attention_levels=(False, False, False),
)


def write_slice_folder(root: Path, cases_per_class: int = 4, slices_per_case: int = 3, seed: int = 0) -> Path:
    """pancreas-tc-like folder: healthy crops ~100x70 px, tumor crops ~60x50 px with a dark blob."""
    rng = np.random.default_rng(seed)
    (root / "slices").mkdir(parents=True)
    rows = []
    for label in (0, 1):
        for c in range(cases_per_class):
            case = f"{'tumor' if label else 'healthy'}_{c:03d}"
            for k in range(slices_per_case):
                h, w = (
                    (rng.integers(45, 56), rng.integers(55, 70))
                    if label
                    else (rng.integers(65, 80), rng.integers(90, 115))
                )
                img = np.clip(0.45 + 0.05 * rng.standard_normal((h, w)), 0, 1)
                if label:
                    yy, xx = np.mgrid[:h, :w]
                    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 64] -= 0.15
                name = f"slices/{case}_{k}.png"
                rgba = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 4, axis=2)
                rgba[..., 3] = 255
                Image.fromarray(rgba, "RGBA").save(root / name)
                rows.append({"file": name, "case": case, "tumor": label})
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "case", "tumor"])
        writer.writeheader()
        writer.writerows(rows)
    return root

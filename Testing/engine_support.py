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


def write_slice_folder(
    root: Path, cases_per_class: int = 4, slices_per_case: int = 3, seed: int = 0, with_labels: bool = False
) -> Path:
    """pancreas-tc-like folder: healthy crops ~100x70 px, tumor crops ~60x50 px with a dark blob.

    ``with_labels`` adds the pixel-label columns of LABELS.md: a label map (1 pancreas: a central
    ellipse; 2 tumor: the blob) and, for tumor crops, a binary tumor mask.
    """
    rng = np.random.default_rng(seed)
    (root / "slices").mkdir(parents=True)
    if with_labels:
        (root / "labels").mkdir()
        (root / "masks").mkdir()
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
                yy, xx = np.mgrid[:h, :w]
                blob = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < 64
                if label:
                    img[blob] -= 0.15
                name = f"slices/{case}_{k}.png"
                rgba = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 4, axis=2)
                rgba[..., 3] = 255
                Image.fromarray(rgba, "RGBA").save(root / name)
                row = {"file": name, "case": case, "tumor": label}
                if with_labels:
                    labels = (((yy - h / 2) / (0.35 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 < 1).astype(np.uint8)
                    if label:
                        labels[blob] = 2
                        row["mask"] = f"masks/{case}_{k}_tumor.png"
                        Image.fromarray((blob * 255).astype(np.uint8)).save(root / row["mask"])
                    row["labels"] = f"labels/{case}_{k}_labels.png"
                    Image.fromarray(labels).save(root / row["labels"])
                rows.append(row)
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "case", "tumor"] + (["mask", "labels"] if with_labels else []))
        writer.writeheader()
        writer.writerows(rows)
    return root

"""Diagnostic (tuning half, nothing chosen on it): does a tumor differ from the rest of its zone by intensity?

    python model_runs/20261201-intensity-guided-map/intensity_diagnostic.py   # → intensity_diagnostic.txt

Pixel AUROC of "darker" for tumor against the rest of the zone, over all slices pooled and per slice;
"without fat" drops pixels below -70 HU (the canvas smoothed at 1 px), the fat an intensity rule would
exclude first.
"""

import sys
from pathlib import Path

import numpy as np
from pancdiff.metrics import auroc
from pancdiff.weights import load_bundle
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import tuning_set  # noqa: E402

FAT = (-70 + 150) / 400  # -70 HU on the [-150, 250] HU canvas


def hu(v: float) -> float:
    return v * 400 - 150


def main() -> None:
    tune = tuning_set(load_bundle(None, "cpu"))
    print("| set | slices | AUROC, zone | AUROC, zone without fat | per-slice median (without fat) | share > 0.8 "
          "| mean HU tumor / rest without fat | SD HU tumor |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, les in tune.lesions.items():
        g = ndimage.gaussian_filter(les.x, (0, 1, 1))
        z, m = les.zone, les.mask
        lean = z & (g > FAT)
        per = np.array([auroc(mm[zz], -gg[zz]) for gg, mm, zz in zip(g, m, lean) if mm[zz].any() and (~mm[zz]).any()])
        print(f"| {name} | {len(m)} | {auroc(m[z], -g[z]):.3f} | {auroc(m[lean], -g[lean]):.3f} | {np.median(per):.3f} "
              f"| {np.mean(per > 0.8):.2f} | {hu(g[m].mean()):.0f} / {hu(g[lean & ~m].mean()):.0f} "
              f"| {g[m].std() * 400:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()

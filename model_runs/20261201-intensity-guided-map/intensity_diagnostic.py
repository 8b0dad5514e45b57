"""Diagnostic (tuning half, nothing chosen on it): does a tumor differ from the rest of its zone by intensity?

    python model_runs/20261201-intensity-guided-map/intensity_diagnostic.py   # → intensity_diagnostic.txt

Pixel AUROC of "darker" for tumor against the rest of the zone, over all slices pooled and per slice;
"without fat" drops pixels below -70 HU (the canvas smoothed at 1 px), the fat an intensity rule would
exclude first. "Organ" is the zone eroded by its margin (5 px): about the pancreas, tumor included.
"""

import sys
from pathlib import Path

import numpy as np
from pancdiff.metrics import auroc
from pancdiff.preprocess import zone_margin_px
from pancdiff.weights import load_bundle
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import tuning_set  # noqa: E402

FAT = (-70 + 150) / 400  # -70 HU on the [-150, 250] HU canvas


def hu(v: float) -> float:
    return v * 400 - 150


def main() -> None:
    bundle = load_bundle(None, "cpu")
    tune = tuning_set(bundle)
    margin = int(round(zone_margin_px(bundle.preprocess, None)))
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
    organ_row(tune, margin)


def organ_row(tune, margin: int) -> None:
    les = tune.lesions["real"]
    g = ndimage.gaussian_filter(les.x, (0, 1, 1))
    organ = np.stack([ndimage.binary_erosion(z, iterations=margin) for z in les.zone])
    m = les.mask
    per = np.array([auroc(mm[o], -gg[o]) for gg, mm, o in zip(g, m, organ) if mm[o].any() and (~mm[o]).any()])
    inside, pooled = (m & organ).sum(), auroc(m[organ], -g[organ])
    print(
        f"\nreal tumors inside the organ (zone eroded by {margin} px): pooled AUROC {pooled:.3f}, per-slice median "
        f"{np.median(per):.3f} ({len(per)} slices); the tumor fills {inside / organ.sum():.2f} of the organ; "
        f"{inside / m.sum():.2f} of tumor pixels lie in it"
    )


if __name__ == "__main__":
    main()

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import organ, smoothed_hu, tuning_set  # noqa: E402

FAT_HU = -70.0


def separation(hu: np.ndarray, mask: np.ndarray, where: np.ndarray) -> tuple[float, np.ndarray]:
    """Pooled AUROC of "darker is tumor" over ``where``, and per slice (slices holding both classes)."""
    per = [auroc(m[w], -h[w]) for h, m, w in zip(hu, mask, where) if m[w].any() and (~m[w]).any()]
    return auroc(mask[where], -hu[where]), np.array(per)


def main() -> None:
    bundle = load_bundle(None, "cpu")
    tune, window = tuning_set(bundle), bundle.preprocess.hu_window
    margin = int(round(zone_margin_px(bundle.preprocess, None)))
    print("| set | slices | AUROC, zone | AUROC, zone without fat | per-slice median (without fat) | share > 0.8 "
          "| mean HU tumor / rest without fat | SD HU tumor |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for name, les in tune.lesions.items():
        hu, z, m = smoothed_hu(les.x, window), les.zone, les.mask
        lean = z & (hu > FAT_HU)
        pooled_zone, _ = separation(hu, m, z)
        pooled, per = separation(hu, m, lean)
        print(f"| {name} | {len(m)} | {pooled_zone:.3f} | {pooled:.3f} | {np.median(per):.3f} "
              f"| {np.mean(per > 0.8):.2f} | {hu[m].mean():.0f} / {hu[lean & ~m].mean():.0f} "
              f"| {hu[m].std():.0f} |")  # fmt: skip
    les = tune.lesions["real"]
    inner, m = organ(les.zone, margin), les.mask
    pooled, per = separation(smoothed_hu(les.x, window), m, inner)
    inside = (m & inner).sum()
    print(
        f"\nreal tumors inside the organ (zone eroded by {margin} px): pooled AUROC {pooled:.3f}, per-slice median "
        f"{np.median(per):.3f} ({len(per)} slices); the tumor fills {inside / inner.sum():.2f} of the organ; "
        f"{inside / m.sum():.2f} of tumor pixels lie in it"
    )


if __name__ == "__main__":
    main()

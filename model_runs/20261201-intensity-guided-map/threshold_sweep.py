"""Diagnostic (tuning half, nothing chosen on it): is real-tumor Dice held down by the healthy bound?

    python model_runs/20261201-intensity-guided-map/threshold_sweep.py CACHE.npz   # → threshold_sweep.txt

The shipped map at its operating point (2 px, calibrated), every threshold: real and simulated Dice and
healthy FP; then where the healthy false positives lie at the shipped threshold.
"""

import sys
from pathlib import Path

import numpy as np
from pancdiff.evaluate import threshold_rows, zone_maps
from pancdiff.preprocess import zone_margin_px
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import organ, smoothed_hu, tuning_set  # noqa: E402


def main() -> None:
    bundle = load_bundle(None, "cpu")
    tune, op = tuning_set(bundle), bundle.operating_point
    cache = np.load(sys.argv[1])
    raw = {k: cache[f"{k}_raw"] for k in ("real", "simulated", "healthy")}
    print(f"bundle {bundle.model_id}; {op.smooth_sigma_px:g} px, {op.normalization}, shipped threshold {op.threshold}")
    print("| threshold | real Dice | simulated Dice | healthy FP |\n|---|---|---|---|")
    for r in threshold_rows(tune, raw, op):
        print(f"| {r['threshold']:.2f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['fp_fraction']:.4f} |")
    h = tune.healthy
    zone = tune.zone[h]
    flagged = zone_maps(raw["healthy"], zone, op) >= op.threshold
    margin = int(round(zone_margin_px(bundle.preprocess, None)))
    inner = organ(zone, margin)
    hu = smoothed_hu(tune.x[h], bundle.preprocess.hu_window)
    per = flagged.sum((1, 2)) / zone.sum((1, 2))
    print(f"\nat {op.threshold}: {flagged.any((1, 2)).mean():.2f} of {len(zone)} healthy slices have a candidate; "
          f"{(flagged & inner).sum() / flagged.sum():.2f} of flagged pixels lie in the organ (zone eroded by "
          f"{margin} px, {inner.sum() / zone.sum():.2f} of the zone)")  # fmt: skip
    q = [10, 25, 50, 75, 90]
    print(f"flagged pixels' HU, 10/25/50/75/90th percentile: {np.percentile(hu[flagged], q).round(0)}; "
          f"the zone's: {np.percentile(hu[zone], q).round(0)}")  # fmt: skip
    print(f"largest per-slice FP fractions: {np.sort(per)[-5:].round(3)} (mean {per.mean():.4f}; the largest "
          f"slice alone is {per.max() / per.sum():.2f} of it)")  # fmt: skip


if __name__ == "__main__":
    main()

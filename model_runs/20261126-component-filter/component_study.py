"""Minimum candidate size on the tuning half (see rule.md); nothing here changes the bundle.

python model_runs/20261126-component-filter/component_study.py /work/runs/s6/tune_maps.npz
"""

import dataclasses
import itertools
import sys

import numpy as np
from pancdiff.evaluate import THRESHOLDS, best_allowed, calibrate_map_scale, fp_fraction, zone_maps
from pancdiff.metrics import dice
from pancdiff.weights import load_bundle
from scipy import ndimage

AREAS_MM2 = (0, 4, 9, 16, 25, 36)
EIGHT = np.ones((3, 3), bool)


def keep_large(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    return (sizes >= min_px)[labels] & mask


def rows_for(maps: dict, masks: dict, healthy: np.ndarray, hzone: np.ndarray, min_px: int) -> list[dict]:
    rows = []
    for t in THRESHOLDS:
        dices = {
            n: float(np.mean([dice(keep_large(m >= t, min_px), g) for m, g in zip(maps[n], masks[n])])) for n in maps
        }
        kept = np.stack([keep_large(m >= t, min_px) for m in healthy]).astype(np.float32)
        fp = fp_fraction(kept, hzone, 0.5)  # the release's own measure, on the filtered candidates
        mean = float(np.mean(list(dices.values())))
        rows.append(
            {"threshold": float(t), "dice": mean, **{f"dice_{n}": v for n, v in dices.items()}, "fp_fraction": fp}
        )
    return rows


def main(path: str) -> None:
    d = np.load(path)
    base = load_bundle(None, "cpu").operating_point
    names = ("real", "simulated")
    raw = {n: d[f"{n}|guidance|5"] for n in (*names, "healthy")}
    zones = {n: d[f"{n}|zone"] for n in names}
    masks = {n: d[f"{n}|mask"] for n in names}
    hz = d["healthy|zone"]
    scale = calibrate_map_scale(raw["healthy"], hz, base.smooth_sigma_px)
    print(f"tuning half: {len(masks['real'])} real, {len(masks['simulated'])} simulated, {len(hz)} healthy slices")
    print("| min area mm² | chosen | Dice real | Dice sim | objective | healthy FP |")
    print("|---|---|---|---|---|---|")
    for area in AREAS_MM2:
        best = None
        for norm, floor in itertools.product(("slice", "calibrated"), (0.0, 0.02, 0.05)):
            cfg = dataclasses.replace(base, normalization=norm, map_scale=scale, min_anomaly=floor)
            maps = {n: zone_maps(raw[n], zones[n], cfg) for n in names}
            healthy = zone_maps(raw["healthy"], hz, cfg)
            rows = rows_for(maps, masks, healthy, hz, area)
            r = rows[best_allowed(rows, 0.02)]
            ok = r["fp_fraction"] <= 0.02
            if best is None or (ok, r["dice"]) > (best[0]["fp_fraction"] <= 0.02, best[0]["dice"]):
                best = (r, f"{norm} floor {floor:g} thr {r['threshold']:g}")
        r, label = best
        print(f"| {area} | {label} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['dice']:.3f} | "
              f"{r['fp_fraction']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])

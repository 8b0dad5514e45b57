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


def rows_for(maps: dict, masks: dict, healthy: np.ndarray, hzone: np.ndarray, candidates, small=None) -> list[dict]:
    """Every threshold: Dice per lesion set and healthy FP, on ``candidates(map, threshold)`` (bool).
    With ``small`` (bool per real slice), real Dice on the smaller and the larger tumors apart too."""
    rows = []
    for t in THRESHOLDS:
        per = {n: np.array([dice(candidates(m, t), g) for m, g in zip(maps[n], masks[n])]) for n in maps}
        kept = np.stack([candidates(m, t) for m in healthy]).astype(np.float32)
        row = {
            "threshold": float(t),
            "dice": float(np.mean([v.mean() for v in per.values()])),
            **{f"dice_{n}": float(v.mean()) for n, v in per.items()},
            "fp_fraction": fp_fraction(kept, hzone, 0.5),  # the release's own measure, on the final candidates
        }
        if small is not None:
            row["dice_real_small"] = float(per["real"][small].mean())
            row["dice_real_large"] = float(per["real"][~small].mean())
        rows.append(row)
    return rows


def choose(raw: dict, zones: dict, masks: dict, hz: np.ndarray, base, candidates, small=None) -> tuple[dict, str]:
    """The release's rule on cached raw maps: the normalization, evidence floor and threshold with the
    best mean Dice under the healthy bound (0.02), candidates made by ``candidates(map, threshold)``."""
    scale = calibrate_map_scale(raw["healthy"], hz, base.smooth_sigma_px)
    best = None
    for norm, floor in itertools.product(("slice", "calibrated"), (0.0, 0.02, 0.05)):
        cfg = dataclasses.replace(base, normalization=norm, map_scale=scale, min_anomaly=floor)
        maps = {n: zone_maps(raw[n], zones[n], cfg) for n in masks}
        rows = rows_for(maps, masks, zone_maps(raw["healthy"], hz, cfg), hz, candidates, small)
        r = rows[best_allowed(rows, 0.02)]
        ok = r["fp_fraction"] <= 0.02
        if best is None or (ok, r["dice"]) > (best[0]["fp_fraction"] <= 0.02, best[0]["dice"]):
            best = (r, f"{norm} floor {floor:g} thr {r['threshold']:g}")
    return best


def main(path: str) -> None:
    d = np.load(path)
    base = load_bundle(None, "cpu").operating_point
    names = ("real", "simulated")
    raw = {n: d[f"{n}|guidance|5"] for n in (*names, "healthy")}
    zones = {n: d[f"{n}|zone"] for n in names}
    masks = {n: d[f"{n}|mask"] for n in names}
    hz = d["healthy|zone"]
    print(f"tuning half: {len(masks['real'])} real, {len(masks['simulated'])} simulated, {len(hz)} healthy slices")
    print("| min area mm² | chosen | Dice real | Dice sim | objective | healthy FP |")
    print("|---|---|---|---|---|---|")
    for area in AREAS_MM2:
        r, label = choose(raw, zones, masks, hz, base, lambda m, t, px=area: keep_large(m >= t, px))
        print(f"| {area} | {label} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['dice']:.3f} | "
              f"{r['fp_fraction']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])

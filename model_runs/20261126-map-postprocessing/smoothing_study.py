"""Does a smoother map localize real tumors, or only cover more of the zone? Tuning half only
(maps cached by tuning_maps.py), described: nothing here changed the bundle or the release rule.

For each map (the shipped guidance map at S = 5, the input map |x - x_hat| at S = 10, and the
unguided input map S = 0, which carries no classifier at all) and smoothing sigma, the release's own
rule picks normalization, evidence floor and threshold (best mean Dice over real and simulated with
healthy FP <= 0.02). Beside Dice: the peak-in-tumor fraction, and Dice on the half of the real slices
whose tumor fills less of the zone than the median, against marking the whole zone there.

    python model_runs/20261126-map-postprocessing/smoothing_study.py /work/runs/s6/tune_maps.npz
"""

import dataclasses
import itertools
import sys
from types import SimpleNamespace

import numpy as np
from pancdiff.evaluate import (
    Lesions,
    best_allowed,
    calibrate_map_scale,
    peak_in_tumor,
    threshold_rows,
    trivial_baselines,
    zone_maps,
)
from pancdiff.metrics import dice
from pancdiff.weights import load_bundle

d = np.load(sys.argv[1])
base = load_bundle(None, "cpu").operating_point
names = ("real", "simulated")
les = {n: Lesions(n, d[f"{n}|x"], d[f"{n}|zone"], d[f"{n}|mask"], d[f"{n}|zone"]) for n in names}
hz = d["healthy|zone"]
data = SimpleNamespace(lesions=les, zone=hz, y=np.zeros(len(hz), int), healthy=np.ones(len(hz), bool))
trivial = {n: trivial_baselines(les[n]) for n in names}
print(f"tuning half: {len(les['real'])} real-outline slices, {len(les['simulated'])} simulated, {len(hz)} healthy")
for n in names:
    print(
        f"  {n}: whole zone Dice {trivial[n]['whole_zone_dice']:.3f}, "
        f"tumor share of zone {trivial[n]['prevalence']:.3f}"
    )
real = les["real"]
frac = (real.mask & real.zone).reshape(len(real), -1).sum(1) / real.zone.reshape(len(real), -1).sum(1)
small = frac < np.median(frac)
zone_small = np.mean([dice(z, g & z) for z, g in zip(les["real"].zone[small], les["real"].mask[small])])
print(f"  real, smaller half ({small.sum()} slices): whole zone Dice {zone_small:.3f}")
print()
print(
    "| map | sigma px | chosen | Dice real | Dice sim | peak real | peak sim | Dice real, smaller half | healthy FP |"
)
print("|---|---|---|---|---|---|---|---|---|")
for label, kind, s in (
    ("guidance S=5 (shipped)", "guidance", "5"),
    ("input S=10", "input", "10"),
    ("input S=0", "input", "0"),
):
    raw = {n: d[f"{n}|{kind}|{s}"] for n in (*names, "healthy")}
    for sigma in (1.0, 2.0, 4.0, 6.0):
        scale = calibrate_map_scale(raw["healthy"], hz, sigma)
        rows, cfgs = [], []
        for norm, floor in itertools.product(("slice", "calibrated"), (0.0, 0.02, 0.05)):
            cfg = dataclasses.replace(
                base, smooth_sigma_px=sigma, normalization=norm, map_scale=scale, min_anomaly=floor
            )
            for r in threshold_rows(data, raw, cfg):
                rows.append(r)
                cfgs.append(dataclasses.replace(cfg, threshold=r["threshold"]))
        i = best_allowed(rows, 0.02)
        r, cfg = rows[i], cfgs[i]
        maps = {n: zone_maps(raw[n], les[n].zone, cfg) for n in names}
        peaks = {n: peak_in_tumor(maps[n], les[n].mask, les[n].zone) for n in names}
        small_dice = np.mean(
            [dice(m >= cfg.threshold, g) for m, g in zip(maps["real"][small], les["real"].mask[small])]
        )
        print(
            f"| {label} | {sigma:g} | {cfg.normalization} {cfg.threshold:g} | {r['dice_real']:.3f} | "
            f"{r['dice_simulated']:.3f} | {peaks['real']:.3f} | {peaks['simulated']:.3f} | {small_dice:.3f} | "
            f"{r['fp_fraction']:.3f} |"
        )
print(
    f"\nchance of a peak in the tumor: real {trivial['real']['peak_in_tumor_chance']:.3f}, "
    f"simulated {trivial['simulated']['peak_in_tumor_chance']:.3f}"
)

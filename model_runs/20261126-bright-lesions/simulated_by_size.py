"""Described, not chosen on: which simulated lesions the shipped operating point finds, by size and
contrast (both measured on the lesion itself: equivalent diameter of its mask, mean depth below
the same crop without it). Thirds of each half's simulated lesions; the evaluation sets the release
scores (tuning: build_eval_set seed 11; test: seed 22).

python model_runs/20261126-bright-lesions/simulated_by_size.py [test] (repository root)
"""

import sys

import numpy as np
from pancdiff.evaluate import build_eval_set, run_anomaly, zone_maps
from pancdiff.metrics import dice
from shipped import bundle_and_halves

bundle, tune, test = bundle_and_halves()
cfg = bundle.operating_point
half = "test" if sys.argv[1:] == ["test"] else "tuning"
cases, seed = (test, 22) if half == "test" else (tune, 11)
sim = build_eval_set("../shared/data/pancreas-tc", bundle, set(cases), 0.8, seed=seed).lesions["simulated"]
lo, hi = bundle.preprocess.hu_window
maps = zone_maps(run_anomaly(bundle, cfg, sim.x, sim.valid, zone=sim.zone), sim.zone, cfg)
spacing = bundle.preprocess.pixel_spacing_mm
size = np.array([2 * np.sqrt(m.sum() / np.pi) * spacing for m in sim.mask])
depth = np.array([(c[m] - x[m]).mean() * (hi - lo) for c, x, m in zip(sim.clean, sim.x, sim.mask)])
scores = np.array([dice(m >= cfg.threshold, g) for m, g in zip(maps, sim.mask)])
peaks = np.array([g.flat[int(np.argmax(np.where(z, m, -np.inf)))] for m, g, z in zip(maps, sim.mask, sim.zone)])
print(f"{len(sim)} simulated lesions, {half} half; operating point N = {cfg.noise_level}, threshold {cfg.threshold}")
for name, value, unit in (("diameter", size, "mm"), ("depth", depth, "HU")):
    edges = np.quantile(value, [0, 1 / 3, 2 / 3, 1])
    for a, b in zip(edges[:-1], edges[1:]):
        r = (value >= a) & (value <= b)
        print(
            f"{name} {a:5.1f} to {b:5.1f} {unit} (n={r.sum()}): Dice {scores[r].mean():.3f}, "
            f"peak in lesion {peaks[r].mean():.2f}"
        )

"""Described, not chosen on: run B's real tumors of the tuning half by contrast, at the operating point
its (refused) release chose (noisy S = 5, N = 50, K = 4, guidance map, calibrated with map_scale
0.0221, threshold 0.40), beside Z2 at the shipped point. Same thirds as
../20261126-noisy-classifier/real_by_contrast.py.

python model_runs/20261126-bright-lesions/real_by_contrast_b.py B_WEIGHTS (repository root)
"""

import dataclasses
import sys

import numpy as np
from pancdiff.evaluate import build_eval_set, run_anomaly, zone_maps
from pancdiff.metrics import dice
from pancdiff.weights import load_weights_into
from shipped import bundle_and_halves

bundle, tune, _ = bundle_and_halves()
real = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune), 0.8, seed=11).lesions["real"]
lo, hi = bundle.preprocess.hu_window
hu = lo + real.x * (hi - lo)
contrast = []
for h, g, z in zip(hu, real.mask, real.zone):
    tissue = z & ~g & (h > 0)
    contrast.append(h[g].mean() - h[tissue].mean() if g.any() and tissue.any() else np.nan)
contrast = np.array(contrast)
keep = ~np.isnan(contrast)
edges = np.quantile(contrast[keep], [0, 1 / 3, 2 / 3, 1])
b_point = dataclasses.replace(bundle.operating_point, map_scale=0.022095900028944016, threshold=0.4)
for name, weights, cfg in (("Z2 (shipped)", None, bundle.operating_point), ("B", sys.argv[1], b_point)):
    if weights:
        load_weights_into(bundle.classifier, weights)
    maps = zone_maps(run_anomaly(bundle, cfg, real.x, real.valid, zone=real.zone), real.zone, cfg)
    scores = np.array([dice(m >= cfg.threshold, g) for m, g in zip(maps, real.mask)])
    peaks = np.array([g.flat[int(np.argmax(np.where(z, m, -np.inf)))] for m, g, z in zip(maps, real.mask, real.zone)])
    for a, b in zip(edges[:-1], edges[1:]):
        r = keep & (contrast >= a) & (contrast <= b)
        print(
            f"{name:13s} contrast {a:+6.1f} to {b:+6.1f} HU (n={r.sum()}): Dice {scores[r].mean():.3f}, "
            f"peak in tumor {peaks[r].mean():.2f}",
            flush=True,
        )

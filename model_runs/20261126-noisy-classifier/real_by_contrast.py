"""Real tumors of the tuning half by their contrast to the surrounding pancreas, at the shipped
operating point: which MSD tumors the map finds (Dice at the threshold, peak inside the tumor).

Contrast = mean HU of the tumor minus the mean HU of the zone's other soft tissue (> 0 HU, so the
fat of the margin is left out). python model_runs/20261126-noisy-classifier/real_by_contrast.py [test]
(the test half only as a description after the release; nothing is chosen on it).
"""

import json
import sys

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set, peak_hits, run_anomaly, zone_maps
from pancdiff.metrics import dice
from pancdiff.postprocess import peak_evidence
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
bundle = load_bundle(None, "cpu")
cfg = bundle.operating_point
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, test = tuning_test_halves(split["val_cases"])
half = "test" if sys.argv[1:] == ["test"] else "tuning"
cases = set(test if half == "test" else tune)
real = build_eval_set("../shared/data/pancreas-tc", bundle, cases, 0.8, seed=11).lesions["real"]
lo, hi = bundle.preprocess.hu_window
hu = lo + real.x * (hi - lo)
raw = run_anomaly(bundle, cfg, real.x, real.valid, zone=real.zone)
maps = zone_maps(raw, real.zone, cfg)
hits = peak_hits(peak_evidence(raw, real.zone, maps, cfg), real.mask, real.zone)  # the peak as evaluate finds it
rows = []
for h, m, g, z, hit in zip(hu, maps, real.mask, real.zone, hits):
    tissue = z & ~g & (h > 0)
    if not g.any() or not tissue.any():
        continue
    rows.append((h[g].mean() - h[tissue].mean(), dice(m >= cfg.threshold, g), hit, g[z].mean()))
rows = np.array(rows)
print(f"{len(rows)} real tumor slices, {half} half; operating point N = {cfg.noise_level}, threshold {cfg.threshold}")
edges = np.quantile(rows[:, 0], [0, 1 / 3, 2 / 3, 1])
for a, b in zip(edges[:-1], edges[1:]):
    r = rows[(rows[:, 0] >= a) & (rows[:, 0] <= b)]
    print(
        f"contrast {a:+6.1f} to {b:+6.1f} HU (n={len(r)}): Dice {r[:, 1].mean():.3f}, "
        f"peak in tumor {r[:, 2].mean():.2f} (chance {r[:, 3].mean():.2f})"
    )

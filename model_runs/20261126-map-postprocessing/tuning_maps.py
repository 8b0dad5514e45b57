"""Raw anomaly maps of the tuning half at N = 50 (the shipped K, grid and guidance step), every
(guidance map kind, S) from one encoding per slice, cached for post-processing studies. Tuning
half only: the test half is not read."""

import sys
import time

import numpy as np

sys.path.insert(0, "model_runs/20261126-bright-lesions")
from pancdiff.evaluate import build_eval_set, raw_map_grid  # noqa: E402
from shipped import bundle_and_halves  # noqa: E402

bundle, tune_cases, _ = bundle_and_halves()
t0 = time.time()
tune = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune_cases), 0.8, seed=11)
base = bundle.operating_point
scales = (0.0, 5.0, 10.0, 20.0)
out = {}
h = tune.healthy
sets = {n: (les.x, les.valid, les.zone) for n, les in tune.lesions.items()}
sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
for name, (x, valid, zone) in sets.items():
    grid = raw_map_grid(bundle, base, x, valid, scales, ("noisy",), label=name, zone=zone)
    for (_guidance, kind, s), m in grid.items():
        out[f"{name}|{kind}|{s:g}"] = m
    print(name, len(x), f"{time.time() - t0:.0f}s", flush=True)
for n, les in tune.lesions.items():
    out[f"{n}|mask"], out[f"{n}|zone"], out[f"{n}|x"] = les.mask, les.zone, les.x
out["healthy|zone"], out["healthy|outlined"], out["healthy|x"] = tune.zone[h], tune.has_outline[h], tune.x[h]
np.savez_compressed(sys.argv[1], **out)
print("saved", sys.argv[1], f"{time.time() - t0:.0f}s")

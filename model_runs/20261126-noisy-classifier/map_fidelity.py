"""Choice set for the fast default (selection_rule.md): agreement of the calibrated guidance map with
the paper-exact run on 80 tuning-half canvases (40 simulated lesions, 40 real tumor crops).

python model_runs/20261126-noisy-classifier/map_fidelity.py [BUNDLE] (from the repository root)
"""

import dataclasses
import json
import sys

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, evaluations_per_slice, normalize_maps
from pancdiff.evaluate import build_eval_set
from pancdiff.metrics import dice, pearson
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
bundle = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
op = dataclasses.replace(bundle.operating_point, map_kind="guidance", guidance="noisy")
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, _ = tuning_test_halves(split["val_cases"])
data = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune), 0.8, seed=11)
rng = np.random.default_rng(5)
picks = [(les, rng.choice(len(les.x), 40, replace=False)) for les in (data.lesions["simulated"], data.lesions["real"])]
x = np.concatenate([les.x[i] for les, i in picks]).astype(np.float32)
valid = np.concatenate([les.valid[i] for les, i in picks])
zone = np.concatenate([les.zone[i] for les, i in picks])


def guidance_map(cfg):
    raw = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], zone=zone)["anomaly"][("noisy", "guidance", cfg.scale)]
    return normalize_maps(raw, valid, cfg)


reference_cfg = op.paper_exact()
reference = guidance_map(reference_cfg)
passes_ref = evaluations_per_slice(reference_cfg)
settings = [(10, 1.0, "paper")]  # the K = 10 bundle's setting
settings += [(k, p, g) for k in (4, 5) for p in (1.0, 1.5) for g in ("paper", "integrated", "extrapolated")]
if op.noise_level < 100:  # fewer passes reach 20x when the paper-exact run itself is short
    settings += [(k, p, g) for k in (2, 3) for p in (1.0, 1.5) for g in ("paper", "extrapolated")]
for steps, power, step in settings:
    cfg = dataclasses.replace(op, steps=steps, grid_power=power, guidance_step=step)
    got = guidance_map(cfg)
    passes = evaluations_per_slice(cfg)
    print(
        f"K={steps:2d} power {power} {step:12s} passes {passes:3d} ({passes_ref / passes:4.1f}x fewer) "
        f"r {pearson(reference[valid], got[valid]):.3f} "
        f"Dice {dice(reference >= op.threshold, got >= op.threshold):.3f}",
        flush=True,
    )

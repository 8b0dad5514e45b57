"""Described, not chosen on: the shipped operating point's healthy false-positive fraction (share of
the pancreas zone flagged) per healthy patient, tuning and test halves. Why the test half's 0.036
against the tuning half's 0.019: 4 healthy patients per half.

python model_runs/20261126-bright-lesions/healthy_fp_by_patient.py (repository root)
"""

import json

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set, fp_fraction, run_anomaly, zone_maps
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
bundle = load_bundle(None, "cpu")
cfg = bundle.operating_point
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
for half, cases in zip(("tuning", "test"), tuning_test_halves(split["val_cases"])):
    data = build_eval_set("../shared/data/pancreas-tc", bundle, set(cases), 0.8, seed=11)
    h = np.flatnonzero(data.healthy)
    maps = zone_maps(run_anomaly(bundle, cfg, data.x[h], data.valid[h], zone=data.zone[h]), data.zone[h], cfg)
    overall = fp_fraction(maps, data.zone[h], cfg.threshold)
    print(f"{half}: {len(h)} healthy slices, zone flagged {overall:.3f}")
    for case in sorted({data.cases[i] for i in h}):
        mine = np.array([data.cases[i] == case for i in h])
        print(f"  {case}: {mine.sum():3d} slices, {fp_fraction(maps[mine], data.zone[h][mine], cfg.threshold):.3f}")

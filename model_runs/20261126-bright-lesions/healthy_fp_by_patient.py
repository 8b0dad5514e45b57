"""Described, not chosen on: the shipped operating point's healthy false-positive fraction (share of
the pancreas zone flagged) per healthy patient, tuning and test halves. Why the test half's 0.036
against the tuning half's 0.019: 5 healthy patients per half, one of them without a pancreas outline,
whose zone falls back to the whole crop.

python model_runs/20261126-bright-lesions/healthy_fp_by_patient.py (repository root)
"""

import numpy as np
from pancdiff.evaluate import build_eval_set, fp_fraction, healthy_false_positives, run_anomaly, zone_maps
from shipped import bundle_and_halves

bundle, tune, test = bundle_and_halves()
cfg = bundle.operating_point
for half, cases in zip(("tuning", "test"), (tune, test)):
    data = build_eval_set("../shared/data/pancreas-tc", bundle, set(cases), 0.8, seed=11)
    h = np.flatnonzero(data.healthy)
    maps = zone_maps(run_anomaly(bundle, cfg, data.x[h], data.valid[h], zone=data.zone[h]), data.zone[h], cfg)
    fp = healthy_false_positives(maps, data.zone[h], cfg.threshold, data.has_outline[h])
    print(
        f"{half}: {len(h)} healthy slices, zone flagged {fp['fp_fraction']:.3f}; "
        f"{fp['n_outlined']} with a pancreas outline: {fp['fp_fraction_outlined']:.3f}"
    )
    for case in sorted({data.cases[i] for i in h}):
        mine = np.array([data.cases[i] == case for i in h])
        outline = "pancreas outline" if data.has_outline[h][mine].all() else "no outline: zone = whole crop"
        flagged = fp_fraction(maps[mine], data.zone[h][mine], cfg.threshold)
        print(f"  {case}: {mine.sum():3d} slices, {flagged:.3f} ({outline})")

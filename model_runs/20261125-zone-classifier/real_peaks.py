"""Tuning half: where do the shipped model's maps peak on real MSD tumors, and how do they look inside vs outside?"""

import json

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set, zone_maps
from pancdiff.weights import load_bundle
from scipy import ndimage

torch.set_num_threads(1)
b = load_bundle(None, "cpu")
cfg = b.operating_point
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, _ = tuning_test_halves(split["val_cases"])
data = build_eval_set("../shared/data/pancreas-tc", b, set(tune), 0.8, seed=11)
for name in ("real", "simulated"):
    les = data.lesions[name]
    res = Detector(b, cfg).detect(les.x, les.valid, zone=les.zone)
    maps = zone_maps(res.anomaly, les.zone, cfg)
    raw = res.anomaly
    rows = []
    for m, r, g, z, x in zip(maps, raw, les.mask & les.zone, les.zone, les.x):
        if not g.any():
            continue
        pk = np.unravel_index(np.argmax(np.where(z, m, -1)), m.shape)
        dist = ndimage.distance_transform_edt(~g)[pk]
        inner = ndimage.binary_erosion(g, iterations=3)
        rim = g & ~inner
        rows.append(
            dict(
                frac=g.sum() / z.sum(),
                in_t=g[pk],
                dist=dist,
                raw_in=r[g].mean(),
                raw_core=r[inner].mean() if inner.any() else np.nan,
                raw_out=r[z & ~g].mean(),
                flag_in=(m[g] >= cfg.threshold).mean(),
                flag_out=(m[z & ~g] >= cfg.threshold).mean(),
                hu_in=x[g].mean() * 400 - 150,
                hu_out=x[z & ~g].mean() * 400 - 150,
            )
        )
    k = {key: np.nanmean([r[key] for r in rows]) for key in rows[0]}
    print(name, len(rows), {a: round(float(v), 4) for a, v in k.items()})
    big = [r for r in rows if r["frac"] > 0.3]
    small = [r for r in rows if r["frac"] <= 0.3]
    for lab, sub in (("tumor > 30% of zone", big), ("<= 30%", small)):
        if sub:
            print(
                "  ",
                lab,
                len(sub),
                "peak in tumor",
                round(np.mean([r["in_t"] for r in sub]), 3),
                "flag in/out",
                round(np.mean([r["flag_in"] for r in sub]), 3),
                round(np.mean([r["flag_out"] for r in sub]), 3),
                "raw in/core/out",
                round(np.mean([r["raw_in"] for r in sub]), 4),
                round(np.nanmean([r["raw_core"] for r in sub]), 4),
                round(np.mean([r["raw_out"] for r in sub]), 4),
            )

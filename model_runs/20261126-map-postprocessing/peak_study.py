"""The peak at the shipped operating point, tuning half only (maps cached by tuning_maps.py): how often
the clipped calibrated map ties at its maximum, and where the peak lands with the old rule (argmax of
the clipped map) and the new one (``postprocess.peak_evidence``) at each peak smoothing
(``evaluate.choose_peak_sigma``, the release's own choice).

    python model_runs/20261126-map-postprocessing/peak_study.py /work/runs/s6/tune_maps.npz
"""

import sys
from types import SimpleNamespace

import numpy as np
from pancdiff.evaluate import PEAK_SIGMAS, Lesions, choose_peak_sigma, peak_in_tumor, zone_maps
from pancdiff.weights import load_bundle

d = np.load(sys.argv[1])
op = load_bundle(None, "cpu").operating_point
names = ("real", "simulated")
les = {n: Lesions(n, d[f"{n}|x"], d[f"{n}|zone"], d[f"{n}|mask"], d[f"{n}|zone"]) for n in names}
raw = {n: d[f"{n}|{op.map_kind}|{op.scale:g}"] for n in names}
data = SimpleNamespace(lesions=les)
print(
    f"shipped point: {op.guidance} S={op.scale:g} N={op.noise_level} K={op.steps} {op.map_kind} map, "
    f"{op.normalization} (map_scale {op.map_scale:.4f}), threshold {op.threshold}, "
    f"map smoothing {op.smooth_sigma_px} px"
)
print("\n| set | slices | several zone pixels at 1.0 | peak in tumor, argmax of the clipped map (old) | chance |")
print("|---|---|---|---|---|")
for n in names:
    maps = zone_maps(raw[n], les[n].zone, op)
    tied = np.mean([(m[z] >= 1.0).sum() > 1 for m, z in zip(maps, les[n].zone)])
    masks, zone = les[n].mask & les[n].zone, les[n].zone
    chance = np.mean(masks.reshape(len(zone), -1).sum(1) / zone.reshape(len(zone), -1).sum(1))
    print(f"| {n} | {len(maps)} | {tied:.2f} | {peak_in_tumor(maps, les[n].mask, zone):.3f} | {chance:.3f} |")
sigma, rows = choose_peak_sigma(raw, data, op, PEAK_SIGMAS)
print("\n| peak sigma px | real | simulated | mean |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['peak_sigma_px']:g} | {r['peak_in_tumor_real']:.3f} | {r['peak_in_tumor_simulated']:.3f} | "
          f"{r['peak_in_tumor']:.3f} |")  # fmt: skip
print(f"\nthe release's rule would choose {sigma:g} px (the release recomputes the maps; they match these to 1e-5)")

"""Described after the release (chooses nothing): where the shipped bundle's peaks land on each half,
split into what the bug fix alone does (unclipped evidence at the map's own 1 px) and what the chosen
6 px adds, beside the unguided map (S = 0) under the same peak rule, with intervals over patients.

    python model_runs/20261126-map-postprocessing/peak_by_half.py
"""

import dataclasses
import sys

sys.path.insert(0, "model_runs/20261126-bright-lesions")
from pancdiff.evaluate import build_eval_set, peak_hits, setting_maps, zone_maps  # noqa: E402
from pancdiff.metrics import case_interval  # noqa: E402
from pancdiff.postprocess import peak_evidence  # noqa: E402
from pancdiff.progress import QUIET  # noqa: E402
from shipped import bundle_and_halves  # noqa: E402

bundle, tune_cases, test_cases = bundle_and_halves()
op = bundle.operating_point
print(f"{bundle.model_id}: {op.guidance} S={op.scale:g} N={op.noise_level}, peak sigma {op.peak_sigma_px} px\n")
print(
    "| half | set | patients | map | clipped map, 1 px (old) | unclipped, 1 px (fix only) | unclipped, 6 px (shipped) |"
)  # noqa: E501
print("|---|---|---|---|---|---|---|")
for half, cases, seed in (("tuning", tune_cases, 11), ("test", test_cases, 22)):
    data = build_eval_set("../shared/data/pancreas-tc", bundle, set(cases), 0.8, seed=seed)
    for label, cfg in (("guided", op), ("S = 0", dataclasses.replace(op, scale=0.0))):
        raw = setting_maps(bundle, cfg, data, QUIET)
        for name, les in data.lesions.items():
            maps = zone_maps(raw[name], les.zone, cfg)
            cells = []
            for peaks in (
                maps,
                peak_evidence(raw[name], les.zone, maps, dataclasses.replace(cfg, peak_sigma_px=1.0)),
                peak_evidence(raw[name], les.zone, maps, cfg),
            ):
                hits = peak_hits(peaks, les.mask, les.zone)
                lo, hi = case_interval(hits, les.cases)
                cells.append(f"{hits.mean():.3f} ({lo:.2f}-{hi:.2f})")
            print(f"| {half} | {name} | {len(set(les.cases))} | {label} | " + " | ".join(cells) + " |", flush=True)

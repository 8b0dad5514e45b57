"""Judge the intensity-guided spread by rule.md on the tuning half (test half untouched).

    python model_runs/20261201-intensity-guided-map/study.py CACHE.npz   # → stdout, study.json

CACHE.npz: ``cache.py``'s raw maps of the shipped bundle.
"""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.evaluate import best_allowed, choose_smoothing, zone_maps
from pancdiff.metrics import dice
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cache import canvas_sets, tuning_set  # noqa: E402
from spread import spread  # noqa: E402

SIGMAS, MAX_FP = (1.0, 2.0), 0.02
CONTROL = {"dice": 0.543, "dice_real": 0.495, "dice_simulated": 0.591}
BAR, SIM_SLACK, AUPRC_SLACK = 0.02, 0.01, 0.01
VARIANTS = list(itertools.product(("mean", "max"), (3.0, 6.0, 10.0), (10.0, 20.0, 40.0)))


def variant_name(variant: tuple) -> str:
    form, s_px, s_hu = variant
    return f"{form}, σs {s_px:g} px, σr {s_hu:g} HU"


def judge(raw: dict, tune, op) -> dict:
    chosen, rows = choose_smoothing(raw, tune, op, SIGMAS, MAX_FP)
    row = rows[best_allowed(rows, MAX_FP)]
    les = tune.lesions["real"]
    cand = zone_maps(raw["real"], les.zone, chosen) >= chosen.threshold
    inter = (cand & les.mask).sum()
    per = np.array([dice(c, g) for c, g in zip(cand, les.mask)])
    frac = les.mask.sum((1, 2)) / les.zone.sum((1, 2))
    small = frac < np.median(frac)
    keys = ("dice", "dice_real", "dice_simulated", "auprc_real", "auprc_simulated", "fp_fraction", "threshold",
            "smooth_sigma_px", "normalization")  # fmt: skip
    return {
        **{k: row[k] for k in keys},
        "recall_real": float(inter / les.mask.sum()),
        "precision_real": float(inter / max(cand.sum(), 1)),
        "dice_real_smaller_half": float(per[small].mean()),
        "dice_real_larger_half": float(per[~small].mean()),
    }


def line(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} "
        f"| {r['auprc_simulated']:.3f} | {r['fp_fraction']:.3f} | {r['recall_real']:.3f} / {r['precision_real']:.3f} "
        f"| {r['dice_real_smaller_half']:.3f} / {r['dice_real_larger_half']:.3f} | {r['threshold']:.2f} "
        f"| {r['smooth_sigma_px']:g} |"
    )


HEADER = (
    "| map | objective | real Dice | sim Dice | real AUPRC | sim AUPRC | healthy FP | real recall / precision "
    "| real Dice smaller / larger half | threshold | px |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def score(part: str, base: dict, variants: list, sets: dict, tune, op) -> dict:
    """The control and each variant of one map (the heatmap or its guided part), printed as they come."""
    title = "heatmap (guided + head)" if part == "raw" else "guided map alone (the fallback)"
    print(f"\n## {title}\n{HEADER}")
    out = {"control": judge(base, tune, op)}
    print(line("control (shipped)", out["control"]), flush=True)
    for variant in variants:
        form, s_px, s_hu = variant
        maps = {k: spread(base[k], x, z, s_px, s_hu, form) for k, (x, _, z) in sets.items()}
        out[variant_name(variant)] = judge(maps, tune, op)
        print(line(variant_name(variant), out[variant_name(variant)]), flush=True)
    return out


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    tune = tuning_set(bundle)
    cache = np.load(sys.argv[1])
    sets = canvas_sets(tune)
    print(f"bundle {bundle.model_id}; tuning half; slices { ({k: len(v[0]) for k, v in sets.items()}) }")
    maps = {part: {name: cache[f"{name}_{part}"] for name in sets} for part in ("raw", "guided")}
    record = {"raw": score("raw", maps["raw"], VARIANTS, sets, tune, op)}
    best_variant = max(VARIANTS, key=lambda v: record["raw"][variant_name(v)]["dice"])
    best_name = variant_name(best_variant)
    best, ctl = record["raw"][best_name], record["raw"]["control"]
    checks = {
        "objective >= control + 0.02": best["dice"] >= CONTROL["dice"] + BAR,
        "real Dice >= control": best["dice_real"] >= CONTROL["dice_real"],
        "simulated Dice >= control - 0.01": best["dice_simulated"] >= CONTROL["dice_simulated"] - SIM_SLACK,
        "real AUPRC >= control - 0.01": best["auprc_real"] >= ctl["auprc_real"] - AUPRC_SLACK,
    }
    print(f"\nbest variant by objective: {best_name}")
    for k, v in checks.items():
        print(f"- {k}: {'yes' if v else 'no'}")
    record["best"], record["checks"] = best_name, checks
    record["taken"] = best_name if all(checks.values()) else None
    print(f"taken by the rule: {record['taken']}", flush=True)
    record["guided"] = score("guided", maps["guided"], [best_variant], sets, tune, op)
    (HERE / "study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

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
from cache import tuning_set  # noqa: E402
from spread import spread  # noqa: E402

SIGMAS, MAX_FP = (1.0, 2.0), 0.02
CONTROL = {"dice": 0.543, "dice_real": 0.495, "dice_simulated": 0.591}
BAR, SIM_SLACK, AUPRC_SLACK = 0.02, 0.01, 0.01
VARIANTS = list(itertools.product(("mean", "max"), (3.0, 6.0, 10.0), (10.0, 20.0, 40.0)))


def arrays(tune) -> dict:
    h = tune.healthy
    out = {name: (les.x, les.zone) for name, les in tune.lesions.items()}
    out["healthy"] = (tune.x[h], tune.zone[h])
    return out


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


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    tune = tuning_set(bundle)
    cache = np.load(sys.argv[1])
    sets = arrays(tune)
    print(f"bundle {bundle.model_id}; tuning half; slices { ({k: len(v[0]) for k, v in sets.items()}) }")
    record = {}
    for part in ("raw", "guided"):
        base = {name: cache[f"{name}_{part}"] for name in sets}
        print(f"\n## {'heatmap (guided + head)' if part == 'raw' else 'guided map alone (the fallback)'}\n{HEADER}")
        record[part] = {"control": judge(base, tune, op)}
        print(line("control (shipped)", record[part]["control"]), flush=True)
        variants = VARIANTS if part == "raw" else [best_variant]  # noqa: F821 (set after the heatmap's pass)
        for form, s_px, s_hu in variants:
            name = f"{form}, σs {s_px:g} px, σr {s_hu:g} HU"
            maps = {k: spread(base[k], x, z, s_px, s_hu, form) for k, (x, z) in sets.items()}
            record[part][name] = judge(maps, tune, op)
            print(line(name, record[part][name]), flush=True)
        if part == "raw":
            ranked = [v for v in VARIANTS if f"{v[0]}, σs {v[1]:g} px, σr {v[2]:g} HU" in record["raw"]]
            best_variant = max(ranked, key=lambda v: record["raw"][f"{v[0]}, σs {v[1]:g} px, σr {v[2]:g} HU"]["dice"])
            best_name = f"{best_variant[0]}, σs {best_variant[1]:g} px, σr {best_variant[2]:g} HU"
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
    (HERE / "study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The addendum of rule.md: the shipped map and head D combined after each is calibrated on the tuning
healthy slices (max and mean), judged by the same rule as ``judge.py``.

    python model_runs/20261130-lesion-head/judge_combined.py HEAD_DIR   # → stdout, judge_combined.json
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import best_allowed, build_eval_set, calibrate_map_scale, choose_smoothing, score_maps
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gen_more import DATA  # noqa: E402
from head import load_head  # noqa: E402
from judge import MAX_FP, SIGMAS, candidate_maps  # noqa: E402

CONTROL_DICE, CONTROL_REAL, BAR = 0.475, 0.457, 0.02


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    heads = {"D": load_head(Path(sys.argv[1]), "D", op)}
    tune = build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)
    h = tune.healthy
    sets = {name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()}
    sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
    by_set = {name: candidate_maps(bundle, heads, *arr) for name, arr in sets.items()}
    unit = {k: calibrate_map_scale(by_set["healthy"][k], tune.zone[h], 1.0) for k in ("shipped (control)", "head D")}
    print(f"calibration units (1 px, tuning healthy): {unit}")
    combine = {"max(shipped, D)": np.maximum, "mean(shipped, D)": lambda a, b: (a + b) / 2}
    print("| candidate | objective | real Dice | simulated Dice | real AUPRC | simulated AUPRC | healthy FP "
          "| peak in tumor real / sim | threshold | px |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    record = {}
    for name, f in combine.items():
        raw = {
            s: f(m["shipped (control)"] / unit["shipped (control)"], m["head D"] / unit["head D"]).astype(np.float32)
            for s, m in by_set.items()
        }
        chosen, rows = choose_smoothing(raw, tune, op, SIGMAS, MAX_FP)
        row = rows[best_allowed(rows, MAX_FP)]
        scored = score_maps(raw, tune, chosen)
        keys = ("dice", "dice_real", "dice_simulated", "auprc_real", "auprc_simulated", "fp_fraction", "threshold")
        r = record[name] = {
            **{k: row[k] for k in keys},
            "smooth_sigma_px": row["smooth_sigma_px"],
            "normalization": row["normalization"],
            "peak_real": scored["real"]["peak_in_tumor"],
            "peak_simulated": scored["simulated"]["peak_in_tumor"],
        }
        print(
            f"| {name} | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} "
            f"| {r['auprc_simulated']:.3f} | {r['fp_fraction']:.3f} | {r['peak_real']:.3f} / {r['peak_simulated']:.3f} "
            f"| {r['threshold']:.2f} | {r['smooth_sigma_px']:g} |",
            flush=True,
        )
    passing = [n for n, r in record.items() if r["dice"] >= CONTROL_DICE + BAR and r["dice_real"] >= CONTROL_REAL]
    taken = max(passing, key=lambda n: record[n]["dice"]) if passing else None
    print(f"\ntaken by the addendum: {taken}")
    out = {"units": unit, "record": record, "taken": taken}
    (HERE / "judge_combined.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

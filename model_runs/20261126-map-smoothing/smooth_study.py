"""The heatmap's smoothing, chosen as the release now does (rule.md), on the shipped bundle's tuning half.

    python model_runs/20261126-map-smoothing/smooth_study.py [MODEL_DIR]

Raw maps at the bundle's operating point (``setting_maps``), then ``choose_smoothing`` over
1, 2, 3, 4 and 6 px; one line per smoothing with its best row under the healthy bound.
"""

import json
import sys
from pathlib import Path

import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import best_by, build_eval_set, choose_smoothing, setting_maps
from pancdiff.progress import QUIET
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"
SIGMAS = (1.0, 2.0, 3.0, 4.0, 6.0)


def tuning_maps(model_dir=None):
    """(bundle, its operating point, the tuning half, raw maps of every set at that point)."""
    torch.set_num_threads(2)
    bundle = load_bundle(model_dir, "cpu")
    op = bundle.operating_point
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    return bundle, op, data, setting_maps(bundle, op, data, QUIET)


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    chosen, rows = choose_smoothing(raw, data, op, SIGMAS, 0.02)
    best = best_by(rows, "smooth_sigma_px", 0.02)
    print(f"bundle {bundle.model_id}: {op.guidance} guidance, {op.map_kind} map, S = {op.scale:g}, "
          f"N = {op.noise_level}")  # fmt: skip
    print("| smoothing | normalization | floor | threshold | objective | real Dice | simulated Dice | real AUPRC "
          "| simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in best:
        print(f"| {r['smooth_sigma_px']:g} px | {r['normalization']} | {r['min_anomaly']:g} | {r['threshold']:.2f} "
              f"| {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} "
              f"| {r['auprc_simulated']:.3f} | {r['fp_fraction']:.3f} |")  # fmt: skip
    print(f"\nchosen: {chosen.smooth_sigma_px:g} px, {chosen.normalization}, threshold {chosen.threshold}")
    (HERE / "smooth_study.json").write_text(json.dumps({"best_by_smoothing": best}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

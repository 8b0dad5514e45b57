"""The best signed and unsigned rows of the release's search (rule.md), which `--tune-only` does not print.

    python model_runs/20261126-signed-maps/signed_rows.py [MODEL_DIR]

The bundle's classifier and UNet, its split's tuning half, the release's grid and rule
(``choose_operating_point``: best mean Dice over real and simulated lesions with healthy false
positives <= 0.02), run once over all four map kinds; then the best allowed row of each kind.
"""

import json
import sys
from pathlib import Path

import torch
from pancdiff.config import MAP_KINDS, DetectConfig
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import best_allowed, build_eval_set, choose_operating_point
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "pancreas-tc"


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None, "cpu")
    bundle.operating_point = DetectConfig(steps=4, grid_power=1.5, guidance_step="extrapolated")  # as the release
    tune_cases = set(tuning_test_halves(bundle.card["split"]["val_cases"])[0])
    data = build_eval_set(DATA, bundle, tune_cases, 0.8, seed=11)
    _, rows = choose_operating_point(bundle, data, [0.0, 5.0, 10.0, 20.0, 50.0], [50, 100, 200], 4, 0.02)
    keys = ("guidance", "map_kind", "scale", "noise_level", "normalization", "min_anomaly", "threshold", "dice",
            "dice_real", "dice_simulated", "auprc_real", "auprc_simulated", "fp_fraction")  # fmt: skip
    best = {}
    for kind in MAP_KINDS:
        of_kind = [r for r in rows if r["map_kind"] == kind and r["scale"] > 0]
        best[kind] = {k: of_kind[best_allowed(of_kind, 0.02)][k] for k in keys}
    overall = rows[best_allowed(rows, 0.02)]
    print("| map kind | guidance | S | N | normalization | floor | threshold | objective | real Dice | simulated Dice "
          "| real AUPRC | simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, r in best.items():
        print(f"| {kind} | {r['guidance']} | {r['scale']:g} | {r['noise_level']} | {r['normalization']} "
              f"| {r['min_anomaly']:g} | {r['threshold']:.2f} | {r['dice']:.3f} | {r['dice_real']:.3f} "
              f"| {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} | {r['auprc_simulated']:.3f} "
              f"| {r['fp_fraction']:.3f} |")  # fmt: skip
    print(f"\nthe search's choice over all kinds: {overall['map_kind']} (objective {overall['dice']:.3f})")
    out = {"best_by_kind": best, "chosen": {k: overall[k] for k in keys}}
    (HERE / "signed_rows.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

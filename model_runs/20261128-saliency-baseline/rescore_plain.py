"""Re-score the S = 0 rows of a release's test-half validation with the fixed ``evaluate`` (no saliency in
the plain reconstruction), on the release's own test set (seed 22), and write them into its model.json.

    python model_runs/20261128-saliency-baseline/rescore_plain.py BUNDLE_DIR DATA

The release that shipped `-saliency` ran before the fix, so its S = 0 rows took the saliency too.
Nothing else in the record changes.
"""

import dataclasses
import json
import sys
from pathlib import Path

import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set, score_maps, setting_maps
from pancdiff.progress import QUIET
from pancdiff.weights import load_bundle


def main(bundle_dir: str, data_dir: str) -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(bundle_dir, "cpu")
    card_path = Path(bundle_dir) / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    _, test_cases = tuning_test_halves(card["split"]["val_cases"])
    spacing = card["training"]["classifier"]["assumed_spacing_mm"]
    test = build_eval_set(data_dir, bundle, set(test_cases), spacing, seed=22)
    op = bundle.operating_point
    plain = dataclasses.replace(op, scale=0.0, normalization="slice", min_anomaly=0.0, saliency_weight=0.0)
    scored = score_maps(setting_maps(bundle, plain, test, QUIET), test, plain)
    v = card["validation"]
    for name in v["localization"]:
        before = v["localization"][name]["no_guidance"]
        v["localization"][name]["no_guidance"] = scored[name]
        print(f"{name}: Dice {before['dice']:.3f} -> {scored[name]['dice']:.3f}, "
              f"AUPRC {before['auprc']:.3f} -> {scored[name]['auprc']:.3f}")  # fmt: skip
    print(f"healthy FP {v['healthy']['no_guidance']['fp_fraction']:.3f} -> {scored['healthy']['fp_fraction']:.3f}")
    v["healthy"]["no_guidance"] = scored["healthy"]
    v["no_guidance_rescored"] = "S = 0 rows re-scored after the release without the saliency (rescore_plain.py)"
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])

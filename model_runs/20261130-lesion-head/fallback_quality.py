"""What the heatmap scores where the lesion head does not run (session 14, descriptive, tuning half).

    python model_runs/20261130-lesion-head/fallback_quality.py   # → stdout (fallback_quality.txt)

The shipped bundle at its own operating point, twice: as shipped (K = 2 + map student + lesion head) and
with the learned parts off (``map_student=False``: the K = 4 decode, the guided map alone in the heatmap's
units by the release's fallback gain), which is what a CT outside the input domain gets, at the same
threshold 0.65. Nothing is chosen from it.
"""

import dataclasses
import sys
from pathlib import Path

import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set, score_maps, setting_maps
from pancdiff.progress import QUIET
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_more import DATA  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    tune = build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)
    print(f"bundle {bundle.model_id}; tuning half; threshold {op.threshold}, {op.normalization} normalization")
    print("| run | passes | real Dice | real peak | simulated Dice | simulated peak | healthy FP |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg in (("shipped (student + head)", op), ("learned parts off (K = 4, guided alone)",
                                                          dataclasses.replace(op, map_student=False))):
        s = score_maps(setting_maps(bundle, cfg, tune, QUIET), tune, cfg)
        print(
            f"| {name} | {Detector(bundle, cfg).passes_per_slice} | {s['real']['dice']:.3f} "
            f"| {s['real']['peak_in_tumor']:.3f} | {s['simulated']['dice']:.3f} "
            f"| {s['simulated']['peak_in_tumor']:.3f} "
            f"| {s['healthy']['fp_fraction']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

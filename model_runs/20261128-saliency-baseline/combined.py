"""The guided map and the saliency combined (rule.md, addendum), scored by the release's rule on the tuning half.

    python model_runs/20261128-saliency-baseline/combined.py [MODEL_DIR]

The record was made with `-realhalf-k4` (git show e60200c:PancDiffSlicer/Resources/Models), the guided
map alone; the shipped bundle now takes the saliency itself.

Each map is divided by its own calibrated scale (the healthy tuning slices at 1 px), then combined
by mean or max, then ``choose_smoothing`` over 1, 2, 3 px.
"""

import json
import sys

import numpy as np
from pancdiff.detection import Detector
from pancdiff.evaluate import best_by, calibrate_map_scale, choose_smoothing, saliency_maps
from saliency import HERE, SIGMAS, row_text, tuning_maps

COMBINE = {"mean": lambda a, b: (a + b) / 2, "max": np.maximum}


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    h = data.healthy
    sal = saliency_maps(Detector(bundle, op), data)
    scale_g = calibrate_map_scale(raw["healthy"], data.zone[h], 1.0)
    scale_s = calibrate_map_scale(sal["healthy"], data.zone[h], 1.0)
    print(f"bundle {bundle.model_id}, tuning half; scales: guidance {scale_g:.4g}, saliency {scale_s:.4g}")
    print("| map | smoothing | normalization | threshold | objective | real Dice | simulated Dice | real AUPRC "
          "| simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    record = {}
    for kind, f in COMBINE.items():
        maps = {name: f(raw[name] / scale_g, sal[name] / scale_s) for name in raw}
        _, rows = choose_smoothing(maps, data, op, SIGMAS, 0.02)
        record[kind] = best_by(rows, "smooth_sigma_px", 0.02)
        for r in record[kind]:
            print(row_text(f"guided + saliency, {kind}", r))
    (HERE / "combined.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

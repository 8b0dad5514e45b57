"""The healing change weighed by the classifier's gradient, scored by the release's rule on the tuning half.

    python model_runs/20261126-healing-attribution/attribution_study.py [MODEL_DIR]   # repository root

a = max(0, (x̂(S) − x̂(0)) · ∇ₓ log p(healthy | x, 0)) from one ``Detector.map_grid`` call at the
operating point with S = 0 beside it (the same latent) and the classifier's signed gradient at t = 0
(rule.md). Then alone and max-combined with the shipped map, ``choose_smoothing`` over 1, 2, 3 px.
"""

import json
import sys
from pathlib import Path

import numpy as np
from pancdiff.detection import Detector
from pancdiff.evaluate import calibrate_map_scale

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261128-saliency-baseline"))
from saliency import HEADER, gradients, score_candidates, tuning_maps  # noqa: E402  (the shipped bundle's tuning maps)


def attribution(det: Detector, x: np.ndarray, valid: np.ndarray, zone: np.ndarray) -> np.ndarray:
    cfg = det.cfg
    grid = det.map_grid(x, valid, [0.0, cfg.scale], zone=zone)
    healing = grid["reconstruction"][(cfg.guidance, float(cfg.scale))] - grid["reconstruction"][(cfg.guidance, 0.0)]
    return np.where(valid, np.maximum(healing * gradients(det, x, valid, zone), 0.0), 0.0).astype(np.float32)


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    det = Detector(bundle, op)
    h = data.healthy
    attr = {name: attribution(det, les.x, les.valid, les.zone) for name, les in data.lesions.items()}
    attr["healthy"] = attribution(det, data.x[h], data.valid[h], data.zone[h])
    scale_m = calibrate_map_scale(raw["healthy"], data.zone[h], 1.0)
    scale_a = calibrate_map_scale(attr["healthy"], data.zone[h], 1.0)
    print(f"bundle {bundle.model_id}, tuning half; scales: shipped {scale_m:.4g}, attribution {scale_a:.4g}")
    print(HEADER)
    candidates = {
        "shipped (control)": raw,
        "attribution alone": attr,
        "max(shipped, attribution)": {n: np.maximum(raw[n] / scale_m, attr[n] / scale_a) for n in raw},
    }
    record = score_candidates(candidates, data, op)
    (HERE / "attribution_study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The classifier's class activation map (CAM) in the heatmap, scored by the release's rule on the tuning half.

    python model_runs/20261126-class-activation-map/cam_study.py [MODEL_DIR]   # repository root

The CAM is the per-position tumor-minus-healthy logit of the classifier's log-sum-exp head at t = 0
(``networks.class_evidence``), upsampled to the canvas: the forward pass detection already makes for
the confidence, so it costs no network pass. Each CAM is scored alone and as max(shipped / its scale,
cam / its scale), then ``choose_smoothing`` over 1, 2, 3 px, as session 11 combined the saliency.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.evaluate import calibrate_map_scale
from pancdiff.networks import class_evidence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261128-saliency-baseline"))
from saliency import HEADER, score_candidates, tuning_maps  # noqa: E402  (the shipped bundle's tuning maps)

KINDS = {"cam_relu": lambda e: np.maximum(e, 0.0), "cam_sigmoid": lambda e: 1.0 / (1.0 + np.exp(-e))}


def evidence(classifier, x: np.ndarray, valid: np.ndarray, zone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upsampled evidence e, where it counts: seen by the pool and in the support), each (B, S, S)."""
    es, seens = [], []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            xb = torch.from_numpy(x[i : i + 64])[:, None].float()
            zb = torch.from_numpy(zone[i : i + 64])[:, None]
            _, positions, where = classifier.logits_and_positions(xb, torch.zeros(len(xb), dtype=torch.long), zb)
            e, seen = class_evidence(positions, where, x.shape[-1])
            es.append(e.numpy())
            seens.append(seen.numpy())
    return np.concatenate(es), np.concatenate(seens) & valid


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    h = data.healthy
    ev = {name: evidence(bundle.classifier, les.x, les.valid, les.zone) for name, les in data.lesions.items()}
    ev["healthy"] = evidence(bundle.classifier, data.x[h], data.valid[h], data.zone[h])
    cams = {k: {n: np.where(s, f(e), 0.0).astype(np.float32) for n, (e, s) in ev.items()} for k, f in KINDS.items()}
    scale_m = calibrate_map_scale(raw["healthy"], data.zone[h], 1.0)
    print(f"bundle {bundle.model_id}, tuning half; best row per map under the release's rule (healthy FP <= 0.02)")
    print(f"shipped map scale {scale_m:.4g}; " + ", ".join(
        f"{k} scale {calibrate_map_scale(c['healthy'], data.zone[h], 1.0):.4g}" for k, c in cams.items()))  # fmt: skip
    print(HEADER)
    candidates = {"shipped (control)": raw}
    for k, cam in cams.items():
        scale_c = calibrate_map_scale(cam["healthy"], data.zone[h], 1.0)
        candidates[f"{k} alone"] = cam
        candidates[f"max(shipped, {k})"] = {n: np.maximum(raw[n] / scale_m, cam[n] / scale_c) for n in raw}
    record = score_candidates(candidates, data, op)
    (HERE / "cam_study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

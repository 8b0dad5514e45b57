"""The classifier's saliency at t = 0 as a heatmap, scored by the release's rule on the tuning half (rule.md).

    python model_runs/20261128-saliency-baseline/saliency.py [MODEL_DIR]

The record was made with `-realhalf-k4` (git show e60200c:PancDiffSlicer/Resources/Models), the guided
map alone; the shipped bundle now takes the saliency itself.

One gradient pass per slice (``Detector.grad_log_healthy`` with the pancreas zone), then
``choose_smoothing`` over 1, 2, 3 px, as the release chooses the shipped map's smoothing.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.detection import Detector
from pancdiff.evaluate import best_by, choose_smoothing

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261126-map-smoothing"))
from smooth_study import tuning_maps  # noqa: E402  (the shipped bundle's tuning maps, as its studies take them)

SIGMAS = (1.0, 2.0, 3.0)
KINDS = {"abs": np.abs, "positive": lambda g: np.maximum(g, 0.0)}


def gradients(det: Detector, x: np.ndarray, valid: np.ndarray, zone: np.ndarray) -> np.ndarray:
    """∇ₓ log p(healthy | x, 0) inside the crop's support, (B, S, S)."""
    out = []
    for i in range(0, len(x), 64):
        xb = torch.from_numpy(x[i : i + 64])[:, None].float()
        zb = torch.from_numpy(zone[i : i + 64])[:, None]
        out.append(det.grad_log_healthy(xb, torch.zeros(len(xb), dtype=torch.long), zb)[:, 0].numpy())
    return np.concatenate(out) * valid


def row_text(name: str, r: dict) -> str:
    return (f"| {name} | {r['smooth_sigma_px']:g} px | {r['normalization']} | {r['threshold']:.2f} | {r['dice']:.3f} "
            f"| {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} | {r['auprc_simulated']:.3f} "
            f"| {r['fp_fraction']:.3f} |")  # fmt: skip


HEADER = (
    "| map | smoothing | normalization | threshold | objective | real Dice | simulated Dice | real AUPRC "
    "| simulated AUPRC | healthy FP |\n|---|---|---|---|---|---|---|---|---|---|"
)


def score_candidates(candidates: dict, data, op) -> dict:
    """Each candidate's maps {set: raw} through the release's rule over ``SIGMAS``, its best row per
    smoothing printed as a table row (after ``HEADER``) and returned {candidate: rows} (session 12's studies)."""
    record = {}
    for name, maps in candidates.items():
        _, rows = choose_smoothing(maps, data, op, SIGMAS, 0.02)
        record[name] = best_by(rows, "smooth_sigma_px", 0.02)
        for r in record[name]:
            print(row_text(name, r))
    return record


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    det = Detector(bundle, op)
    h = data.healthy
    grads = {name: gradients(det, les.x, les.valid, les.zone) for name, les in data.lesions.items()}
    grads["healthy"] = gradients(det, data.x[h], data.valid[h], data.zone[h])
    print(f"bundle {bundle.model_id}, tuning half; best row per map under the release's rule (healthy FP <= 0.02)")
    print("| map | smoothing | normalization | threshold | objective | real Dice | simulated Dice | real AUPRC "
          "| simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    record = {}
    candidates = {f"shipped ({op.map_kind} map, S {op.scale:g}, N {op.noise_level}, K {op.steps})": raw}
    candidates |= {f"saliency {k}": {n: f(g) for n, g in grads.items()} for k, f in KINDS.items()}
    for name, maps in candidates.items():
        sigmas = (op.smooth_sigma_px,) if name.startswith("shipped") else SIGMAS
        _, rows = choose_smoothing(maps, data, op, sigmas, 0.02)
        best = best_by(rows, "smooth_sigma_px", 0.02)
        record[name] = best
        for r in best:
            print(row_text(name, r))
    (HERE / "saliency.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

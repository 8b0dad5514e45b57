"""The saliency of several classifiers, averaged, in the heatmap (rule.md). Tuning half.

    python model_runs/20261126-saliency-ensemble/ensemble_study.py [MODEL_DIR]   # repository root

Each member's |∇ₓ log p(healthy | x, 0)| with the pancreas zone (``evaluate.saliency_maps`` through a
``Detector`` on the shipped bundle with that member as its classifier), averaged; then alone and as
max(guided / its scale, mean saliency / its scale), ``choose_smoothing`` over 1, 2, 3 px.
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from pancdiff.detection import Detector
from pancdiff.evaluate import calibrate_map_scale, saliency_maps, setting_maps
from pancdiff.networks import NoisyClassifier
from pancdiff.progress import QUIET
from pancdiff.weights import load_weights_into

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261128-saliency-baseline"))
from saliency import HEADER, score_candidates, tuning_maps  # noqa: E402  (the shipped bundle's tuning maps)

RUNS = HERE.parent
MEMBERS = {
    "Z2": "20261125-zone-classifier/zone_z2_classifier",
    "K": "20261126-real-slices/k_classifier",
    "H": "20261126-real-slices-more/h_classifier",
    "Z1": "20261125-zone-classifier/zone_z1_classifier",
    "L": "20261125-zone-classifier/zone_l_classifier",
    "T": "20261126-noisy-classifier/t_classifier",
    "B": "20261126-bright-lesions/b_classifier",
    "B1": "20261126-blur-augmentation/b1_classifier",
    "B2": "20261126-blur-augmentation/b2_classifier",
    "K2": "20261126-real-slices-more/k2_classifier",
    "GPU": "20261126-gpu-training/gpu_classifier",
}
ENSEMBLES = {"shipped3": ("Z2", "K", "H"), "all11": tuple(MEMBERS)}


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    h = data.healthy
    guided = setting_maps(bundle, dataclasses.replace(op, saliency_weight=0.0), data, QUIET)
    sal = {}
    for name, path in MEMBERS.items():
        clf = NoisyClassifier(bundle.network)
        load_weights_into(clf, RUNS / f"{path}.safetensors")
        member = dataclasses.replace(bundle, classifier=clf.eval())
        sal[name] = saliency_maps(Detector(member, op), data)
    scale_g = calibrate_map_scale(guided["healthy"], data.zone[h], 1.0)
    print(f"bundle {bundle.model_id}, tuning half; guided map scale {scale_g:.4g}")
    print(HEADER)
    candidates = {"shipped (control)": raw}
    for ens, names in {"H alone (control)": ("H",), **ENSEMBLES}.items():
        mean = {n: np.mean([sal[m][n] for m in names], axis=0) for n in raw}
        scale_s = calibrate_map_scale(mean["healthy"], data.zone[h], 1.0)
        if ens != "H alone (control)":
            candidates[f"{ens} saliency alone"] = mean
        combined = {n: np.maximum(guided[n] / scale_g, mean[n] / scale_s) for n in raw}
        candidates[f"max(guided, {ens} saliency)"] = combined
    record = score_candidates(candidates, data, op)
    (HERE / "ensemble_study.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

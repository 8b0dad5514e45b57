"""Cache the shipped bundle's raw tuning-half maps (heatmap and its guided part) for ``study.py``.

    python model_runs/20261201-intensity-guided-map/cache.py OUT.npz

The tuning set is built as the earlier judges built it (``build_eval_set``, seed 11); the test half is
not read.
"""

import sys

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set
from pancdiff.weights import load_bundle

DATA = "../shared/data/pancreas-tc"


def tuning_set(bundle):
    return build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    tune = tuning_set(bundle)
    h = tune.healthy
    sets = {name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()}
    sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
    out = {}
    for name, (x, valid, zone) in sets.items():
        result = Detector(bundle, bundle.operating_point).detect(x, valid, zone=zone)
        out[f"{name}_raw"], out[f"{name}_guided"] = result.anomaly, result.guided
        print(name, len(x), flush=True)
    np.savez_compressed(sys.argv[1], **out)


if __name__ == "__main__":
    main()

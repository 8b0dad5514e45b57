"""Cache the shipped bundle's raw tuning-half maps (heatmap and its guided part) for ``study.py``; the
tuning set and the per-set canvases every script of this study reads.

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
from scipy import ndimage

DATA = "../shared/data/pancreas-tc"


def tuning_set(bundle):
    return build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)


def canvas_sets(tune) -> dict:
    """{"real", "simulated", "healthy": (x, valid, zone)}: what the maps are computed and scored on."""
    h = tune.healthy
    return {**{name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()},
            "healthy": (tune.x[h], tune.valid[h], tune.zone[h])}  # fmt: skip


def organ(zone: np.ndarray, margin_px: int) -> np.ndarray:
    """(B, S, S) about the pancreas, tumor included: each zone eroded by its margin."""
    return np.stack([ndimage.binary_erosion(z, iterations=margin_px) for z in zone])


def smoothed_hu(x: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Canvases smoothed at 1 px, back in HU."""
    lo, hi = hu_window
    return ndimage.gaussian_filter(np.asarray(x, np.float32), (0, 1, 1)) * (hi - lo) + lo


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    out = {}
    for name, (x, valid, zone) in canvas_sets(tuning_set(bundle)).items():
        result = Detector(bundle, bundle.operating_point).detect(x, valid, zone=zone)
        out[f"{name}_raw"], out[f"{name}_guided"] = result.anomaly, result.guided
        print(name, len(x), flush=True)
    np.savez_compressed(sys.argv[1], **out)


if __name__ == "__main__":
    main()

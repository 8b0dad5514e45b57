"""Candidates grown from their cores (hysteresis) on the tuning half (see rule.md); nothing here changes
the bundle.

    python model_runs/20261126-candidate-growth/grow_study.py /work/runs/s6/tune_maps.npz
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from pancdiff.metrics import dice
from pancdiff.weights import load_bundle
from scipy import ndimage

_spec = importlib.util.spec_from_file_location(
    "component_study", Path(__file__).resolve().parents[1] / "20261126-component-filter" / "component_study.py"
)
STUDY = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(STUDY)  # the release's rule on cached maps, shared with the size study

RATIOS = (1.0, 0.8, 0.7, 0.6, 0.5, 0.4)


def grow(m: np.ndarray, threshold: float, ratio: float) -> np.ndarray:
    """Pixels at >= ratio * threshold that are 8-connected to a pixel at >= threshold."""
    seeds = m >= threshold
    if ratio >= 1 or not seeds.any():
        return seeds
    labels, n = ndimage.label(m >= ratio * threshold, structure=STUDY.EIGHT)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels]


def main(path: str) -> None:
    d = np.load(path)
    base = load_bundle(None, "cpu").operating_point
    names = ("real", "simulated")
    zones = {n: d[f"{n}|zone"] for n in names}
    masks = {n: d[f"{n}|mask"] for n in names}
    hz = d["healthy|zone"]
    fraction = masks["real"].sum((1, 2)) / zones["real"].sum((1, 2))
    small = fraction < np.median(fraction)
    whole = np.array([dice(z, g) for z, g in zip(zones["real"], masks["real"])])
    print(f"tuning half: {len(masks['real'])} real ({small.sum()} in the smaller half), "
          f"{len(masks['simulated'])} simulated, {len(hz)} healthy slices")  # fmt: skip
    print(f"marking the whole zone: real Dice {whole.mean():.3f} (smaller half {whole[small].mean():.3f}, "
          f"larger half {whole[~small].mean():.3f})\n")  # fmt: skip
    print("| map | r | chosen | Dice real | real, smaller half | real, larger half | Dice sim | objective "
          "| healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for label, key in (("shipped (guidance, S 5)", "guidance|5"), ("unguided |x − x̂| (S 0)", "input|0")):
        raw = {n: d[f"{n}|{key}"] for n in (*names, "healthy")}
        for ratio in RATIOS:
            r, chosen = STUDY.choose(raw, zones, masks, hz, base, lambda m, t, q=ratio: grow(m, t, q), small)
            print(f"| {label} | {ratio:g} | {chosen} | {r['dice_real']:.3f} | {r['dice_real_small']:.3f} | "
                  f"{r['dice_real_large']:.3f} | {r['dice_simulated']:.3f} | {r['dice']:.3f} | "
                  f"{r['fp_fraction']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])

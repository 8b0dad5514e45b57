"""Diagnostic (tuning half, nothing chosen on it): does a larger N reach more of a real tumor?

    python model_runs/20261201-intensity-guided-map/noise_levels.py CACHE.npz   # 8 min → noise_levels.txt

The paper runs N = 200-300 so that the model can heal larger regions. At N = 100 and 200 the shipped
bundle runs its guided map (K keeps the card's step size: 8 and 16; the learned parts run only at the
card's N), scored by the release's rule as ``study.py`` scores. Rows: the shipped heatmap and the
guided map alone at N = 50 (from CACHE.npz, ``cache.py``), then N = 100 and 200.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.detection import Detector
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache import canvas_sets, tuning_set  # noqa: E402
from study import HEADER, judge, line  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    tune, op = tuning_set(bundle), bundle.operating_point
    sets = canvas_sets(tune)
    cache = np.load(sys.argv[1])
    print(f"bundle {bundle.model_id}; tuning half\n{HEADER}")
    for part, name in (("raw", "N 50: shipped heatmap (K 2, student, head)"), ("guided", "N 50: its guided map alone")):
        print(line(name, judge({k: cache[f"{k}_{part}"] for k in sets}, tune, op)), flush=True)
    for noise in (100, 200):
        cfg = op.at(noise)
        raw = {k: Detector(bundle, cfg).detect(x, v, zone=z).anomaly for k, (x, v, z) in sets.items()}
        print(line(f"N {noise}, K {cfg.steps}: guided map", judge(raw, tune, op)), flush=True)


if __name__ == "__main__":
    main()

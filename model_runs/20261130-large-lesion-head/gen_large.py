"""Large simulated lesions for head L (rule.md): the lesion copies of new draws at 25-50 mm, with the
head's inputs (K = 2 guided map, saliency) at the shipped setting.

    python model_runs/20261130-large-lesion-head/gen_large.py OUT_DIR SEED [SEED ...]

As ``../20261130-lesion-head/gen_more.py``, but only the simulated copies (the healthy canvases of the
other draws are already there) and with ``LesionConfig(diameter_mm=(25, 50))``.
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.evaluate import build_eval_set
from pancdiff.lesions import LesionConfig
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "20261130-lesion-head"))
from gen_more import DATA, write_parts  # noqa: E402

LARGE = LesionConfig(diameter_mm=(25.0, 50.0))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(None, "cpu")
    for seed in map(int, sys.argv[2:]):
        data = build_eval_set(DATA, bundle, set(bundle.card["split"]["train_cases"]), 0.8, seed=seed, lesions=LARGE)
        sim = data.lesions["simulated"]
        c = {"x": sim.x.astype(np.float32), "valid": sim.valid, "zone": sim.zone, "case": np.array(sim.cases),
             "mask": sim.mask}  # fmt: skip
        print(f"seed {seed}: {len(c['x'])} large-lesion canvases", flush=True)
        write_parts(bundle, out, seed, c)


if __name__ == "__main__":
    main()

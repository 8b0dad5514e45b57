"""Large simulated lesions for head L (rule.md): the lesion copies of new draws at 25-50 mm, with the
head's inputs (K = 2 guided map, saliency) at the shipped setting.

    python model_runs/20261130-large-lesion-head/gen_large.py OUT_DIR SEED [SEED ...]

As ``../20261130-lesion-head/gen_more.py``, but only the simulated copies (the healthy canvases of the
other draws are already there) and with ``LesionConfig(diameter_mm=(25, 50))``.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pancdiff.evaluate import build_eval_set
from pancdiff.lesions import LesionConfig
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "20261130-lesion-head"))
from gen_more import DATA, PART, inputs_at  # noqa: E402

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
        for start in range(0, len(c["x"]), PART):
            path = out / f"seed{seed}_part_{start // PART:03d}.npz"
            if path.exists():
                continue
            t0 = time.time()
            sl = slice(start, start + PART)
            got = inputs_at(bundle, c["x"][sl], c["valid"][sl], c["zone"][sl])
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **{k: v[sl] for k, v in c.items()}, **got)
            tmp.rename(path)
            print(f"  {path.name}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

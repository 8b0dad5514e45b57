"""More training-half canvases for the lesion head (rule.md): NIH healthy slices and their simulated
lesions, with the head's inputs at the shipped setting (K = 2 guided map, saliency) and the lesion masks.

    python model_runs/20261130-lesion-head/gen_more.py OUT_DIR SEED [SEED ...]

One ``build_eval_set`` per seed (another label-blind cut, other lesions); MSD tumor slices are dropped.
Parts of 128 canvases, written whole (tmp then rename) so a stopped run loses nothing.
"""

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set
from pancdiff.weights import load_bundle

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pancreas-tc"
PART, STEPS = 128, 2


def healthy_and_simulated(bundle, seed: int) -> dict:
    """{x, valid, zone, case, mask} of the training half's healthy slices (mask empty) and lesion copies."""
    data = build_eval_set(DATA, bundle, set(bundle.card["split"]["train_cases"]), 0.8, seed=seed)
    sim, h = data.lesions["simulated"], data.healthy
    return {
        "x": np.concatenate([data.x[h], sim.x]).astype(np.float32),
        "valid": np.concatenate([data.valid[h], sim.valid]),
        "zone": np.concatenate([data.zone[h], sim.zone]),
        "case": np.array([c for c, keep in zip(data.cases, h) if keep] + list(sim.cases)),
        "mask": np.concatenate([np.zeros_like(data.valid[h]), sim.mask]),
    }


def inputs_at(bundle, x, valid, zone) -> dict:
    cfg = dataclasses.replace(bundle.operating_point, steps=STEPS, map_student=False)
    grid = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], with_probability=True, zone=zone)
    return {"map2": grid["anomaly"][(cfg.guidance, cfg.map_kind, float(cfg.scale))], "saliency": grid["saliency"]}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(None, "cpu")
    for seed in map(int, sys.argv[2:]):
        c = healthy_and_simulated(bundle, seed)
        print(f"seed {seed}: {len(c['x'])} canvases ({int(c['mask'].any((1, 2)).sum())} with a lesion)", flush=True)
        write_parts(bundle, out, seed, c)


def write_parts(bundle, out: Path, seed: int, c: dict) -> None:
    """``c``'s canvases with the head's inputs, in parts of ``PART`` (existing parts are kept)."""
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

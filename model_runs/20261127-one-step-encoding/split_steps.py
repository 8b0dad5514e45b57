"""Fewer encoding than decoding steps (rule.md): r of the guidance map against the paper-exact run at
N = 50, S = 5 and 10, on the 80 tuning-half canvases of ../20261126-fast-decode-limit/choice_set.py.

    python model_runs/20261127-one-step-encoding/split_steps.py   (repository root) → split_steps.txt
"""

import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "20261126-fast-decode-limit"))
from choice_set import choice_set, paper_exact  # noqa: E402
from pancdiff.detection import Detector, normalize_maps  # noqa: E402
from pancdiff.metrics import dice, pearson  # noqa: E402

CANDIDATES = [(ke, kd, solver, step) for ke, kd in ((1, 3), (2, 3), (1, 4))
              for solver in ("ddim", "dpm2m") for step in ("integrated", "extrapolated")]  # fmt: skip


def guidance_map(bundle, op, x, valid, zone, ke, kd, solver, step):
    """Normalized guidance map with ``ke`` encoding and ``kd`` decoding steps."""
    enc = dataclasses.replace(op, steps=ke, solver=solver, guidance_step=step)
    latents = Detector(bundle, enc).map_grid(x, valid, [0.0], kinds=("input",), zone=zone)["latents"]
    dec = dataclasses.replace(op, steps=kd, solver=solver, guidance_step=step)
    raw = Detector(bundle, dec).map_grid(x, valid, [op.scale], zone=zone, latents=latents)["anomaly"]
    return normalize_maps(raw[("noisy", "guidance", op.scale)], valid, op)


def main() -> None:
    bundle, shipped, x, valid, zone = choice_set()
    torch.set_num_threads(2)
    print(f"bundle {bundle.model_id}: N {shipped.noise_level}, shipped K {shipped.steps}, "
          f"{shipped.guidance_step} step, grid power {shipped.grid_power:g}; {len(x)} canvases",
          flush=True)  # fmt: skip
    rows = [(shipped.steps, shipped.steps, shipped.solver, shipped.guidance_step)] + CANDIDATES
    for scale in (5.0, 10.0):
        op = dataclasses.replace(shipped, scale=scale)
        start = time.time()
        _, reference, _ = paper_exact(bundle, op, x, valid, zone)
        print(f"S {scale:g}: paper-exact reference {time.time() - start:.0f} s", flush=True)
        for ke, kd, solver, step in rows:
            got = guidance_map(bundle, op, x, valid, zone, ke, kd, solver, step)
            r = pearson(reference[valid], got[valid])
            agree = dice(reference >= op.threshold, got >= op.threshold)
            print(f"S {scale:4g} enc K {ke} dec K {kd} {solver:5s} {step:12s} passes {ke + 3 * kd:2d} "
                  f"r {r:.3f} Dice {agree:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

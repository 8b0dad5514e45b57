"""Rejected idea: the guidance map linearized (no guided decode; classifier gradients on the encoding path,
weighted by the integral of sqrt(1 - a) d sigma), on the choice set of choice_set.py, against the
paper-exact guidance map at the shipped N = 50.
python model_runs/20261126-fast-decode-limit/linearized_map.py (repository root)."""

import time

import numpy as np
import torch
from choice_set import choice_set, paper_exact
from pancdiff.detection import Detector, evaluations_per_slice, normalize_maps
from pancdiff.diffusion import ddim_move, step_grid
from pancdiff.metrics import dice, pearson

bundle, op, x, valid, zone = choice_set()
N = op.noise_level
t0 = time.time()
ref_raw, reference, _ = paper_exact(bundle, op, x, valid, zone)
ref_passes = evaluations_per_slice(op.paper_exact())
print(f"reference N={N} passes {ref_passes} {time.time() - t0:.0f}s", flush=True)

det = Detector(bundle, op)
ab = det.alpha_bar
xt = torch.from_numpy(x)[:, None]
zt = torch.from_numpy(zone)[:, None]


def linear_map(K, power, rule):
    grid = step_grid(N, K, power)
    states = [xt]
    y = xt
    for a, b in zip(grid[:-1], grid[1:]):
        eps = det.eps(y, torch.full((len(y),), a, dtype=torch.long))
        y = ddim_move(y, eps, ab[a], ab[b])
        states.append(y)
    grads = []
    for k, t in enumerate(grid):
        if k == 0 and rule == "right":
            grads.append(None)
            continue
        grads.append(det.grad_log_healthy(states[k], torch.full((len(y),), t, dtype=torch.long), zt))
    total = torch.zeros_like(xt)
    for k in range(1, len(grid)):
        w = ab[grid[k]].rsqrt() - ab[grid[k - 1]].rsqrt()  # integral of sqrt(1-a) d sigma over the step
        g = grads[k] if rule == "right" else (grads[k] + grads[k - 1]) / 2
        total += w * g
    d = op.scale * ab[0].sqrt() * total
    passes = K + K + 1  # K UNet (encode), K classifier gradients (+ t=0 gradient with the confidence pass)
    return d[:, 0].abs().numpy(), passes


for K, power, rule in [
    (N, 1.0, "right"),
    (N, 1.0, "trap"),
    (2, 1.0, "right"),
    (2, 1.0, "trap"),
    (3, 1.0, "trap"),
    (3, 1.5, "trap"),
    (4, 1.0, "right"),
    (4, 1.0, "trap"),
    (4, 1.5, "trap"),
    (4, 2.0, "trap"),
    (5, 1.5, "trap"),
]:
    if K > N:
        continue
    t0 = time.time()
    raw, passes = linear_map(K, power, rule)
    raw = np.where(valid, raw, 0.0)
    scale = np.quantile(raw[valid], 0.5) / np.quantile(ref_raw[valid], 0.5)
    got = normalize_maps(raw, valid, op)
    r, raw_r = pearson(reference[valid], got[valid]), pearson(ref_raw[valid], raw[valid])
    agree = dice(reference >= op.threshold, got >= op.threshold)
    print(
        f"linear K={K:2d} p{power} {rule:5s} passes {passes:3d} ({ref_passes / passes:4.1f}x) r {r:.3f} "
        f"raw r {raw_r:.3f} Dice {agree:.3f} median ratio {scale:.3f} {time.time() - t0:.0f}s",
        flush=True,
    )

"""Where K = 2's error comes from: encode and decode with different step counts, on the 80 tuning-half
canvases of ../20261126-noisy-classifier/map_fidelity.py, against the paper-exact guidance map at the
shipped N = 50. python model_runs/20261126-fast-decode-limit/encode_decode_split.py (repository root)."""

import dataclasses
import time

from choice_set import choice_set, paper_exact
from pancdiff.detection import Detector, normalize_maps
from pancdiff.metrics import dice, pearson

bundle, op, x, valid, zone = choice_set()
N = op.noise_level
t0 = time.time()
_, reference, latent_exact = paper_exact(bundle, op, x, valid, zone)
print(f"reference {time.time() - t0:.0f}s", flush=True)


def run(ke, kd, power, step):
    cfg_e = dataclasses.replace(op, steps=ke, grid_power=power if ke < N else 1.0, guidance_step=step)
    lat = (
        latent_exact
        if ke == N
        else Detector(bundle, cfg_e).map_grid(x, valid, [0.0], kinds=("input",), zone=zone)["latents"]
    )
    cfg_d = dataclasses.replace(
        op, steps=kd, grid_power=power if kd < N else 1.0, guidance_step=step if kd < N else "paper"
    )
    raw = Detector(bundle, cfg_d).map_grid(x, valid, [op.scale], zone=zone, latents=lat)["anomaly"][
        ("noisy", "guidance", op.scale)
    ]
    got = normalize_maps(raw, valid, op)
    r = pearson(reference[valid], got[valid])
    agree = dice(reference >= op.threshold, got >= op.threshold)
    passes = ke + 3 * kd + 1  # encode, guided and unguided decode, classifier gradients, confidence
    print(f"enc K={ke:2d} dec K={kd:2d} p{power} {step:12s} passes {passes:3d} r {r:.3f} Dice {agree:.3f}", flush=True)


for ke, kd, p, s in [
    (2, N, 1.0, "extrapolated"),
    (N, 2, 1.0, "extrapolated"),
    (N, 2, 1.5, "extrapolated"),
    (N, 3, 1.0, "extrapolated"),
    (4, 2, 1.0, "extrapolated"),
    (3, 2, 1.0, "extrapolated"),
    (N, 2, 1.0, "integrated"),
    (N, 2, 2.0, "extrapolated"),
]:
    run(ke, kd, p, s)

# ruff: noqa: E731, E501, E401, E702, B023
# Prototype (run from the repository root); its output is prototypes/solver_exp2.txt. map_fidelity.py redoes the choice set with the library.
"""Integrated guidance weight: gradient held constant over a step, sqrt(1-a) integrated exactly."""

import dataclasses

import numpy as np
import torch
from pancdiff.ctio import read_ct
from pancdiff.demo import sample_data_dir
from pancdiff.detection import Detector, normalize_maps
from pancdiff.diffusion import ddim_encode, ddim_move
from pancdiff.metrics import dice, pearson
from pancdiff.pancreas import pancreas_mask
from pancdiff.preprocess import extract_slices, pancreas_zones
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
b = load_bundle(None, "cpu")
cfg = b.operating_point
N, S = cfg.noise_level, cfg.scale
sample = sample_data_dir()
ct = read_ct(sample / "example_ct_sm.nii.gz")
mask = pancreas_mask(ct, sample / "pancreas.nii.gz")
batch = extract_slices(ct, mask, b.preprocess)
x, valid, zone = batch.canvases, batch.valid, pancreas_zones(mask, batch, b.preprocess)
det = Detector(b, dataclasses.replace(cfg, steps=N))
xb = torch.from_numpy(x)[:, None]
zb = torch.from_numpy(zone)[:, None]
ab = det.alpha_bar
tt = lambda t: torch.full((len(xb),), t, dtype=torch.long)


def decode(xn, grid, scale, weight, grad_at="from"):
    x_ = xn
    ts = list(reversed(grid))
    for tf, tto in zip(ts[:-1], ts[1:]):
        af, at = ab[tf], ab[tto]
        eps = det.eps(x_, tt(tf))
        if scale > 0:
            g = det.grad_log_healthy(x_, tt(tf), zb)
            if weight == "paper":
                w = (1 - af).sqrt()
            else:
                sf, st = ((1 - af) / af).sqrt(), ((1 - at) / at).sqrt()
                w = (1 / af.sqrt() - 1 / at.sqrt()) / (sf - st)
            eps = eps - scale * w * g
        x_ = ddim_move(x_, eps, af, at)
    return x_


def gmap(grid, weight, xn=None):
    if xn is None:
        xn = ddim_encode(xb, det.eps, grid, ab, "ddim")
    u = decode(xn, grid, 0.0, weight)
    g = decode(xn, grid, S, weight)
    raw = (u - g).abs()[:, 0].numpy()
    return normalize_maps(np.where(valid, raw, 0), valid, cfg)


ref = np.load("/work/runs/s4/ref_map.npy")


def report(name, m, evals):
    print(
        f"{name:44s} evals {evals:3d} ({401 / evals:5.1f}x) r {pearson(ref[valid], m[valid]):.3f} dice {dice(ref >= cfg.threshold, m >= cfg.threshold):.3f}",
        flush=True,
    )


uni = lambda K: [round(k * N / K) for k in range(K + 1)]
powgrid = lambda K, p: sorted({round(N * (k / K) ** p) for k in range(K + 1)})
# check: paper weight with this decode at uniform K=5 must equal the shipped 0.831
report("paper uniform K=5", gmap(uni(5), "paper"), 21)
for K in (4, 5):
    for p in (1.0, 1.5, 2.0, 2.5):
        g = powgrid(K, p)
        report(f"integrated K={K} pow{p} {g}", gmap(g, "integrated"), 4 * K + 1)
report("integrated ref grid K=100", gmap(uni(N), "integrated"), 401)

# ruff: noqa: E731, E501, E401, E702, B023
# Prototype (run from the repository root); its output is prototypes/solver_exp.txt. map_fidelity.py redoes the choice set with the library.
"""Map fidelity experiment: guidance-difference map at few passes vs the paper-exact run."""

import dataclasses
import sys
import time

import numpy as np
import torch
from pancdiff.ctio import read_ct
from pancdiff.demo import sample_data_dir
from pancdiff.detection import Detector, normalize_maps
from pancdiff.diffusion import ddim_decode, ddim_encode
from pancdiff.metrics import dice, pearson
from pancdiff.pancreas import pancreas_mask
from pancdiff.preprocess import extract_slices, pancreas_zones
from pancdiff.weights import load_bundle

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
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
grad = lambda xx, t: det.grad_log_healthy(xx, t, zb)


def gmap(enc_grid, dec_grid, solver="ddim", xn=None):
    if xn is None:
        xn = ddim_encode(xb, det.eps, enc_grid, det.alpha_bar, solver)
    u = ddim_decode(xn, det.eps, dec_grid, det.alpha_bar, None, 0.0, "noisy", solver)
    g = ddim_decode(xn, det.eps, dec_grid, det.alpha_bar, grad, S, "noisy", solver)
    raw = np.abs(u - g)[:, 0].numpy()
    return normalize_maps(np.where(valid, raw, 0), valid, cfg), xn


uni = lambda K: [round(k * N / K) for k in range(K + 1)]


def powgrid(K, p):
    g = sorted({round(N * (k / K) ** p) for k in range(K + 1)})
    return g


t0 = time.time()
ref, xn_ref = gmap(uni(N), uni(N))
print("ref", round(time.time() - t0), "s", flush=True)
np.save("/work/runs/s4/ref_map.npy", ref)


def report(name, m, evals):
    print(
        f"{name:40s} evals {evals:3d} ({401 / evals:5.1f}x) r {pearson(ref[valid], m[valid]):.3f} dice {dice(ref >= cfg.threshold, m >= cfg.threshold):.3f}",
        flush=True,
    )


variants = []
for K in (4, 5, 6):
    variants.append((f"uniform K={K}", uni(K), uni(K)))
for ke, kd in ((1, 6), (2, 6), (2, 5), (3, 5)):
    variants.append((f"enc {ke} dec {kd}", uni(ke), uni(kd)))
for p in (1.5, 2.0):
    for K in (5, 6):
        variants.append((f"pow{p} K={K}", powgrid(K, p), powgrid(K, p)))
        variants.append((f"enc2 dec pow{p} K={K}", uni(2), powgrid(K, p)))
for name, eg, dg in variants:
    m, _ = gmap(eg, dg)
    report(name + f" {dg}", m, (len(eg) - 1) + 3 * (len(dg) - 1) + 1)
# decoding error alone: reference latent, few-step decode
for K in (5, 6):
    m, _ = gmap(None, uni(K), xn=xn_ref)
    report(f"ref latent, dec {K}", m, 3 * K + 1)
    m, _ = gmap(None, powgrid(K, 2.0), xn=xn_ref)
    report(f"ref latent, dec pow2 {K}", m, 3 * K + 1)

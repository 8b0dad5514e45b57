# ruff: noqa: E731, E501, E401, E702, B023
# Prototype (run from the repository root); its output is prototypes/solver_exp3.txt. map_fidelity.py redoes the choice set with the library.
"""Map fidelity on tuning-half canvases (the choice set): few-pass variants vs the paper-exact run."""

import dataclasses
import json
import time

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, normalize_maps
from pancdiff.diffusion import ddim_encode, ddim_move
from pancdiff.evaluate import build_eval_set
from pancdiff.metrics import dice, pearson
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
b = load_bundle(None, "cpu")
cfg = b.operating_point
N, S = cfg.noise_level, cfg.scale
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, _ = tuning_test_halves(split["val_cases"])
data = build_eval_set("../shared/data/pancreas-tc", b, set(tune), 0.8, seed=11)
rng = np.random.default_rng(5)
parts = []
for kind in ("simulated", "real"):
    les = data.lesions[kind]
    idx = rng.choice(len(les.x), 40, replace=False)
    parts.append((les.x[idx], les.valid[idx], les.zone[idx]))
x = np.concatenate([p[0] for p in parts]).astype(np.float32)
valid = np.concatenate([p[1] for p in parts])
zone = np.concatenate([p[2] for p in parts])
det = Detector(b, dataclasses.replace(cfg, steps=N))
xb = torch.from_numpy(x)[:, None]
zb = torch.from_numpy(zone)[:, None]
ab = det.alpha_bar
tt = lambda t: torch.full((len(xb),), t, dtype=torch.long)


def decode(xn, grid, scale, weight, skip_first=False, ab2=False):
    x_ = xn
    ts = list(reversed(grid))
    g_prev, h_prev = None, None
    for i, (tf, tto) in enumerate(zip(ts[:-1], ts[1:])):
        af, at = ab[tf], ab[tto]
        eps = det.eps(x_, tt(tf))
        sf, st = ((1 - af) / af).sqrt(), ((1 - at) / at).sqrt()
        if scale > 0 and not (skip_first and i == 0):
            g = det.grad_log_healthy(x_, tt(tf), zb)
            geff = g
            if ab2 and g_prev is not None:
                geff = g + 0.5 * (sf - st) / h_prev * (g - g_prev)
            g_prev, h_prev = g, sf - st
            w = (1 - af).sqrt() if weight == "paper" else (1 / af.sqrt() - 1 / at.sqrt()) / (sf - st)
            eps = eps - scale * w * geff
        x_ = ddim_move(x_, eps, af, at)
    return x_


def gmap(grid, weight, **kw):
    xn = ddim_encode(xb, det.eps, grid, ab, "ddim")
    u = decode(xn, grid, 0.0, weight)
    g = decode(xn, grid, S, weight, **kw)
    raw = (u - g).abs()[:, 0].numpy()
    return normalize_maps(np.where(valid, raw, 0), valid, cfg)


uni = lambda K: [round(k * N / K) for k in range(K + 1)]
powgrid = lambda K, p: sorted({round(N * (k / K) ** p) for k in range(K + 1)})
t0 = time.time()
ref = gmap(uni(N), "paper")
print("ref", round(time.time() - t0), "s", len(x), "canvases", flush=True)
np.save("/work/runs/s4/ref_tune.npy", ref)


def report(name, m, evals):
    r_all = pearson(ref[valid], m[valid])
    per = [pearson(ref[i][valid[i]], m[i][valid[i]]) for i in range(len(m))]
    print(
        f"{name:48s} evals {evals:3d} ({401 / evals:5.1f}x) r {r_all:.3f} median-slice r {np.nanmedian(per):.3f} dice {dice(ref >= cfg.threshold, m >= cfg.threshold):.3f}",
        flush=True,
    )


report("paper uniform K=5", gmap(uni(5), "paper"), 21)
report("paper uniform K=10 (shipped)", gmap(uni(10), "paper"), 41)
report("paper pow1.5 K=5", gmap(powgrid(5, 1.5), "paper"), 21)
for K in (4, 5):
    for p in (1.25, 1.5, 1.75):
        g = powgrid(K, p)
        report(f"int K={K} pow{p}", gmap(g, "int"), 4 * K + 1)
        report(f"int K={K} pow{p} ab2", gmap(g, "int", ab2=True), 4 * K + 1)
        if K == 5:
            report(f"int K={K} pow{p} skip-first", gmap(g, "int", skip_first=True), 4 * K)
for K in (10,):
    for p in (1.0, 1.5):
        report(f"int K={K} pow{p}", gmap(powgrid(K, p), "int"), 4 * K + 1)

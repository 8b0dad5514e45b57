# ruff: noqa
"""Rejected idea: the guidance map linearized (no guided decode; classifier gradients on the encoding path,
weighted by the integral of sqrt(1 - a) d sigma). Stopped after its best case (K = N): r 0.807."""
import dataclasses, json, sys, time
import numpy as np, torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, evaluations_per_slice, normalize_maps
from pancdiff.diffusion import step_grid, ddim_move, _sigma
from pancdiff.evaluate import build_eval_set
from pancdiff.metrics import dice, pearson
from pancdiff.weights import load_bundle

torch.set_num_threads(1)
bundle = load_bundle(None, "cpu")
op = dataclasses.replace(bundle.operating_point, map_kind="guidance", guidance="noisy")
split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
tune, _ = tuning_test_halves(split["val_cases"])
data = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune), 0.8, seed=11)
rng = np.random.default_rng(5)
picks = [(les, rng.choice(len(les.x), 40, replace=False)) for les in (data.lesions["simulated"], data.lesions["real"])]
x = np.concatenate([les.x[i] for les, i in picks]).astype(np.float32)
valid = np.concatenate([les.valid[i] for les, i in picks])
zone = np.concatenate([les.zone[i] for les, i in picks])
N = int(sys.argv[1]) if len(sys.argv) > 1 else op.noise_level
op = op.at(N) if N != op.noise_level else op

def guidance_map(cfg):
    raw = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], zone=zone)["anomaly"][("noisy", "guidance", cfg.scale)]
    return raw

t0 = time.time()
ref_cfg = op.paper_exact()
ref_raw = guidance_map(ref_cfg)
reference = normalize_maps(ref_raw, valid, op)
print(f"reference N={N} passes {evaluations_per_slice(ref_cfg)} {time.time()-t0:.0f}s", flush=True)

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
            grads.append(None); continue
        grads.append(det.grad_log_healthy(states[k], torch.full((len(y),), t, dtype=torch.long), zt))
    total = torch.zeros_like(xt)
    for k in range(1, len(grid)):
        w = ab[grid[k]].rsqrt() - ab[grid[k - 1]].rsqrt()  # integral of sqrt(1-a) d sigma over the step
        g = grads[k] if rule == "right" else (grads[k] + grads[k - 1]) / 2
        total += w * g
    d = op.scale * ab[0].sqrt() * total
    passes = K + K + 1  # K UNet (encode), K classifier gradients (+ t=0 gradient with the confidence pass)
    return d[:, 0].abs().numpy(), passes

ref_passes = evaluations_per_slice(ref_cfg)
for K, power, rule in [(N, 1.0, "right"), (N, 1.0, "trap"), (2, 1.0, "right"), (2, 1.0, "trap"), (3, 1.0, "trap"), (3, 1.5, "trap"), (4, 1.0, "right"), (4, 1.0, "trap"), (4, 1.5, "trap"), (4, 2.0, "trap"), (5, 1.5, "trap")]:
    if K > N: continue
    t0 = time.time()
    raw, passes = linear_map(K, power, rule)
    raw = np.where(valid, raw, 0.0)
    scale = np.quantile(raw[valid], 0.5) / np.quantile(ref_raw[valid], 0.5)
    got = normalize_maps(raw, valid, op)
    raw_r = pearson(ref_raw[valid], raw[valid])
    print(f"linear K={K:2d} p{power} {rule:5s} passes {passes:3d} ({ref_passes/passes:4.1f}x) r {pearson(reference[valid], got[valid]):.3f} raw r {raw_r:.3f} "
          f"Dice {dice(reference >= op.threshold, got >= op.threshold):.3f} median ratio {scale:.3f} {time.time()-t0:.0f}s", flush=True)

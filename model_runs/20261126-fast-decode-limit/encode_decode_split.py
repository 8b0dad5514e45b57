# ruff: noqa
"""Where K = 2's error comes from: encode and decode with different step counts, on the 80 tuning-half
canvases of ../20261126-noisy-classifier/map_fidelity.py, against the paper-exact guidance map at the
shipped N = 50. python model_runs/20261126-fast-decode-limit/encode_decode_split.py (repository root)."""
import dataclasses, json, sys, time
import numpy as np, torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, evaluations_per_slice, normalize_maps
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
N = op.noise_level
t0 = time.time()
ref_cfg = op.paper_exact()
ref_grid = Detector(bundle, ref_cfg).map_grid(x, valid, [op.scale], zone=zone)
reference = normalize_maps(ref_grid["anomaly"][("noisy", "guidance", op.scale)], valid, op)
latent_exact = ref_grid["latents"]
print(f"reference {time.time()-t0:.0f}s", flush=True)
latents = {N: latent_exact}

def run(ke, kd, power, step):
    if ke not in latents:
        latents[ke] = {}
    key = (ke, power)
    cfg_e = dataclasses.replace(op, steps=ke, grid_power=power if ke < N else 1.0, guidance_step=step)
    lat = latent_exact if ke == N else Detector(bundle, cfg_e).map_grid(x, valid, [0.0], kinds=("input",), zone=zone)["latents"]
    cfg_d = dataclasses.replace(op, steps=kd, grid_power=power if kd < N else 1.0, guidance_step=step if kd < N else "paper")
    raw = Detector(bundle, cfg_d).map_grid(x, valid, [op.scale], zone=zone, latents=lat)["anomaly"][("noisy", "guidance", op.scale)]
    got = normalize_maps(raw, valid, op)
    print(f"enc K={ke:2d} dec K={kd:2d} p{power} {step:12s} passes {ke + 3*kd + 1:3d} r {pearson(reference[valid], got[valid]):.3f} "
          f"Dice {dice(reference >= op.threshold, got >= op.threshold):.3f}", flush=True)

for ke, kd, p, s in [(2, N, 1.0, "extrapolated"), (N, 2, 1.0, "extrapolated"), (N, 2, 1.5, "extrapolated"), (N, 3, 1.0, "extrapolated"),
                     (4, 2, 1.0, "extrapolated"), (3, 2, 1.0, "extrapolated"), (N, 2, 1.0, "integrated"), (N, 2, 2.0, "extrapolated")]:
    run(ke, kd, p, s)

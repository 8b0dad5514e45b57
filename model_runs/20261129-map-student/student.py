"""Train the map students of rule.md on ``generate.py``'s parts (training half only).

    python model_runs/20261129-map-student/student.py GEN_DIR OUT_DIR {A,B}

A sees (crop, saliency); B sees (crop, saliency, K = 2 guided map) and predicts a correction to it.
Maps are in units of the shipped ``map_scale`` (the calibrated heatmap's 1.0); the target is the
K = 10 guided map; loss MSE inside the support. The budget below was fixed before the first run.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from pancdiff.weights import load_bundle
from safetensors.torch import load_file, save_file

STEPS, BATCH, LR, HOLDOUT, SEED = 3000, 32, 2e-3, 0.05, 0
INPUTS = {"A": ("x", "saliency", "zone"), "B": ("x", "saliency", "zone", "map2")}


def network(kind: str) -> torch.nn.Module:
    """A small 2-D UNet (64 → 16 px, 48k weights), cheaper per pass than the diffusion UNet. (A first
    smoke run with (32, 64, 128) and 2 residual units took 1.7 s a step beside the generator: too slow.)"""
    return UNet(spatial_dims=2, in_channels=len(INPUTS[kind]), out_channels=1, channels=(16, 32, 64),
                strides=(2, 2), num_res_units=1)  # fmt: skip


def features(kind: str, arrays: dict, scale: float, weight: float) -> np.ndarray:
    """(B, C, S, S) float32 inputs: the crop, w · saliency and (B) the K = 2 map in map_scale units, the zone."""
    valid = arrays["valid"]
    chans = {
        "x": arrays["x"] * valid,
        "saliency": weight * arrays["saliency"] * valid / scale,
        "zone": arrays["zone"].astype(np.float32),
        "map2": arrays["map2"] * valid / scale,
    }
    return np.stack([chans[c] for c in INPUTS[kind]], axis=1).astype(np.float32)


def predict(net: torch.nn.Module, kind: str, feats: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) map in map_scale units, ≥ 0: B corrects its K = 2 map, A predicts the map itself."""
    out = net(feats)
    base = feats[:, INPUTS[kind].index("map2")][:, None] if "map2" in INPUTS[kind] else 0.0
    return F.softplus(out) if kind == "A" else F.relu(base + out)


def load_student(folder: Path, kind: str) -> torch.nn.Module:
    net = network(kind)
    net.load_state_dict(load_file(str(folder / f"student_{kind}.safetensors")))
    return net.eval()


def student_maps(net: torch.nn.Module, kind: str, arrays: dict, scale: float, weight: float) -> np.ndarray:
    """(B, S, S) raw guided map the student gives (raw units, 0 outside the support)."""
    feats = torch.from_numpy(features(kind, arrays, scale, weight))
    with torch.no_grad():
        out = torch.cat([predict(net, kind, feats[i : i + 256]) for i in range(0, len(feats), 256)])
    return out[:, 0].numpy() * scale * arrays["valid"]


def load_parts(gen: Path) -> dict:
    parts = [np.load(p) for p in sorted(gen.glob("part_*.npz")) if ".tmp" not in p.name]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(SEED)
    gen, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    op = load_bundle(None, "cpu").operating_point
    a = load_parts(gen)
    feats = torch.from_numpy(features(kind, a, op.map_scale, op.saliency_weight))
    target = torch.from_numpy((a["map10"] * a["valid"] / op.map_scale).astype(np.float32))[:, None]
    valid = torch.from_numpy(a["valid"])[:, None].float()
    cases = sorted(set(a["case"]))
    rng = np.random.default_rng(SEED)
    held = set(rng.choice(cases, max(1, int(HOLDOUT * len(cases))), replace=False))
    hold = np.array([c in held for c in a["case"]])
    train_idx, hold_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    print(f"student {kind}: {len(train_idx)} training canvases, {len(hold_idx)} held out ({len(held)} cases)", flush=True)
    net = network(kind)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.05)

    def loss_on(idx) -> torch.Tensor:
        pred = predict(net, kind, feats[idx])
        return ((pred - target[idx]) ** 2 * valid[idx]).sum() / valid[idx].sum()

    t0 = time.time()
    for step in range(1, STEPS + 1):
        net.train()
        loss = loss_on(torch.from_numpy(rng.choice(train_idx, BATCH, replace=False)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == STEPS:
            net.eval()
            with torch.no_grad():
                held_loss = np.mean([loss_on(torch.from_numpy(hold_idx[i : i + 256])).item()
                                     for i in range(0, len(hold_idx), 256)])  # fmt: skip
            print(f"step {step}: train {loss.item():.4f}, held-out {held_loss:.4f}, {time.time() - t0:.0f} s", flush=True)
    save_file(net.state_dict(), str(out / f"student_{kind}.safetensors"))
    (out / f"student_{kind}.json").write_text(json.dumps({"kind": kind, "inputs": INPUTS[kind], "steps": STEPS,
        "batch": BATCH, "lr": LR, "held_out_cases": sorted(held)}, indent=1) + "\n", encoding="utf-8")  # fmt: skip


if __name__ == "__main__":
    main()

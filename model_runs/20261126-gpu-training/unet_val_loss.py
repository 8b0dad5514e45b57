"""ε-prediction loss of two UNets on the tuning half, same canvases, same t and same noise.

The in-training ``val_loss`` on a GPU draws fresh noise each time, so it is too noisy to compare
runs; here every UNet sees identical (x_t, t) pairs, per band of t.
Run from the repository root: python model_runs/20261126-gpu-training/unet_val_loss.py DATA
"""

from __future__ import annotations

import sys

import torch
from pancdiff.diffusion import alpha_bar_schedule, q_sample
from pancdiff.networks import build_unet
from pancdiff.train import config_from_json, load_slice_data, validation_canvases
from pancdiff.weights import load_weights_into

UNETS = {
    "shipped (CPU, 4,250 steps)": "PancDiffSlicer/Resources/Models/unet.safetensors",
    "G-U (H200, +9,655 steps at batch 64)": "model_runs/20261126-gpu-training/gpu_unet.safetensors",
}
BANDS = [(0, 50), (50, 100), (100, 200), (200, 400), (400, 1000)]


def main(data_dir: str) -> None:
    torch.set_num_threads(1)
    cfg = config_from_json("model_runs/20261126-gpu-training/diffusion_gpu.json", init_weights="")
    x = torch.from_numpy(validation_canvases(load_slice_data(data_dir, cfg).val)["x"])[:, None]
    alpha_bar = alpha_bar_schedule(cfg.schedule).float()
    g = torch.Generator().manual_seed(0)
    draws = [(torch.randint(lo, hi, (len(x),), generator=g), torch.randn(x.shape, generator=g)) for lo, hi in BANDS]
    print(f"{len(x)} tuning canvases; mean squared ε error by t band (same t and noise for every UNet)")
    print("| UNet | " + " | ".join(f"t {lo}-{hi}" for lo, hi in BANDS) + " |")
    print("|---|" + "---|" * len(BANDS))
    for name, path in UNETS.items():
        unet = build_unet(cfg.network)
        load_weights_into(unet, path)
        unet.eval()
        cells = []
        with torch.no_grad():
            for t, noise in draws:
                err = []
                for i in range(0, len(x), 64):
                    b = slice(i, i + 64)
                    err.append(torch.mean((noise[b] - unet(q_sample(x[b], t[b], noise[b], alpha_bar), t[b])) ** 2))
                cells.append(f"{float(torch.stack(err).mean()):.5f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])

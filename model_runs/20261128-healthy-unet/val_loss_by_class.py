"""ε-prediction error of the shipped UNet and of U on the tuning half, by class and band of t.

Every UNet sees identical (x_t, t) pairs. A healthy-only UNet should fit healthy crops as well as
the shipped one and tumor crops worse: that gap is what it cannot draw.
Run from the repository root: python model_runs/20261128-healthy-unet/val_loss_by_class.py DATA U_WEIGHTS
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from pancdiff.diffusion import alpha_bar_schedule, q_sample
from pancdiff.networks import build_unet
from pancdiff.train import config_from_json, load_slice_data, validation_canvases
from pancdiff.weights import load_weights_into

BANDS = [(0, 50), (50, 100), (100, 200), (200, 400)]


@torch.no_grad()
def errors(unet, x, draws, alpha_bar) -> np.ndarray:
    """(bands, B) mean squared ε error per canvas."""
    out = []
    for t, noise in draws:
        per = []
        for i in range(0, len(x), 64):
            b = slice(i, i + 64)
            per.append(((noise[b] - unet(q_sample(x[b], t[b], noise[b], alpha_bar), t[b])) ** 2).mean((1, 2, 3)))
        out.append(torch.cat(per).numpy())
    return np.asarray(out)


def main(data_dir: str, u_weights: str) -> None:
    torch.set_num_threads(2)
    cfg = config_from_json("model_runs/20261128-healthy-unet/u_config.json")
    alpha_bar = alpha_bar_schedule(cfg.schedule).float()
    val = validation_canvases(load_slice_data(data_dir, cfg).val)
    x, tumor = torch.from_numpy(val["x"])[:, None], np.asarray(val["y"]).astype(bool)
    g = torch.Generator().manual_seed(0)
    draws = [(torch.randint(lo, hi, (len(x),), generator=g), torch.randn(x.shape, generator=g)) for lo, hi in BANDS]
    print(f"{len(x)} tuning canvases ({tumor.sum()} tumor); mean squared ε error by t band, same t and noise")
    print("| UNet | class | " + " | ".join(f"t {lo}-{hi}" for lo, hi in BANDS) + " |")
    print("|---|---|" + "---|" * len(BANDS))
    unets = {"shipped": "PancDiffSlicer/Resources/Models/unet.safetensors", "U (healthy only)": u_weights}
    for name, path in unets.items():
        unet = build_unet(cfg.network)
        load_weights_into(unet, path)
        err = errors(unet.eval(), x, draws, alpha_bar)
        for label, rows in (("healthy", ~tumor), ("tumor", tumor)):
            print(f"| {name} | {label} | " + " | ".join(f"{v:.5f}" for v in err[:, rows].mean(1)) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])

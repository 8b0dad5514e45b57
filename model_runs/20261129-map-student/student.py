"""Train the map students of rule.md on ``generate.py``'s parts (training half only).

    python model_runs/20261129-map-student/student.py GEN_DIR OUT_DIR {A,B}

A sees (crop, saliency); B sees (crop, saliency, K = 2 guided map) and predicts a correction to it.
The network, inputs and output are the engine's (``pancdiff.map_student``, moved there after the run and
checked identical: ``check_moved.py``). A first smoke run with a larger UNet ((32, 64, 128), 2 residual
units) took 1.7 s a step beside the generator, so the budget's network is (16, 32, 64), 1 unit.
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
from pancdiff.map_student import StudentConfig, build_student, student_features, student_predict
from pancdiff.weights import load_bundle
from safetensors.torch import load_file, save_file

STEPS, BATCH, LR, HOLDOUT, SEED = 3000, 32, 2e-3, 0.05, 0
INPUTS = {"A": ("x", "saliency", "zone"), "B": ("x", "saliency", "zone", "map")}  # "map": the K = 2 map


def config(kind: str, op) -> StudentConfig:
    """Student ``kind`` as the engine holds it, at the shipped setting ``op`` (K = 2 in place of op's K)."""
    return StudentConfig(
        inputs=INPUTS[kind],
        steps=2,
        replaces_steps=op.steps,
        scale=op.scale,
        noise_level=op.noise_level,
        guidance=op.guidance,
        map_kind=op.map_kind,
        saliency_weight=op.saliency_weight,
        unit=op.map_scale,
        teacher_steps=10,
    )


def load_student(folder: Path, kind: str, op) -> torch.nn.Module:
    net = build_student(config(kind, op))
    net.load_state_dict(load_file(str(folder / f"student_{kind}.safetensors")))
    return net.eval()


def load_parts(gen: Path) -> dict:
    parts = [np.load(p) for p in sorted(gen.glob("part_*.npz")) if ".tmp" not in p.name]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
    return {**out, "map": out["map2"]}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(SEED)
    gen, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    op = load_bundle(None, "cpu").operating_point
    a = load_parts(gen)
    cfg = config(kind, op)
    feats = torch.from_numpy(student_features(cfg, a))
    target = torch.from_numpy((a["map10"] * a["valid"] / op.map_scale).astype(np.float32))[:, None]
    valid = torch.from_numpy(a["valid"])[:, None].float()
    cases = sorted(set(a["case"]))
    rng = np.random.default_rng(SEED)
    held = set(rng.choice(cases, max(1, int(HOLDOUT * len(cases))), replace=False))
    hold = np.array([c in held for c in a["case"]])
    train_idx, hold_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    print(
        f"student {kind}: {len(train_idx)} training canvases, {len(hold_idx)} held out ({len(held)} cases)", flush=True
    )
    net = build_student(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.05)

    def loss_on(idx) -> torch.Tensor:
        pred = student_predict(net, cfg, feats[idx])
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
                held_loss = np.mean(
                    [loss_on(torch.from_numpy(hold_idx[i : i + 256])).item() for i in range(0, len(hold_idx), 256)]
                )
            print(
                f"step {step}: train {loss.item():.4f}, held-out {held_loss:.4f}, {time.time() - t0:.0f} s", flush=True
            )
    save_file(net.state_dict(), str(out / f"student_{kind}.safetensors"))
    (out / f"student_{kind}.json").write_text(
        json.dumps(
            {
                "kind": kind,
                "inputs": INPUTS[kind],
                "steps": STEPS,
                "batch": BATCH,
                "lr": LR,
                "held_out_cases": sorted(held),
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()

"""Train the lesion heads of rule.md on the training half (simulated lesions only).

    python model_runs/20261130-lesion-head/head.py GEN21_DIR MORE_DIR OUT_DIR {D,P}

GEN21_DIR: the map student's parts (seed 21; their lesion masks are rebuilt here by the same
``build_eval_set`` call and checked canvas for canvas); MORE_DIR: ``gen_more.py``'s parts. MSD tumor
slices are dropped. D reads student B's inputs (crop, w·saliency, zone, K = 2 map); P reads (crop, zone).
Output: a lesion logit per pixel; loss BCE inside the support + soft Dice over the batch. The budget
below was fixed before the first run.
"""

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pancdiff.evaluate import build_eval_set
from pancdiff.map_student import StudentConfig, build_student, student_features
from pancdiff.weights import load_bundle
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gen_more import DATA  # noqa: E402

# By file, not by sys.path: the map student's folder has a judge.py of its own, which must not shadow this one's.
_spec = importlib.util.spec_from_file_location("map_student_study", HERE.parent / "20261129-map-student" / "student.py")
_student_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_student_study)

STEPS, BATCH, LR, HOLDOUT, SEED = int(os.environ.get("HEAD_STEPS", "4000")), 32, 2e-3, 0.05, 0  # env: smoke runs only
INPUTS = {"D": ("x", "saliency", "zone", "map"), "P": ("x", "zone")}


def training_unit(bundle) -> float:
    """The unit the heads read their maps in: the ``-student`` bundle's ``map_scale``, which a bundle with a
    lesion head keeps as its head's unit (its own ``map_scale`` is then the combined map's)."""
    return bundle.head_config.unit if bundle.head_config is not None else bundle.operating_point.map_scale


def config(kind: str, op, unit: float | None = None) -> StudentConfig:
    """Head ``kind`` in the student's config (its setting: the shipped S, N, w; K = 2 map): student B's
    config with the head's inputs and unit, and no teacher."""
    return dataclasses.replace(
        _student_study.config("B", op),
        inputs=INPUTS[kind],
        unit=op.map_scale if unit is None else unit,
        teacher_steps=0,
    )


def load_head(folder: Path, kind: str, op, unit: float | None = None) -> torch.nn.Module:
    net = build_student(config(kind, op, unit))
    net.load_state_dict(load_file(str(folder / f"head_{kind}.safetensors")))
    return net.eval()


def head_map(
    net: torch.nn.Module, kind: str, op, arrays: dict, batch: int = 256, unit: float | None = None
) -> np.ndarray:
    """(B, S, S) lesion probability, 0 outside the support."""
    feats = torch.from_numpy(student_features(config(kind, op, unit), arrays))
    with torch.no_grad():
        logit = torch.cat([net(feats[i : i + batch]) for i in range(0, len(feats), batch)])
    return (torch.sigmoid(logit[:, 0]).numpy() * arrays["valid"]).astype(np.float32)


def seed21(gen: Path, bundle) -> dict:
    """The map student's canvases with their lesion masks; NIH healthy slices and lesion copies only."""
    parts = [np.load(p) for p in sorted(gen.glob("part_*.npz")) if ".tmp" not in p.name]
    a = {k: np.concatenate([p[k] for p in parts]) for k in ("x", "valid", "zone", "case", "group", "saliency", "map2")}
    data = build_eval_set(DATA, bundle, set(bundle.card["split"]["train_cases"]), 0.8, seed=21)
    sim = data.lesions["simulated"]
    if not (np.array_equal(a["x"], np.concatenate([data.x, sim.x]).astype(np.float32))):
        raise SystemExit("seed 21 canvases differ from the map student's parts")
    keep = np.concatenate([data.healthy, np.ones(len(sim.x), bool)])
    mask = np.concatenate([np.zeros_like(data.valid), sim.mask])
    return {**{k: v[keep] for k, v in a.items() if k != "group"}, "mask": mask[keep]}


def load_all(gen: Path, more: Path, bundle) -> dict:
    sets = [seed21(gen, bundle)]
    names = sorted(p for p in more.glob("seed*_part_*.npz") if ".tmp" not in p.name)
    keys = ("x", "valid", "zone", "case", "saliency", "map2", "mask")
    sets += [{k: np.load(p)[k] for k in keys} for p in names]
    out = {k: np.concatenate([s[k] for s in sets]) for k in keys}
    return {**out, "map": out["map2"]}


def augment(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    t = torch.rot90(t, k, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if flip else t


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(SEED)
    gen, more, out, kind = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(None, "cpu")
    a = load_all(gen, more, bundle)
    cfg = config(kind, bundle.operating_point, training_unit(bundle))
    feats = torch.from_numpy(student_features(cfg, a))
    target = torch.from_numpy(a["mask"].astype(np.float32))[:, None]
    valid = torch.from_numpy(a["valid"])[:, None].float()
    cases = sorted(set(a["case"]))
    rng = np.random.default_rng(SEED)
    held = set(rng.choice(cases, max(1, int(HOLDOUT * len(cases))), replace=False))
    hold = np.array([c in held for c in a["case"]])
    train_idx, hold_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    n_les = int(a["mask"].any((1, 2)).sum())
    print(f"head {kind}: {len(a['x'])} canvases ({n_les} with a lesion), {len(train_idx)} training", flush=True)
    net = build_student(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.05)

    def loss_on(f, y, v) -> torch.Tensor:
        logit = net(f)
        bce = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * v).sum() / v.sum()
        p = torch.sigmoid(logit) * v
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        return bce + dice

    t0 = time.time()
    for step in range(1, STEPS + 1):
        net.train()
        idx = torch.from_numpy(rng.choice(train_idx, BATCH, replace=False))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        loss = loss_on(*(augment(t[idx], k, flip) for t in (feats, target, valid)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == STEPS:
            net.eval()
            with torch.no_grad():
                held_loss = np.mean(
                    [
                        loss_on(*(t[hold_idx[i : i + 256]] for t in (feats, target, valid))).item()
                        for i in range(0, len(hold_idx), 256)
                    ]
                )
            print(
                f"step {step}: train {loss.item():.4f}, held-out {held_loss:.4f}, {time.time() - t0:.0f} s", flush=True
            )
    save_file(net.state_dict(), str(out / f"head_{kind}.safetensors"))
    record = {"kind": kind, "inputs": INPUTS[kind], "steps": STEPS, "batch": BATCH, "lr": LR, "canvases": len(a["x"])}
    record["lesion_canvases"], record["held_out_cases"] = n_les, sorted(held)
    (out / f"head_{kind}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Teacher and student inputs for the map student (rule.md), training half only.

    python model_runs/20261129-map-student/generate.py OUT_DIR

Every training-half slice and its simulated-lesion copies (``build_eval_set``, seed 21), in parts of
128 canvases: the crop, its support and zone, the confidence pass's saliency, the raw guidance map
at K = 2 (student B's input) and at K = 10 (the teacher), at the shipped S and N.
"""

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pancdiff.detection import Detector
from pancdiff.evaluate import build_eval_set
from pancdiff.weights import load_bundle

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pancreas-tc"
PART = 128
TEACHER_STEPS, INPUT_STEPS = 10, 2


def training_canvases(bundle) -> dict:
    """{x, valid, zone, case, group} of the training half: slices ("slice") and lesion copies ("simulated")."""
    data = build_eval_set(DATA, bundle, set(bundle.card["split"]["train_cases"]), 0.8, seed=21)
    sim = data.lesions["simulated"]
    return {
        "x": np.concatenate([data.x, sim.x]).astype(np.float32),
        "valid": np.concatenate([data.valid, sim.valid]),
        "zone": np.concatenate([data.zone, sim.zone]),
        "case": np.array(list(data.cases) + list(sim.cases)),
        "group": np.array(["slice"] * len(data.x) + ["simulated"] * len(sim.x)),
    }


def maps_at(bundle, steps: int, x, valid, zone) -> dict:
    """Raw guidance map and the confidence pass's saliency at the shipped S and N with K = ``steps``."""
    cfg = dataclasses.replace(bundle.operating_point, steps=steps)
    grid = Detector(bundle, cfg).map_grid(x, valid, [cfg.scale], with_probability=True, zone=zone)
    return {
        "map": grid["anomaly"][(cfg.guidance, cfg.map_kind, float(cfg.scale))],
        "saliency": grid["saliency"],
        "p": grid["p"],
    }


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(None, "cpu")
    c = training_canvases(bundle)
    print(
        f"{len(c['x'])} canvases ({(c['group'] == 'simulated').sum()} simulated), {len(set(c['case']))} cases",
        flush=True,
    )
    starts = list(range(0, len(c["x"]), PART))
    for start in reversed(starts) if os.environ.get("REVERSE") else starts:  # a second process from the end
        path = out / f"part_{start // PART:03d}.npz"
        if path.exists():
            continue
        sl = slice(start, start + PART)
        t0 = time.time()
        fast = maps_at(bundle, INPUT_STEPS, c["x"][sl], c["valid"][sl], c["zone"][sl])
        teacher = maps_at(bundle, TEACHER_STEPS, c["x"][sl], c["valid"][sl], c["zone"][sl])
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            x=c["x"][sl],
            valid=c["valid"][sl],
            zone=c["zone"][sl],
            case=c["case"][sl],
            group=c["group"][sl],
            saliency=fast["saliency"],
            p=fast["p"],
            map2=fast["map"],
            map10=teacher["map"],
        )
        tmp.rename(path)
        print(f"{path.name}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

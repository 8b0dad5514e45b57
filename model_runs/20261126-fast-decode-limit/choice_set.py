"""The fidelity choice set of ../20261126-noisy-classifier/map_fidelity.py (80 tuning-half canvases:
40 simulated lesions, 40 real tumors; build_eval_set seed 11, subsample seed 5) and its paper-exact
guidance map, shared by this record's scripts."""

import dataclasses
import json

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.detection import Detector, normalize_maps
from pancdiff.evaluate import build_eval_set
from pancdiff.weights import load_bundle


def choice_set():
    """(bundle, shipped operating point as a noisy guidance map, x, valid, zone)."""
    torch.set_num_threads(1)
    bundle = load_bundle(None, "cpu")
    op = dataclasses.replace(bundle.operating_point, map_kind="guidance", guidance="noisy")
    split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
    tune, _ = tuning_test_halves(split["val_cases"])
    data = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune), 0.8, seed=11)
    rng = np.random.default_rng(5)
    sets = (data.lesions["simulated"], data.lesions["real"])
    picks = [(les, rng.choice(len(les.x), 40, replace=False)) for les in sets]
    x = np.concatenate([les.x[i] for les, i in picks]).astype(np.float32)
    valid = np.concatenate([les.valid[i] for les, i in picks])
    zone = np.concatenate([les.zone[i] for les, i in picks])
    return bundle, op, x, valid, zone


def paper_exact(bundle, op, x, valid, zone):
    """(raw guidance map, normalized map, latents) of the K = N run at ``op``'s N."""
    cfg = op.paper_exact()
    grid = Detector(bundle, cfg).map_grid(x, valid, [op.scale], zone=zone)
    raw = grid["anomaly"][("noisy", "guidance", op.scale)]
    return raw, normalize_maps(raw, valid, op), grid["latents"]

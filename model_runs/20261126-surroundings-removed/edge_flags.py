"""Where do healthy flags sit, at the zone's edge or inside it? Tuning half, each bundle at its own
tuning-chosen point; described after the rule decided (nothing is chosen on it).

    python model_runs/20261126-surroundings-removed/edge_flags.py /work/runs/s7/r_diffusion /work/runs/s7/r_classifier
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.config import DetectConfig
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import build_eval_set, fp_fraction, raw_map_grid, zone_maps
from pancdiff.networks import NoisyClassifier, build_unet
from pancdiff.weights import ModelBundle, load_bundle, load_weights_into
from scipy import ndimage

EDGE_PX = 2
HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("release_models", HERE.parents[1] / "scripts" / "release_models.py")
RELEASE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RELEASE)  # its load_run reads a training run folder as the release does


def run_bundle(diffusion: Path, classifier: Path) -> ModelBundle:
    """The pair as the release builds it (UNet and classifier share network and preprocessing)."""
    _, d_cfg, _ = RELEASE.load_run(diffusion)
    _, c_cfg, _ = RELEASE.load_run(classifier)
    unet, clf = build_unet(d_cfg.network), NoisyClassifier(c_cfg.network)
    load_weights_into(unet, diffusion / "diffusion.safetensors")
    load_weights_into(clf, classifier / "classifier.safetensors")
    return ModelBundle(unet.eval(), clf.eval(), c_cfg.network, c_cfg.schedule, c_cfg.preprocess, DetectConfig(), "R")


def chosen_point(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(text[: text.index("\n}\n") + 2])["chosen"]


def edge_share(bundle: ModelBundle, op: DetectConfig, tune_cases) -> tuple[float, float, float]:
    """(healthy FP, share of flagged pixels within EDGE_PX of the zone's edge, share of zone pixels there)."""
    data = build_eval_set("../shared/data/pancreas-tc", bundle, set(tune_cases), 0.8, seed=11)
    h = data.healthy
    x, valid, zone = data.x[h], data.valid[h], data.zone[h]
    raw = raw_map_grid(bundle, op, x, valid, (op.scale,), (op.guidance,), zone=zone)[
        (op.guidance, op.map_kind, op.scale)
    ]
    flagged = (zone_maps(raw, zone, op) >= op.threshold) & zone
    edge = np.stack([z & ~ndimage.binary_erosion(z, iterations=EDGE_PX) for z in zone])
    fp = fp_fraction(flagged.astype(np.float32), zone, 0.5)
    return fp, float((flagged & edge).sum() / max(1, flagged.sum())), float(edge.sum() / zone.sum())


def main() -> None:
    torch.set_num_threads(2)
    split = json.loads((Path(sys.argv[2]) / "split.json").read_text(encoding="utf-8"))
    tune_cases, _ = tuning_test_halves(split["val_cases"])
    shipped = load_bundle(None, "cpu")
    r = run_bundle(Path(sys.argv[1]), Path(sys.argv[2]))
    c = chosen_point(HERE / "r_tuning_output.txt")
    r_op = dataclasses.replace(
        shipped.operating_point, **{k: c[k] for k in ("guidance", "map_kind", "scale", "noise_level", "normalization",
                                                      "map_scale", "min_anomaly", "threshold")}
    )  # fmt: skip
    print(f"healthy tuning slices; edge = zone pixels within {EDGE_PX} px of the zone's border")
    print("| bundle | threshold | healthy FP | flagged pixels at the edge | zone pixels at the edge |")
    print("|---|---|---|---|---|")
    for name, bundle, op in (("shipped (kept)", shipped, shipped.operating_point), ("R pair (removed)", r, r_op)):
        fp, at_edge, edge_area = edge_share(bundle, op, tune_cases)
        print(f"| {name} | {op.threshold:g} | {fp:.4f} | {at_edge:.3f} | {edge_area:.3f} |")


if __name__ == "__main__":
    main()

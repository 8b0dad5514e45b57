"""Judge head L by rule.md on the tuning half (test half untouched).

    python model_runs/20261130-large-lesion-head/judge_large.py L_DIR   # → stdout, judge_large.json

L_DIR: ``head.py``'s output for L (head_D.safetensors: L is trained by D's recipe). The control is the
shipped lesion head (the bundle's own weights), combined the same way.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.evaluate import best_allowed, build_eval_set, calibrate_map_scale, choose_smoothing, zone_maps
from pancdiff.map_student import student_map
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261130-lesion-head"))
from gen_more import DATA  # noqa: E402
from head import head_map, load_head, training_unit  # noqa: E402
from judge import MAX_FP, SIGMAS, inputs  # noqa: E402

CONTROL_DICE, CONTROL_REAL, BAR = 0.543, 0.495, 0.02


def parts(bundle, heads: dict, x, valid, zone) -> dict:
    """{"guided": max(student map, w saliency), head name: probability} of one set of canvases."""
    op, unit = bundle.operating_point, training_unit(bundle)
    a = inputs(bundle, x, valid, zone)
    guided = np.maximum(student_map(bundle.student, bundle.student_config, a),
                        np.where(a["valid"], op.saliency_weight * a["saliency"], 0.0)).astype(np.float32)  # fmt: skip
    return {"guided": guided, **{k: head_map(net, "D", op, a, unit=unit) for k, net in heads.items()}}


def recall_precision(raw: np.ndarray, les, cfg) -> tuple[float, float]:
    cand = zone_maps(raw, les.zone, cfg) >= cfg.threshold
    inter = (cand & les.mask).sum()
    return float(inter / les.mask.sum()), float(inter / max(cand.sum(), 1))


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_bundle(None, "cpu")
    op = bundle.operating_point
    shipped = bundle.head.eval()
    heads = {"D (shipped head, control)": shipped, "L": load_head(Path(sys.argv[1]), "D", op)}
    tune = build_eval_set(DATA, bundle, set(tuning_test_halves(bundle.card["split"]["val_cases"])[0]), 0.8, seed=11)
    h = tune.healthy
    sets = {name: (les.x, les.valid, les.zone) for name, les in tune.lesions.items()}
    sets["healthy"] = (tune.x[h], tune.valid[h], tune.zone[h])
    by_set = {name: parts(bundle, heads, *arr) for name, arr in sets.items()}
    units = {k: calibrate_map_scale(by_set["healthy"][k], tune.zone[h], 1.0) for k in by_set["healthy"]}
    print(f"bundle {bundle.model_id}; tuning half; units (1 px, tuning healthy): {units}")
    print("| candidate | objective | real Dice | simulated Dice | real AUPRC | healthy FP | real recall / precision "
          "| threshold | px |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    record = {}
    for name in heads:
        raw = {s: ((m["guided"] / units["guided"] + m[name] / units[name]) / 2).astype(np.float32)
               for s, m in by_set.items()}  # fmt: skip
        chosen, rows = choose_smoothing(raw, tune, op, SIGMAS, MAX_FP)
        row = rows[best_allowed(rows, MAX_FP)]
        recall, precision = recall_precision(raw["real"], tune.lesions["real"], chosen)
        keys = ("dice", "dice_real", "dice_simulated", "auprc_real", "fp_fraction", "threshold", "smooth_sigma_px")
        r = record[name] = {**{k: row[k] for k in keys}, "recall_real": recall, "precision_real": precision}
        print(
            f"| mean(guided, {name}) | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} "
            f"| {r['auprc_real']:.3f} | {r['fp_fraction']:.3f} | {recall:.3f} / {precision:.3f} | {r['threshold']:.2f} "
            f"| {r['smooth_sigma_px']:g} |",
            flush=True,
        )
    got = record["L"]
    taken = got["dice"] >= CONTROL_DICE + BAR and got["dice_real"] >= CONTROL_REAL
    print(f"\ntaken by the rule: {'L' if taken else None}")
    out = {"units": units, "record": record, "taken": "L" if taken else None}
    (HERE / "judge_large.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Hysteresis candidates on the shipped head map (rule.md's addendum), tuning half only.

    python model_runs/20261201-intensity-guided-map/hysteresis.py CACHE.npz   # → stdout (hysteresis.txt)

The release's rule (smoothing 1 or 2 px, normalization, floor, threshold; healthy FP <= 0.02) with the
candidates grown by ``../20261126-candidate-growth``'s ``grow`` (pixels at >= rho * T 8-connected to a
pixel at >= T), each threshold scored by ``../20261126-component-filter``'s ``rows_for``.
"""

import dataclasses
import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
from pancdiff.evaluate import MIN_ANOMALIES, calibrate_map_scale, zone_maps
from pancdiff.weights import load_bundle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cache import tuning_set  # noqa: E402
from study import CONTROL  # noqa: E402


def _study(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, HERE.parent / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GROWTH = _study("20261126-candidate-growth", "grow_study")
COMPONENTS = GROWTH.STUDY  # component_study: the release's rule on candidates from a callback

RATIOS, SIGMAS, MAX_FP, BAR, SIM_SLACK = GROWTH.RATIOS, (1.0, 2.0), 0.02, 0.02, 0.01


def rows_for(ratio: float, raw: dict, tune, op) -> list[dict]:
    """Every (smoothing, normalization, floor, threshold) with candidates grown at ``ratio``."""
    h = tune.healthy
    zones = {name: les.zone for name, les in tune.lesions.items()} | {"healthy": tune.zone[h]}
    truth = {name: les.mask for name, les in tune.lesions.items()}
    rows = []
    for sigma, norm, floor in itertools.product(SIGMAS, ("slice", "calibrated"), MIN_ANOMALIES):
        scale = calibrate_map_scale(raw["healthy"], zones["healthy"], sigma)
        cfg = dataclasses.replace(op, smooth_sigma_px=sigma, normalization=norm, map_scale=scale, min_anomaly=floor)
        maps = {k: zone_maps(raw[k], zones[k], cfg) for k in zones}
        setting = {"ratio": ratio, "smooth_sigma_px": sigma, "normalization": norm, "min_anomaly": floor}
        grown = COMPONENTS.rows_for(
            {k: maps[k] for k in truth}, truth, maps["healthy"], zones["healthy"],
            lambda m, t: GROWTH.grow(m, t, ratio),
        )  # fmt: skip
        rows += [{**setting, **row} for row in grown]
    return rows


def main() -> None:
    bundle = load_bundle(None, "cpu")
    tune = tuning_set(bundle)
    cache = np.load(sys.argv[1])
    raw = {k: cache[f"{k}_raw"] for k in ("real", "simulated", "healthy")}
    print(f"bundle {bundle.model_id}; tuning half; hysteresis on the heatmap (guided + head)")
    print("| ρ | objective | real Dice | simulated Dice | healthy FP | threshold T | px | normalization |")
    print("|---|---|---|---|---|---|---|---|")
    best = {}
    for ratio in RATIOS:
        rows = rows_for(ratio, raw, tune, bundle.operating_point)
        allowed = [r for r in rows if r["fp_fraction"] <= MAX_FP]
        if not allowed:  # the healthy bound is part of the rule: no fallback to the best Dice
            low = min(rows, key=lambda r: r["fp_fraction"])
            print(f"| {ratio:g} | no setting meets healthy FP <= {MAX_FP} (lowest {low['fp_fraction']:.3f} at "
                  f"T {low['threshold']:.2f}) | | | | | | |", flush=True)  # fmt: skip
            continue
        r = best[ratio] = max(allowed, key=lambda r: r["dice"])
        print(f"| {ratio:g} | {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | "
              f"{r['fp_fraction']:.3f} | {r['threshold']:.2f} | {r['smooth_sigma_px']:g} | {r['normalization']} |",
              flush=True)  # fmt: skip
    top = max((r for r in best if r < 1), key=lambda r: best[r]["dice"])
    b = best[top]
    taken = (b["dice"] >= CONTROL["dice"] + BAR and b["dice_real"] >= CONTROL["dice_real"]
             and b["dice_simulated"] >= CONTROL["dice_simulated"] - SIM_SLACK)  # fmt: skip
    print(f"\nbest ρ < 1: {top:g}; taken by the rule: {top if taken else None}")


if __name__ == "__main__":
    main()

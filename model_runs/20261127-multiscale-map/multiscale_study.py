"""Two-scale heatmaps (rule.md) on the shipped bundle's tuning half, chosen by the release's own rule.

    python model_runs/20261127-multiscale-map/multiscale_study.py [MODEL_DIR]

Raw maps at the bundle's operating point (``setting_maps``); the control runs the unchanged release
path (``normalization_rows`` at 1 px); each candidate is combined here and handed to the same rule as
a map already smoothed (smoothing 0). One line per candidate with its best row under the healthy bound.
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from pancdiff.detection import smooth_maps
from pancdiff.evaluate import best_allowed, normalization_rows

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "20261126-map-smoothing"))
from smooth_study import tuning_maps  # noqa: E402

BROAD = (2.0, 3.0, 4.0, 6.0, 8.0)
QUANTILE = 0.995


def zone_of(data, name):
    return data.zone[data.healthy] if name == "healthy" else data.lesions[name].zone


def combine(raw: dict, data, broad: float, how: str) -> dict:
    """{set: (B, S, S)} two-scale maps in the units of the 1 px map (rule.md)."""
    zoned = {n: np.where(zone_of(data, n), m, 0.0) for n, m in raw.items()}
    smoothed = {s: {n: smooth_maps(m, s) for n, m in zoned.items()} for s in (1.0, broad)}
    healthy_zone = data.zone[data.healthy]
    c = {s: float(np.quantile(smoothed[s]["healthy"][healthy_zone], QUANTILE)) for s in smoothed}
    out = {}
    for n in raw:
        sharp, wide = smoothed[1.0][n], smoothed[broad][n] * (c[1.0] / c[broad])
        out[n] = np.maximum(sharp, wide) if how == "max" else (sharp + wide) / 2
    return out


def best_row(data, raw, cfg) -> dict:
    rows = [row for row, _ in normalization_rows(data, raw, cfg)]
    return rows[best_allowed(rows, 0.02)]


def main() -> None:
    bundle, op, data, raw = tuning_maps(sys.argv[1] if len(sys.argv) > 1 else None)
    results = [{"candidate": "control 1 px (release path)", **best_row(data, raw, op)}]
    presmoothed = dataclasses.replace(op, smooth_sigma_px=0.0)
    check = best_row(data, combine(raw, data, 1.0, "max"), presmoothed)
    results.append({"candidate": "1 px, pre-smoothed (path check)", **check})
    for how in ("max", "mean"):
        for b in BROAD:
            results.append({"candidate": f"{how}(1, {b:g})", **best_row(data, combine(raw, data, b, how), presmoothed)})
    print(f"bundle {bundle.model_id}: {op.guidance} guidance, {op.map_kind} map, S = {op.scale:g}, "
          f"N = {op.noise_level}, K = {op.steps}")  # fmt: skip
    print("| candidate | normalization | floor | threshold | objective | real Dice | simulated Dice | real AUPRC "
          "| simulated AUPRC | healthy FP |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['candidate']} | {r['normalization']} | {r['min_anomaly']:g} | {r['threshold']:.2f} "
              f"| {r['dice']:.3f} | {r['dice_real']:.3f} | {r['dice_simulated']:.3f} | {r['auprc_real']:.3f} "
              f"| {r['auprc_simulated']:.3f} | {r['fp_fraction']:.3f} |")  # fmt: skip
    passing = [r for r in results[2:] if r["dice"] >= 0.452 and r["dice_simulated"] >= 0.409]
    print(f"\ncontrol objective {results[0]['dice']:.3f} (must be 0.432); passing the rule: "
          f"{', '.join(r['candidate'] for r in passing) or 'none'}")  # fmt: skip
    (HERE / "multiscale_study.json").write_text(json.dumps({"rows": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

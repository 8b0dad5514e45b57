"""Fast detection vs. the paper-exact run, on the same slices and the same model, in one process.

Paper-exact: K = N steps (N encoding + N guided decoding passes + N classifier gradients per slice,
and N - 1 more for the guidance map's unguided decode, whose first pass the guided one shares; one
slice at a time in the reference code; we batch both runs alike so the ratio is the grid's).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .config import MAP_KINDS, DetectConfig
from .detection import Detector, evaluations_per_slice, normalize_maps
from .evaluate import raw_map_grid
from .metrics import dice, pearson
from .progress import QUIET, Reporter, StepProgress
from .weights import ModelBundle


def timed_detect(
    bundle: ModelBundle,
    cfg: DetectConfig,
    x: np.ndarray,
    valid: np.ndarray,
    reporter: Reporter = QUIET,
    label: str = "",
    zone: np.ndarray | None = None,
) -> tuple[np.ndarray, float, int, np.ndarray | None]:
    """(normalized maps, wall seconds, network passes per slice, the normalized guided part where a lesion
    head was averaged into the maps, else None) for one setting."""
    detector = Detector(bundle, cfg)
    with StepProgress(reporter, label or f"K={cfg.steps}") as progress:
        start = time.perf_counter()
        result = detector.detect(x, valid, progress, zone=zone)
        seconds = time.perf_counter() - start
    guided = normalize_maps(result.guided, valid, detector.cfg) if detector.head is not None else None
    return result.normalized, seconds, result.evaluations_per_slice, guided


def compare_maps(reference: np.ndarray, fast: np.ndarray, valid: np.ndarray, threshold: float) -> dict:
    """Pearson r inside the support and Dice of the two maps thresholded alike."""
    return {
        "map_pearson": pearson(reference[valid], fast[valid]),
        "map_dice": dice(reference >= threshold, fast >= threshold),
    }


def run_benchmark(
    bundle: ModelBundle,
    x: np.ndarray,
    valid: np.ndarray,
    fast: DetectConfig,
    sweep: tuple[int, ...] = (),
    reporter: Reporter = QUIET,
    slices_source: str = "",
    solvers: tuple[str, ...] = ("ddim",),
    by_map_kind: bool = False,
    zone: np.ndarray | None = None,
) -> dict:
    """Time the paper-exact (``DetectConfig.paper_exact``) and the fast run on the same slices; compare their maps.

    ``sweep`` adds K values (for each of ``solvers``); ``by_map_kind`` adds the agreement of both
    map kinds (the input map and the guidance-difference map) for the same settings; ``zone``
    (B, S, S) the slices' pancreas zones, for a zone-pooled classifier.
    """
    reference = fast.paper_exact()
    ref_maps, ref_s, ref_evals, _ = timed_detect(
        bundle, reference, x, valid, reporter, f"paper-exact K={reference.steps}", zone
    )
    fast_maps, fast_s, fast_evals, fast_guided = timed_detect(
        bundle, fast, x, valid, reporter, f"fast K={fast.steps}", zone
    )
    n = len(x)
    fast_detector = Detector(bundle, fast)  # what the fast run was: its device, and whether the student stood in
    result = {
        "device": str(fast_detector.device),
        "device_name": _device_name(fast.device),
        "torch_threads": torch.get_num_threads(),
        "model_id": bundle.model_id,
        "slices": n,
        "slices_source": slices_source,
        "settings": {
            "scale": fast.scale,
            "noise_level": fast.noise_level,
            "threshold": fast.threshold,
            "steps_reference": reference.steps,
            "steps_fast": fast.steps,
            "grid_power_fast": fast.grid_power,
            "guidance_step_fast": fast.guidance_step,
            "map_kind": fast.map_kind,
            "map_student": fast_detector.student is not None,
            "steps_student": fast_detector.cfg.steps,
            "lesion_head": fast_detector.head is not None,
        },
        "evals_per_slice_reference": ref_evals,
        "evals_per_slice_fast": fast_evals,
        "speedup_evals": ref_evals / fast_evals,
        "seconds_per_slice_reference": ref_s / n,
        "seconds_per_slice_fast": fast_s / n,
        "speedup_wall": ref_s / fast_s,
        **compare_maps(ref_maps, fast_maps, valid, fast.threshold),
    }
    if fast_guided is not None:  # the diffusion's part of the heatmap, without the head averaged in
        guided = compare_maps(ref_maps, fast_guided, valid, fast.threshold)
        result.update(map_pearson_guided=guided["map_pearson"], map_dice_guided=guided["map_dice"])
    if sweep:
        rows = []
        for solver in solvers:
            for steps in sweep:
                # the sweep is the solver's: K steps, never the map student
                cfg = dataclasses.replace(fast, steps=min(steps, fast.noise_level), solver=solver, map_student=False)
                maps, seconds, evals, _ = timed_detect(bundle, cfg, x, valid, reporter, f"{solver} K={cfg.steps}", zone)
                rows.append(
                    {
                        "solver": solver,
                        "steps": cfg.steps,
                        "evals_per_slice": evals,
                        "seconds_per_slice": seconds / n,
                        **compare_maps(ref_maps, maps, valid, fast.threshold),
                    }
                )
        result["sweep"] = rows
    if by_map_kind:
        result["by_map_kind"] = agreement_by_map_kind(
            bundle, fast, x, valid, sweep or (fast.steps,), solvers, reporter, zone
        )
    return result


def agreement_by_map_kind(
    bundle: ModelBundle,
    fast: DetectConfig,
    x: np.ndarray,
    valid: np.ndarray,
    steps: tuple[int, ...],
    solvers: tuple[str, ...],
    reporter: Reporter = QUIET,
    zone: np.ndarray | None = None,
) -> list[dict]:
    """Agreement with the paper-exact run for both maps, |x - x_hat| and |x_hat(S=0) - x_hat(S)|,
    from one encoding and one unguided plus one guided decode per setting (``evaluate.raw_map_grid``)."""
    def maps(cfg: DetectConfig) -> dict:
        label = f"{cfg.solver} K={cfg.steps}"
        raw = raw_map_grid(bundle, cfg, x, valid, (fast.scale,), (fast.guidance,), reporter, label, zone)
        return {kind: normalize_maps(raw[(fast.guidance, kind, float(fast.scale))], valid, cfg) for kind in MAP_KINDS}

    reference_cfg = fast.paper_exact()
    reference = maps(reference_cfg)
    rows = []
    for solver in solvers:
        for k in steps:
            cfg = dataclasses.replace(fast, steps=min(k, fast.noise_level), solver=solver)
            got = maps(cfg)
            for kind in MAP_KINDS:
                passes = evaluations_per_slice(dataclasses.replace(cfg, map_kind=kind))
                passes_ref = evaluations_per_slice(dataclasses.replace(reference_cfg, map_kind=kind))
                rows.append(
                    {
                        "map_kind": kind, "solver": solver, "steps": cfg.steps, "evals_per_slice": passes,
                        "fewer_passes": passes_ref / passes,
                        **compare_maps(reference[kind], got[kind], valid, fast.threshold),
                    }
                )  # fmt: skip
    return rows


def table(result: dict) -> str:
    """The figures as a small text table for the terminal."""
    settings = result["settings"]
    student = f" (K={settings['steps_student']} + student)" if settings.get("map_student") else ""
    student += " + lesion head" if settings.get("lesion_head") else ""
    lines = [
        f"device {result['device']} ({result['device_name']}), {result['slices']} slices, model {result['model_id']}",
        f"{'run':<30}{'passes/slice':>14}{'s/slice':>10}",
        f"{'paper-exact K=' + str(result['settings']['steps_reference']):<30}"
        f"{result['evals_per_slice_reference']:>14}{result['seconds_per_slice_reference']:>10.3f}",
        f"{'fast K=' + str(settings['steps_fast']) + student:<30}"
        f"{result['evals_per_slice_fast']:>14}{result['seconds_per_slice_fast']:>10.3f}",
        f"fast grid power {result['settings'].get('grid_power_fast', 1.0)}, "
        f"{result['settings'].get('guidance_step_fast', 'paper')} guidance step; paper-exact: even grid, Algorithm 1",
        f"speedup: {result['speedup_evals']:.1f}x fewer passes, {result['speedup_wall']:.1f}x less wall time",
        f"map agreement: Pearson r = {result['map_pearson']:.3f}, Dice = {result['map_dice']:.3f}",
    ]
    if "map_pearson_guided" in result:
        lines.append(
            f"  its diffusion part (without the lesion head): r = {result['map_pearson_guided']:.3f}, "
            f"Dice = {result['map_dice_guided']:.3f}"
        )
    for row in result.get("sweep", []):
        lines.append(
            f"  {row.get('solver', 'ddim'):<6} K={row['steps']:<4} passes {row['evals_per_slice']:>4}  "
            f"s/slice {row['seconds_per_slice']:.3f}  r {row['map_pearson']:.3f}  Dice {row['map_dice']:.3f}"
        )
    for row in result.get("by_map_kind", []):
        lines.append(
            f"  {row['map_kind']:<15} map {row['solver']:<6} K={row['steps']:<4} passes {row['evals_per_slice']:>4} "
            f"({row['fewer_passes']:.1f}x fewer)  r {row['map_pearson']:.3f}  Dice {row['map_dice']:.3f}"
        )
    return "\n".join(lines)


def write_benchmark(result: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "benchmark.json"
    path.write_text(
        json.dumps({**result, "python": platform.python_version(), "torch": torch.__version__}, indent=2) + "\n"
    )
    return path


def _device_name(device: str) -> str:
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()

"""Time the default fast detection against the paper-exact run (K = N) and compare their maps.

Both runs use the same slices (the bundled sample CT's pancreas) and the same model (bundled, or
freshly initialized with --random-weights). Writes benchmark.json and prints a table: network passes
and seconds per slice for both, the wall-clock ratio, and map agreement (Pearson r, Dice at the
default threshold). --sweep 5,10,20 adds more step counts to see the trade-off.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import GUIDANCE_STEPS
from ..errors import InputError
from ..progress import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="where benchmark.json goes")
    parser.add_argument("--model", metavar="DIR", help="model bundle (default: the bundled models)")
    parser.add_argument("--random-weights", action="store_true", help="benchmark untrained networks (timing only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--noise", type=int, help="noise level N (default: the model's operating point)")
    parser.add_argument("--steps", type=int, help="fast run's K (default: the model's operating point)")
    parser.add_argument("--grid-power", type=float, help="fast run's step grid power (default: the model's)")
    parser.add_argument(
        "--guidance-step", choices=GUIDANCE_STEPS,
        help="fast run's guidance weight per step (default: the model's)",
    )  # fmt: skip
    parser.add_argument("--slices", type=int, default=0, help="use at most this many slices (0 = all)")
    parser.add_argument("--sweep", default="", help="extra K values, e.g. 5,10,20")
    parser.add_argument("--solvers", default="ddim", help="solvers for the sweep: ddim, dpm2m or ddim,dpm2m")
    parser.add_argument(
        "--map-kinds", action="store_true", help="also the agreement of both maps (input and guidance difference)"
    )


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..benchmark import run_benchmark, table, write_benchmark
    from ..ctio import read_ct
    from ..demo import sample_data_dir
    from ..pancreas import pancreas_mask
    from ..pipeline import resolve_config
    from ..preprocess import extract_slices, pancreas_zones
    from ..weights import init_bundle, load_bundle

    bundle = init_bundle(seed=0) if args.random_weights else load_bundle(args.model, "cpu")
    cfg = resolve_config(
        bundle.operating_point, device=args.device, noise_level=args.noise or None, steps=args.steps or None,
        grid_power=args.grid_power or None, guidance_step=args.guidance_step,
    )  # fmt: skip
    sample = sample_data_dir()
    ct = read_ct(sample / "example_ct_sm.nii.gz")
    mask = pancreas_mask(ct, sample / "pancreas.nii.gz")
    batch = extract_slices(ct, mask, bundle.preprocess)
    x, valid, zone = batch.canvases, batch.valid, pancreas_zones(mask, batch, bundle.preprocess)
    if args.slices:
        x, valid, zone = x[: args.slices], valid[: args.slices], zone[: args.slices]
    sweep = tuple(int(v) for v in args.sweep.split(",") if v.strip())
    solvers = tuple(v.strip() for v in args.solvers.split(",") if v.strip())
    bad = [v for v in solvers if v not in ("ddim", "dpm2m")]
    if bad:
        raise InputError(f"--solvers: unknown solver(s) {', '.join(bad)}; choose ddim and/or dpm2m")
    result = run_benchmark(
        bundle, x, valid, cfg, sweep, reporter, "bundled sample CT (TotalSegmentator example)", solvers, args.map_kinds,
        zone,
    )  # fmt: skip
    path = write_benchmark(result, Path(args.out))
    print(table(result))
    reporter.info(f"wrote {path}")
    args.result = {"benchmark": str(path)}
    return 0

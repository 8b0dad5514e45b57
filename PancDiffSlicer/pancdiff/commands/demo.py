"""Run the whole detection path on the bundled sample CT (a real 3 mm abdominal CT with its
pancreas mask): once as is, once with a simulated hypodense lesion darkened into the pancreas at a
known spot. Writes into --out:

  comparison.png both runs side by side on the lesion's slices (same slices, same colour scale)
  as_is/         a full 'pancdiff detect' result (heatmap, candidates, slices.csv, summary, report)
  with_lesion/   the same for the CT with the lesion, plus ct_with_lesion.nii.gz and lesion.nii.gz
  demo_summary.json   the lesion, both confidences, the distance from the strongest in-pancreas
                      peak to the lesion, and whether the lesion center is a hit (with its
                      chance level)

and prints that distance. Open comparison.png first. The demo needs the bundled trained
models; --random-weights runs it with untrained networks to test the pipeline only (the maps then
mean nothing, and every output says so).
"""

from __future__ import annotations

import argparse
import sys

from ..progress import Reporter
from .detect import add_candidate_arguments, bundle_loader, overrides_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="results folder (made atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    parser.add_argument(
        "--random-weights", action="store_true",
        help="UNTRAINED networks: tests the pipeline without trained models; the maps mean nothing",
    )  # fmt: skip
    parser.add_argument("--model", metavar="DIR", help="model bundle folder (default: the bundled models)")
    g = parser.add_argument_group("simulated lesion")
    g.add_argument("--lesion-radius", type=float, default=10.0, metavar="MM", help="mean radius (default 10 mm)")
    g.add_argument(
        "--lesion-contrast", type=float, default=40.0, metavar="HU",
        help="how much darker than the pancreas the lesion core is (default 40 HU)",
    )  # fmt: skip
    g = parser.add_argument_group("another CT instead of the sample")
    g.add_argument("--ct", metavar="CT", help="CT file or DICOM folder")
    g.add_argument("--pancreas-mask", metavar="MASK", help="its pancreas mask (default: TotalSegmentator)")
    g = parser.add_argument_group("settings (default: the model's operating point)")
    g.add_argument("--scale", type=float, metavar="S", help="classifier guidance scale S")
    g.add_argument("--noise", type=int, metavar="N", help="noise level N on the 1000-step scale")
    g.add_argument("--steps", type=int, metavar="K", help="DDIM steps K <= N")
    g.add_argument("--threshold", type=float, metavar="T", help="candidate threshold on the normalized map")
    g.add_argument("--batch-size", type=int, metavar="B", help="slices per batch")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="torch device (default: auto)")
    add_candidate_arguments(parser)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..demo import headline, run_demo
    from ..errors import InputError, WeightsError
    from ..outputs import OutputDir

    if args.random_weights and args.model:
        raise InputError("--random-weights and --model exclude each other")
    if args.pancreas_mask and not args.ct:
        raise InputError("--pancreas-mask needs --ct (the sample CT brings its own mask)")
    if args.lesion_radius <= 0:
        raise InputError(f"--lesion-radius must be > 0 mm, got {args.lesion_radius:g}")
    destination = OutputDir(args.out, overwrite=args.overwrite)
    if args.random_weights and reporter.mode != "quiet":
        print("pancdiff: warning: --random-weights: untrained networks, the maps mean nothing", file=sys.stderr)
    loader = bundle_loader(args.model, args.random_weights, args.device)
    with destination as staging:
        try:
            loader()  # missing weights: exit 3 before reading anything
        except WeightsError as exc:
            if args.model:
                raise
            raise WeightsError(f"{exc}; 'pancdiff demo --random-weights' tests the pipeline without them") from None
        summary = run_demo(
            staging, loader,
            overrides=overrides_from(args),
            ct_path=args.ct, mask_path=args.pancreas_mask,
            radius_mm=args.lesion_radius, delta_hu=-abs(args.lesion_contrast),
            reporter=reporter,
        )  # fmt: skip
    args.result = {"out": str(destination.path), "demo": summary}
    if reporter.mode == "bar":
        print(headline(summary))
        print(
            f"pictures: {destination.path / 'comparison.png'} (both runs side by side), "
            f"{destination.path / 'with_lesion' / 'report.png'} and {destination.path / 'as_is' / 'report.png'}"
        )
        print(f"summary: {destination.path / 'demo_summary.json'}", flush=True)
    return 0

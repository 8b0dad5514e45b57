"""Write synthetic abdominal CT phantoms in the MSD Task07 layout (imagesTr/, labelsTr/, dataset.json).

Each case: int16 HU volume with body, fat, liver, spleen, kidneys, spine, vessels, bowel and a
lobulated pancreas; labels 1 pancreas, 2 tumor (a hypodense mass in a share of the cases). Good for
tests, tutorials and a pipeline smoke run; not for judging a model.

example:
  pancdiff phantom --out phantoms --cases 10 --tumor-fraction 0.5
"""

from __future__ import annotations

import argparse

from ..progress import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="new folder for the dataset (must not hold files)")
    parser.add_argument("--cases", type=_positive, default=10, metavar="N", help="number of volumes (default 10)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--tumor-fraction", type=_fraction, default=0.5, metavar="F",
        help="share of cases with a tumor, in [0, 1] (default 0.5)",
    )  # fmt: skip
    parser.add_argument("--size", type=_positive, default=128, metavar="PX", help="in-plane voxels (default 128)")
    parser.add_argument("--slices", type=_positive, default=24, metavar="Z", help="slices per volume (default 24)")
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0), metavar=("X", "Y", "Z"),
        help="voxel size in mm (default 1.5 1.5 3.0)",
    )  # fmt: skip


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..errors import InputError
    from ..phantom import PhantomConfig, write_phantom_dataset

    if min(args.spacing) <= 0:
        raise InputError(f"--spacing must be positive, got {args.spacing}")
    if args.size < 32 or args.slices < 4:
        raise InputError(f"phantoms need --size >= 32 and --slices >= 4, got {args.size} and {args.slices}")
    cfg = PhantomConfig(shape=(args.slices, args.size, args.size), spacing=tuple(args.spacing))
    reporter.stage("phantom", f"{args.cases} case(s) -> {args.out}")
    out = write_phantom_dataset(args.out, args.cases, args.seed, args.tumor_fraction, cfg, reporter)
    args.result = {"out": str(out), "cases": args.cases}
    reporter.info(f"wrote {args.cases} phantom case(s) to {out}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value
